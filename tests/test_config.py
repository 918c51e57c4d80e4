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


def test_unknown_field_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.celll: unknown field"):
        load_config(TranslationConfig, write(tmp_path, "model:\n  celll: gru\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"training\.epochs: expected an integer"):
        load_config(TranslationConfig, write(tmp_path, "training:\n  epochs: many\n"))


def test_bad_choice_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"tokenizer\.model_type: must be one of"):
        load_config(TranslationConfig, write(tmp_path, "tokenizer:\n  model_type: wordpiece\n"))


def test_vocab_size_comes_from_tokenizer(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.source_vocab_size"):
        load_config(TranslationConfig, write(tmp_path, "model:\n  source_vocab_size: 10\n"))


def test_files_corpus_needs_paths(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.paths\.train"):
        load_config(TranslationConfig, write(tmp_path, "data:\n  corpus: files\n"))


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["model.cell"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TranslationConfig, tmp_path / "nope.yaml")
