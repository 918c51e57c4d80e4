import re
from pathlib import Path

import pytest
import yaml

from data_prep.speech_config import DigitStringConfig, FeatureConfig, SpecAugmentConfig
from models.config import CTCRecognizerConfig, Seq2SeqConfig
from pipelines.config import ConfigError, apply_overrides, load_config, load_yaml
from pipelines.speech.config import SpeechConfig
from pipelines.translation.config import TranslationConfig

CONFIGS = Path(__file__).resolve().parent.parent / "pipelines" / "configs"


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


@pytest.mark.parametrize("override, field", [
    ("model.cell=transformer", "model.cell"),
    ("model.attention=bahdanau", "model.attention"),
    ("model.dropout=1.5", "model.dropout"),
    ("model.attention_output=gated", "model.attention_output"),
    ("model.decoder_init=random", "model.decoder_init"),
    ("model.decoder_units=256", "model.attentional_dim"),
    ("model.decoder_units=0", "model.decoder_units"),
    ("decoding.beam_size=0", "decoding.beam_size"),
    ("decoding.batch_tokens=0", "decoding.batch_tokens"),
    ("training.learning_rate=-1", "training.learning_rate"),
    ("training.clip_norm=0", "training.clip_norm"),
    ("tokenizer.vocab_size=-5", "tokenizer.vocab_size"),
    ("data.limit_train=-10", "data.limit_train"),
    ("data.max_length=0", "data.max_length"),
    ("data.source_lang=xx", "data.source_lang"),
    ("data.target_lang=de", "data.target_lang"),
])
def test_out_of_range_values_are_named(tmp_path, override, field):
    with pytest.raises(ConfigError, match=rf"^{field}: must (be|differ)"):
        load_config(TranslationConfig, write(tmp_path, "name: x\n"), [override])


