"""The hybrid CTC/attention model in the speech pipeline: config, fingerprints, stages."""

import json
import re
from pathlib import Path

import pytest

from pipelines import speech
from pipelines.config import ConfigError, load_config
from pipelines.run_dir import fingerprint
from pipelines.speech.config import SpeechConfig
from tests.helpers import saved_model_client, tone_corpus

CONFIGS = Path(__file__).resolve().parent.parent / "pipelines" / "configs"
SMOKE = CONFIGS / "speech_smoke.yaml"
DECODER = ["--set", "attention_decoder.units=16", "--set", "attention_decoder.embedding_dim=8",
           "--set", "attention_decoder.attention_units=8"]


@pytest.mark.parametrize("config, overrides, message", [
    ("speech_smoke", ["attention_decoder.ctc_weight=0"], "attention_decoder.ctc_weight: must be in (0, 1]"),
    ("speech_smoke", ["attention_decoder.ctc_weight=1.5"], "attention_decoder.ctc_weight: must be in (0, 1]"),
    ("speech_smoke", ["attention_decoder.cell=transformer"], "attention_decoder.cell: must be one of"),
    ("speech_smoke", ["attention_decoder.label_smoothing=1"],
     "attention_decoder.label_smoothing: must be in [0, 1)"),
    ("speech_smoke", ["attention_decoder.unit=3"], "attention_decoder.unit: unknown field"),
    ("speech_smoke", ["attention_decoder.attention=dot", "attention_decoder.units=20"],
     "attention_decoder.units: dot attention needs the encoder's output size"),
    ("speech_smoke", ["decoding.strategy=attention_rescoring"],
     "decoding.strategy: attention_rescoring needs a model with an attention decoder"),
    ("speech_smoke", ["decoding.ctc_weight=-0.1"], "decoding.ctc_weight: must be in [0, 1]"),
    ("speech_smoke_streaming", ["attention_decoder.units=32"],
     "attention_decoder: a causal (streaming) model is pure CTC"),
    ("an4_hybrid", ["model.causal=true"], "attention_decoder: a causal (streaming) model"),
    ("an4_hybrid", ["attention_decoder=null"], "decoding.strategy: attention_rescoring needs"),
    ("an4", ["model.intermediate_ctc_layer=3"], "model.intermediate_ctc_layer: an RNN layer "
     "below the top one (1 to 2; 0: off), got 3"),
    ("an4", ["model.intermediate_ctc_weight=1"], "model.intermediate_ctc_weight: must be in"),
])
def test_config_errors_name_the_field(config, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(SpeechConfig, CONFIGS / f"{config}.yaml", overrides)


def test_a_config_without_a_decoder_keeps_its_fingerprints():
    # Imported here: the stages module imports TensorFlow.
    from pipelines.speech.stages import made_from

    # an4.yaml as it was before the 2-D front end, which it has now.
    cfg = load_config(SpeechConfig, CONFIGS / "an4.yaml",
                      ["model.conv_type=1d", "model.conv_channels=128"])
    assert cfg.attention_decoder is None
    parts = made_from(cfg)
    # Nothing new in what train, evaluate and export are made from: the same records and
    # fingerprints as before the decoder existed.
    assert "attention_decoder" not in parts["train"]
    assert "ctc_weight" not in parts["evaluate"]["decoding"]
    assert "ctc_weight" not in cfg.decoding.signature()
    # ... nor since the 2-D front end and intermediate CTC, at their defaults.
    assert not {"conv_type", "intermediate_ctc_layer", "intermediate_ctc_weight"} & set(
        parts["train"]["model"])
    with_it = made_from(load_config(SpeechConfig, CONFIGS / "an4.yaml",
                                    ["model.intermediate_ctc_layer=1"]))
    assert with_it["train"]["model"]["intermediate_ctc_layer"] == 1
    hybrid = load_config(SpeechConfig, CONFIGS / "an4_hybrid.yaml")
    assert hybrid.attention_decoder is not None
    hybrid_parts, base = made_from(hybrid), made_from(load_config(SpeechConfig,
                                                                  CONFIGS / "an4.yaml"))
    assert fingerprint(hybrid_parts["train"]) != fingerprint(base["train"])
    # an4.yaml's encoder, augmentation and data order (the hybrid trains on its own schedule).
    assert {k: v for k, v in hybrid_parts["train"].items()
            if k not in ("attention_decoder", "training")} \
        == {k: v for k, v in base["train"].items() if k != "training"}
    # The decoding weight is a decoding field: changing it retrains nothing.
    weighted = load_config(SpeechConfig, CONFIGS / "an4_hybrid.yaml", ["decoding.ctc_weight=0.5"])
    assert made_from(weighted)["train"] == hybrid_parts["train"]
    assert made_from(weighted)["evaluate"] != hybrid_parts["evaluate"]


def run(*args) -> int:
    return speech.main([str(a) for a in args])


def tone_run(tmp_path, *overrides) -> list:
    """Arguments of a run of a tiny model on a tone corpus in ``tmp_path``: one epoch, the
    given ``--set`` overrides last."""
    manifests = tone_corpus(tmp_path / "corpus")
    sets = ["data.corpus=manifest", f"data.manifests={json.dumps(manifests)}",
            "model.conv_channels=8", "model.rnn_units=8", "model.rnn_layers=1",
            "training.epochs=1", "training.batch_size=4", *overrides]
    return ["--config", SMOKE, "--run-dir", tmp_path / "run",
            *[arg for value in sets for arg in ("--set", value)]]


@pytest.mark.slow
def test_hybrid_all_stages_on_a_tone_corpus(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = tone_run(tmp_path, "decoding.beam_width=4", "decoding.strategy=attention_rescoring",
                      *DECODER[1::2])
    assert run("all", *common) == 0
    out = capsys.readouterr().out
    assert "(attention_rescoring); beam_search WER" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["strategy"] == "attention_rescoring"
    assert metrics["beam_search"]["strategy"] == "beam_search"
    assert metrics["greedy"]["strategy"] == "greedy"
    assert metrics["decoding"]["ctc_weight"] == 0.3
    for strategy in ("attention_rescoring", "beam_search", "greedy"):
        assert len((run_dir / "hyps" / f"test.{strategy}.txt").read_text().splitlines()) == 8
    record = json.loads((run_dir / "stages" / "train.json").read_text())
    assert record["config"]["attention_decoder"]["units"] == 16

    # transcribe decodes as evaluate did (attention rescoring).
    audio = [str(tmp_path / "corpus" / "test" / f"{i}.wav") for i in range(8)]
    assert run("transcribe", *common, *audio) == 0
    expected = capsys.readouterr().out.splitlines()
    assert expected == (run_dir / "hyps" / "test.attention_rescoring.txt").read_text().splitlines()
    # The SavedModel rescores in its graph too: the same transcripts without Keras.
    assert run("export", *common) == 0
    assert saved_model_client("transcribe", run_dir / "export", *audio) == expected
    # A trained hybrid with another decoder is another model: refused, not retrained.
    assert run("evaluate", *common, "--set", "attention_decoder.units=24") == 1
    assert "attention_decoder.units" in capsys.readouterr().err


@pytest.mark.slow
def test_rescoring_a_run_trained_without_a_decoder_is_one_line(tmp_path, capsys):
    common = tone_run(tmp_path, "decoding.beam_width=2")
    assert run("prepare", *common) == 0 and run("train", *common) == 0
    capsys.readouterr()
    # The run's records know nothing of a decoder section (added since, as far as they
    # can tell), so the checkpoint is what says the model has none.
    assert run("evaluate", *common, "--set", "decoding.strategy=attention_rescoring",
               *DECODER) == 1
    assert "needs the model trained with an attention_decoder section" in capsys.readouterr().err
