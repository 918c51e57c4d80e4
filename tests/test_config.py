import pytest

from pipelines.config import ConfigError, apply_overrides, load_config
from pipelines.translation import TranslationConfig


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_overrides_are_parsed_as_yaml(tmp_path):
    cfg = load_config(TranslationConfig, write(tmp_path, "name: x\nmodel:\n  cell: gru\n"),
                      ["model.cell=lstm", "training.learning_rate=1e-3", "data.limit_train=5"])
    assert cfg.model.cell == "lstm"
    assert cfg.training.learning_rate == pytest.approx(1e-3)
    assert cfg.data.limit_train == 5


@pytest.mark.parametrize("text, message", [
    ("model:\n  celll: gru\n", r"model\.celll: unknown field"),
    ("training:\n  epochs: many\n", r"training\.epochs: expected an integer"),
    ("tokenizer:\n  model_type: wordpiece\n", r"tokenizer\.model_type: must be one of"),
    ("model:\n  source_vocab_size: 10\n", r"model\.source_vocab_size"),  # from the tokenizer
    ("data:\n  corpus: files\n", r"data\.paths\.train"),
])
def test_bad_fields_are_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TranslationConfig, write(tmp_path, text))


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["model.cell"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TranslationConfig, tmp_path / "nope.yaml")
