"""The speech SavedModel export: transcripts in a process that has only TensorFlow."""

import shutil
from pathlib import Path

import keras
import pytest

from data_prep import fsdd
from data_prep.manifest import read_manifest
from pipelines import speech
from tests.helpers import assert_weights_saved_once, saved_model_client

SMOKE = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "speech_smoke.yaml"


def run(*args) -> int:
    return speech.main([str(a) for a in args])


@pytest.mark.slow
def test_export_transcribes_like_the_transcribe_stage(speech_smoke_run, data_dir, tmp_path,
                                                      capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(speech_smoke_run, run_dir)
    common = ["--config", SMOKE, "--run-dir", run_dir, "--data-dir", data_dir]
    assert run("export", *common) == 0
    assert "'transcribe' signature" in capsys.readouterr().out
    assert run("export", *common) == 0
    assert "up to date" in capsys.readouterr().out
    audio = [e["audio_filepath"] for e in read_manifest(run_dir / "data" / "test.jsonl")]
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(audio) + "\n")
    assert run("transcribe", *common, "--input", listing) == 0
    expected = capsys.readouterr().out.splitlines()
    assert any(expected)  # the smoke model writes something, so the comparison means something
    # The configured decoding (beam search) in the graph, batched with padding.
    assert saved_model_client("transcribe", run_dir / "export", *audio) == expected
    assert_weights_saved_once(run_dir / "export",
                              keras.saving.load_model(run_dir / "checkpoints" / "best.keras"))

    errors = saved_model_client("bad-input", run_dir / "export")
    for case in ("int16 samples", "one waveform, no batch axis"):
        assert "TensorSpec(shape=(None, None), dtype=tf.float32, name='waveforms')" in errors[case]
    assert "lengths must have one entry per waveform" in errors["lengths mismatch"]
    assert "a length exceeds the padded length of waveforms" in errors["length too long"]
    assert "samples outside [-1, 1]" in errors["int16-scale floats"]
    assert errors["silence"] == "" and errors["empty batch"] == []



@pytest.mark.slow
def test_export_with_speaker_normalization_and_trimming(data_dir, tmp_path, capsys):
    # The transcribe stage normalizes the files of one input batch as one speaker's; the
    # SavedModel does the same with the waveforms of one call. It trims each waveform's
    # silent edges as librosa trims the files (FSDD's recordings have some).
    if not (data_dir / fsdd.RECORDINGS).is_dir():
        pytest.skip(f"FSDD not found under {data_dir}")
    run_dir = tmp_path / "run"
    common = ["--config", SMOKE, "--run-dir", run_dir, "--data-dir", data_dir,
              "--set", "features.normalization=speaker", "--set", "training.epochs=4",
              "--set", "features.trim_db=30"]
    assert run("all", *common) == 0
    assert run("export", *common) == 0
    entries = read_manifest(run_dir / "data" / "test.jsonl")
    speaker = entries[0]["speaker"]
    audio = [e["audio_filepath"] for e in entries if e["speaker"] == speaker][:8]
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(audio) + "\n")
    capsys.readouterr()
    assert run("transcribe", *common, "--input", listing) == 0
    expected = capsys.readouterr().out.splitlines()
    assert len(expected) == len(audio) and any(expected)
    assert saved_model_client("transcribe", run_dir / "export", *audio) == expected
