"""The speech reference (keras-io's CTC ASR example) and its comparison command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import deepspeech2_reference as ds2
from tests.helpers import ROOT

CONFIGS = ROOT / "pipelines" / "configs"


def test_reference_matches_our_parameter_count_on_an4():
    """The formula is Keras' count, and the scaled width lands within 1% of an4.yaml's
    model (built as the pipeline builds it)."""
    from pipelines.config import load_config
    from pipelines.speech.config import SpeechConfig
    from pipelines.speech.data import vocabulary
    from pipelines.speech.stages import build_model

    cfg = load_config(SpeechConfig, CONFIGS / "an4.yaml")
    vocab = vocabulary(cfg)
    ours = build_model(cfg, vocab).count_params()
    units = ds2.reference_units(ours, cfg.features.num_features, vocab.size)
    reference = ds2.build_reference(cfg.features.num_features, vocab.size, units)
    assert reference.count_params() == ds2.reference_parameters(
        cfg.features.num_features, vocab.size, units)
    assert abs(reference.count_params() - ours) / ours < 0.01
    assert units < ds2.EXAMPLE_UNITS  # scaled down from the example's 512


def test_reference_output_lengths_and_loss():
    model = ds2.build_reference(num_features=40, vocab_size=29, units=8)
    rng = np.random.default_rng(0)
    lengths = np.array([37, 20, 9], np.int32)
    features = rng.normal(size=(3, 37, 40)).astype(np.float32)
    features[np.arange(37)[None, :] >= lengths[:, None]] = 0.0  # padding, as batches have
    x = {"features": features, "feature_lengths": lengths}
    y = np.array([[1, 2, 3, 3, -1], [4, 5, -1, -1, -1], [6, -1, -1, -1, -1]], np.int32)
    logits = model(x)
    assert tuple(logits.shape) == (3, 19, 29)  # the first convolution halves time
    assert np.asarray(model.output_lengths(lengths)).tolist() == [19, 10, 5]
    loss = float(model.compute_loss(x, y, logits))
    assert np.isfinite(loss) and loss > 0


def _tree(path):
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in path.rglob("*")}


@pytest.mark.slow
def test_comparison_end_to_end_on_an4_smoke(data_dir, tmp_path, capsys):
    """Both parts with a tiny budget on a prepared an4_smoke run, which stays as it was
    (training, validation and greedy decoding of the reference included). Ours is
    enlarged: the reference's convolutions alone outweigh the smoke model."""
    if not (data_dir / "an4" / "etc").is_dir():
        pytest.skip(f"AN4 not found under {data_dir}")
    from benchmarks import speech_reference
    from pipelines import speech

    run = tmp_path / "run"
    assert speech.main(["prepare", "--config", str(CONFIGS / "an4_smoke.yaml"),
                        "--run-dir", str(run), "--data-dir", str(data_dir)]) == 0
    before = _tree(run)
    out = tmp_path / "results.json"
    assert speech_reference.main([
        "--run-dir", str(run), "--minutes", "0.01", "--warmup-steps", "1",
        "--train-steps", "1", "--set", "model.rnn_layers=1", "--set", "model.rnn_units=384",
        "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    assert _tree(run) == before
    results = json.loads(out.read_text())
    assert {"parameters", "throughput", "ours", "reference", "budget"} <= set(results)
    p = results["parameters"]
    assert abs(p["ours"] - p["reference"]) / p["ours"] < 0.01
    for side in ("ours", "reference"):
        assert results["throughput"][side]["frames_per_second"] > 0
        assert 0 <= results[side]["test"]["greedy"]["wer"]
    assert set(results["ours"]["test"]) == {"greedy", "beam_search"}
    assert results["reference"]["history"][0]["val_wer"] >= 0
    assert "training frames/s" in capsys.readouterr().out
