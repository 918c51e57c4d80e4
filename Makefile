# Two entry points (see README): `make demo` and `make test`. Both create the virtual
# environment in .venv and install the project the first time (or when pyproject changes).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIPELINES_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install voices browser demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	# pyctcdecode 0.5.0 declares numpy<2, which TensorFlow 2.21 cannot use; it runs on numpy 2
	# (tests/test_an4.py decodes with it), so it is installed without its declared dependencies.
	$(BIN)/pip install --quiet --no-deps pyctcdecode==0.5.0
	$(BIN)/python -m ipykernel install --sys-prefix --name rnn-seq2seq-toolkit \
		--display-name "Python (rnn-seq2seq-toolkit)" > /dev/null
	touch $(STAMP)

# espeak-ng, the speech synthesizer behind the speech configs' `synthetic.voices` (a Debian
# and Ubuntu package): installed with apt-get when run as root (as CI does), otherwise the
# command to run is printed and the tests that need it are skipped.
voices:
	@if command -v espeak-ng > /dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
		echo "installing espeak-ng (apt-get)"; \
		{ apt-get update -qq && apt-get install -y -qq espeak-ng > /dev/null; } \
		|| echo "apt-get could not install espeak-ng; its tests are skipped"; \
	else echo "espeak-ng is not installed (synthetic voices; its tests are skipped):" \
		"sudo apt-get install espeak-ng"; fi

# Chromium and its WebDriver (Debian's chromium and chromium-driver), for the server's
# browser test: installed like espeak-ng above, else the test is skipped with the reason.
browser:
	@if command -v chromium > /dev/null && command -v chromedriver > /dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
		echo "installing chromium and chromium-driver (apt-get)"; \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver > /dev/null; } \
		|| echo "apt-get could not install chromium; the browser test is skipped"; \
	else echo "chromium is not installed (the server's browser test is skipped):" \
		"sudo apt-get install chromium chromium-driver"; fi

# The main job: train, evaluate and score the default translation model (3 epochs, about 15 minutes),
# then the default speech model (isolated digits, 25 epochs, about 4 minutes); each prints its scores.
demo: $(STAMP)
	$(BIN)/python -m pipelines.translation all --config pipelines/configs/translation_demo.yaml
	$(BIN)/python -m pipelines.speech all --config pipelines/configs/speech_demo.yaml

# The whole test suite (about 11-17 minutes on 2 CPU cores), after installing espeak-ng and
# chromium when run as root (voices, browser).
test: $(STAMP) voices browser
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