@pytest.mark.parametrize("overrides, message", [
    (["streaming.final=beam"], r"^streaming\.final: must be one of \['greedy', 'lm'\]"),
    (["streaming.final=lm"], r"^streaming\.final: lm needs a word language model \(a "
                             r"decoding\.lm section\)"),
])
def test_stream_final_search_is_checked(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(SpeechConfig, write(tmp_path, "name: x\n"), overrides)
    # With a language model, the stream's final transcript may be its search.
    load_config(SpeechConfig, CONFIGS / "an4_streaming.yaml", ["streaming.final=lm"])


def test_attention_choices_come_from_the_model(tmp_path):
    # The valid values are the model's own list, so a new scorer needs no config change.
    from models.attention import SCORES

    for score in SCORES:
        load_config(TranslationConfig, write(tmp_path, "name: x\n"), [f"model.attention={score}"])


def test_every_translation_config_is_valid():
    for name in ("translation_smoke", "translation_demo", "multi30k_de_en", "multi30k_en_de"):
        assert load_config(TranslationConfig, CONFIGS / f"{name}.yaml").name == name


def test_config_path_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(TranslationConfig, tmp_path)


def test_errors_are_blamed_on_their_source(tmp_path):
    path = write(tmp_path, "model:\n  dropout: 2.0\n")
    with pytest.raises(ConfigError, match=rf"^model\.dropout: .* \(from {path}\)$"):
        load_config(TranslationConfig, path)
    with pytest.raises(ConfigError, match=r"^model\.cell: .* \(from --set model\.cell=cnn\)$"):
        load_config(TranslationConfig, path, ["model.dropout=0.1", "model.cell=cnn"])
    # A check across fields names the field it checks, and the --set that changed another.
    with pytest.raises(ConfigError, match=rf"^model\.attentional_dim: .* \(from {path}, with "
                                          r"--set model\.decoder_units=256\)$"):
        load_config(TranslationConfig, path, ["model.dropout=0.1", "model.decoder_units=256"])


def test_cli_names_a_missing_config_once(tmp_path, capsys):
    from pipelines import translation

    missing = tmp_path / "nope.yaml"
    assert translation.main(["prepare", "--config", str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: config file not found\n"


def test_known_fields_leave_out_what_the_pipeline_sets(tmp_path):
    with pytest.raises(ConfigError, match="model.vocab: unknown field") as error:
        load_config(TranslationConfig, write(tmp_path, "model:\n  vocab: 5\n"))
    assert "embedding_dim" in str(error.value) and "vocab_size" not in str(error.value)


def test_base_config_is_merged_field_by_field(tmp_path):
    (tmp_path / "parent.yaml").write_text(
        "name: parent\nmodel:\n  cell: lstm\n  dropout: 0.2\ntraining:\n  epochs: 7\n")
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\nname: kid\nmodel:\n  dropout: 0.4\ntraining:\n")
    cfg = load_config(TranslationConfig, child, ["data.limit_train=9"])
    assert (cfg.name, cfg.model.cell, cfg.model.dropout, cfg.training.epochs) == (
        "kid", "lstm", 0.4, 7)
    assert cfg.data.limit_train == 9
    # Without a name of its own, a derived config is named after its file.
    child.write_text("base: parent.yaml\n")
    assert load_config(TranslationConfig, child).name == "child"


def test_shipped_en_de_benchmark_extends_de_en():
    de_en = load_config(TranslationConfig, CONFIGS / "multi30k_de_en.yaml")
    en_de = load_config(TranslationConfig, CONFIGS / "multi30k_en_de.yaml")
    assert (en_de.data.source_lang, en_de.data.target_lang) == ("en", "de")
    assert en_de.model == de_en.model and en_de.training == de_en.training


@pytest.mark.parametrize("text, message", [
    ("base: c.yaml\n", "includes itself"),
    ("base: missing.yaml\n", r"c\.yaml: base: .*missing\.yaml: config file not found"),
    ("base: [a, b]\n", "base: expected the path"),
])
def test_bad_base_is_named(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TranslationConfig, write(tmp_path, text))


@pytest.mark.parametrize("config_cls, others, own", [
    (TranslationConfig, {"batch_size": 7}, {"batch_tokens": 7, "label_smoothing": 0.2}),
    (SpeechConfig, {"batch_tokens": 7, "label_smoothing": 0.2}, {"batch_size": 7}),
])
def test_a_pipelines_training_section_has_its_own_fields_only(tmp_path, config_cls, others, own):
    import dataclasses

    from pipelines import trainer
    from pipelines.run_dir import fingerprint

    for name, value in others.items():  # another pipeline's field is refused, not ignored
        with pytest.raises(ConfigError, match=f"training.{name}: unknown field"):
            load_config(config_cls, write(tmp_path, f"training:\n  {name}: {value}\n"))
    default = load_config(config_cls, write(tmp_path, "name: x\n")).training
    for name, value in own.items():  # its own fields change what checkpoints are made of
        changed = dataclasses.replace(default, **{name: value})
        assert (fingerprint(trainer.resumable_config(changed))
                != fingerprint(trainer.resumable_config(default)))
        assert trainer.made_from(changed)[name] == value


@pytest.mark.parametrize("section, field, value", [
    (Seq2SeqConfig, "cell", "transformer"),
    (Seq2SeqConfig, "dropout", 1.5),
    (CTCRecognizerConfig, "rnn_units", 0),
    (FeatureConfig, "hop_ms", 100.0),
    (DigitStringConfig, "max_digits", 0),
    (SpecAugmentConfig, "time_mask_fraction", 2.0),
])
def test_each_config_dataclass_validates_its_own_fields(section, field, value):
    # The models and data_prep dataclasses carry their own rules, so a builder used
    # outside the pipelines gets the same errors, naming the field.
    section().validate("sec")
    with pytest.raises(ConfigError, match=rf"^sec\.{field}"):
        section(**{field: value}).validate("sec")


def _pipeline_of(path):
    """The pipeline a shipped config belongs to, from its corpus."""
    from pipelines import speech, translation
    from pipelines.translation.config import CORPORA

    corpus = (load_yaml(path).get("data") or {}).get("corpus", "multi30k")
    if corpus in CORPORA:
        return "translation", TranslationConfig, translation.STAGE_NAMES
    return "speech", SpeechConfig, speech.STAGE_NAMES


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_validates_and_names_only_real_stages(path):
    task, cls, stages = _pipeline_of(path)
    assert load_config(cls, path).name == path.stem
    # Commands in its comments name stages that exist.
    for named_task, stage in re.findall(r"python -m pipelines\.(\w+) (\w+)", path.read_text()):
        assert named_task == task and stage in (*stages, "all"), (named_task, stage)


def _leaves(data, prefix=""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("path", [p for p in sorted(CONFIGS.glob("*.yaml"))
                                  if "base" in yaml.safe_load(p.read_text())], ids=lambda p: p.stem)
def test_derived_configs_state_only_their_differences(path):
    own = yaml.safe_load(path.read_text())
    parent = dict(_leaves(load_yaml(path.parent / own.pop("base"))))
    same = [key for key, value in _leaves(own) if key != "name" and parent.get(key) == value]
    assert not same, f"{path.name} repeats its base's values: {same}"



def test_demo_and_benchmark_configs_have_no_time_budget():
    # A time budget makes the same command give different models on different machines.
    for path in CONFIGS.glob("*.yaml"):
        _, cls, _ = _pipeline_of(path)
        assert load_config(cls, path).training.max_minutes is None, path.name


def test_null_speed_perturbation_switches_it_off():
    # As null does for augment.time_stretch: one copy of the training set, at speed 1.0.

    path = CONFIGS / "librispeech_100.yaml"
    assert load_config(SpeechConfig, path).data.speed_perturbation == [0.9, 1.0, 1.1]
    off = load_config(SpeechConfig, path, ["data.speed_perturbation=null"])
    assert off == load_config(SpeechConfig, path, ["data.speed_perturbation=[1.0]"])
    assert off.data.speed_perturbation == [1.0]
    assert load_config(SpeechConfig, CONFIGS / "speech_smoke.yaml",
                       ["augment.time_stretch=null"]).augment.time_stretch is None
def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    path = write(tmp_path, "name: x\ntraining:\n  epochs: 3\nmodel:\n  cell: gru\n"
                           "training:\n  epochs: 4\n")
    with pytest.raises(ConfigError, match=rf"{path}:6: duplicate key 'training' \(first at line 2\)"):
        load_config(TranslationConfig, path)
    with pytest.raises(ConfigError, match=r"c.yaml:4: duplicate key 'cell' \(first at line 3\)"):
        load_config(TranslationConfig, write(tmp_path, "name: x\nmodel:\n  cell: gru\n  cell: lstm\n"))
    with pytest.raises(ConfigError, match=r"--set data.paths:1: duplicate key 'a'"):
        apply_overrides({}, ["data.paths={a: 1, a: 2}"])


@pytest.mark.parametrize("name", ["", " ", ".", "..", "../elsewhere", "a/b", "/tmp/x", "a\\\\b"])
def test_a_run_name_outside_runs_is_an_error(tmp_path, name):
    with pytest.raises(ConfigError, match=r"^name: must name a folder of runs/"):
        load_config(TranslationConfig, write(tmp_path, f"name: {name!r}\n"), [])


def test_a_runs_recorded_config_loads_without_the_fields_this_version_retired(tmp_path):
    # A run's config.yaml lists every field of the version that wrote it; a field since
    # retired (here speech's batch size, once in translation's training section) is
    # dropped when the record is read, and still refused in an experiment config.
    path = write(tmp_path, "name: old\ntraining:\n  batch_size: 32\n  epochs: 4\n"
                           "model:\n  retired_option: 1\n")
    with pytest.raises(ConfigError, match="model.retired_option: unknown field"):
        load_config(TranslationConfig, path)  # the first section in the config's order
    config = load_config(TranslationConfig, path, recorded=True)
    assert config.training.epochs == 4 and config.name == "old"
    assert config.model == load_config(TranslationConfig, write(tmp_path, "name: x\n")).model
