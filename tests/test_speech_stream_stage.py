"""The stream stage and the TFLite step on a trained causal smoke model."""

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep.manifest import read_manifest
from pipelines import speech
from pipelines.config import load_config
from pipelines.speech.config import SpeechConfig

CONFIGS = Path(__file__).resolve().parent.parent / "pipelines" / "configs"
STREAMING = CONFIGS / "speech_smoke_streaming.yaml"


def run(*args) -> int:
    return speech.main([str(a) for a in args])


def stdin_bytes(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))


@pytest.fixture(scope="module")
def streaming_run(speech_streaming_smoke_run, data_dir, tmp_path_factory):
    """A copy of the causal smoke run, exported (SavedModel and TFLite steps), and the
    ``transcribe`` stage's transcripts of its test set."""
    run_dir = tmp_path_factory.mktemp("stream") / "run"
    shutil.copytree(speech_streaming_smoke_run, run_dir)
    common = ["--config", STREAMING, "--run-dir", run_dir, "--data-dir", data_dir]
    assert run("export", *common) == 0
    audio = [e["audio_filepath"] for e in read_manifest(run_dir / "data" / "test.jsonl")]
    listing = run_dir / "test_paths.txt"
    listing.write_text("\n".join(audio) + "\n")
    return common, audio, listing


def transcribe(common, listing, capsys):
    capsys.readouterr()
    assert run("transcribe", *common, "--input", listing) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.slow
def test_stream_final_transcripts_equal_transcribe(streaming_run, capsys):
    common, audio, listing = streaming_run
    expected = transcribe(common, listing, capsys)
    assert any(expected)  # the smoke model writes something, so equality means something
    assert run("stream", *common, *audio) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == expected
    # Not a terminal: each change of a partial hypothesis is a line on stderr, and the
    # last one of an utterance is its final transcript.
    partials = captured.err.splitlines()
    assert expected[0] in partials and len(partials) >= sum(bool(t) for t in expected)


@pytest.mark.slow
def test_stream_from_stdin(streaming_run, capsys, monkeypatch, tmp_path):
    common, audio, listing = streaming_run
    expected = transcribe(common, listing, capsys)
    pcm, rate = sf.read(audio[0], dtype="int16")
    assert rate == 8000
    # Raw PCM ending mid-chunk (and in the middle of a read): padded and finished.
    stdin_bytes(monkeypatch, pcm.tobytes())
    assert run("stream", *common, "-") == 0
    assert capsys.readouterr().out.splitlines() == [expected[0]]
    # A stray byte at the end: a warning, and still the transcript.
    stdin_bytes(monkeypatch, pcm.tobytes() + b"\x07")
    assert run("stream", *common, "-") == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [expected[0]]
    assert "stdin ends with half a sample (an odd number of bytes), ignored" in captured.err
    # The same samples as a wav at the right rate are accepted.
    wav = io.BytesIO()
    sf.write(wav, pcm, 8000, subtype="PCM_16", format="WAV")
    stdin_bytes(monkeypatch, wav.getvalue())
    assert run("stream", *common) == 0
    assert capsys.readouterr().out.splitlines() == [expected[0]]
    # Silence: an empty transcript; nothing at all: one empty transcript too.
    for data in (np.zeros(12345, np.int16).tobytes(), b""):
        stdin_bytes(monkeypatch, data)
        assert run("stream", *common) == 0
        assert capsys.readouterr().out == "\n"


@pytest.mark.slow
@pytest.mark.parametrize("data, message", [
    (("wav", 16000, 1), "a wav of 16-bit PCM audio, 1 channel(s) at 16000 Hz; expected "
                        "16-bit mono PCM at 8000 Hz"),
    (("wav", 8000, 2), "2 channel(s) at 8000 Hz"),
])
def test_stream_rejects_other_formats_on_stdin(streaming_run, capsys, monkeypatch, data, message):
    common = streaming_run[0]
    if isinstance(data, tuple):
        _, rate, channels = data
        wav = io.BytesIO()
        sf.write(wav, np.zeros((800, channels), np.int16), rate, subtype="PCM_16", format="WAV")
        data = wav.getvalue()
    stdin_bytes(monkeypatch, data)
    assert run("stream", *common) == 1
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_tflite_stream_equals_the_keras_stream(streaming_run, capsys):
    common, audio, listing = streaming_run
    run_dir = Path(common[3])
    sizes = {v: (run_dir / "tflite" / f"stream_{v}.tflite").stat().st_size
             for v in ("float32", "int8", "float16")}
    assert sizes["int8"] < sizes["float16"] < sizes["float32"]
    capsys.readouterr()
    assert run("stream", *common, *audio) == 0
    keras_out = capsys.readouterr().out.splitlines()
    assert run("stream", *common, "--tflite", *audio) == 0
    assert capsys.readouterr().out.splitlines() == keras_out
    assert run("stream", *common, "--tflite", "--int8", *audio) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(audio)
    assert run("stream", *common, "--tflite", "--float16", *audio[:3]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert run("stream", *common, "--tflite", "--int8", "--float16", *audio[:1]) == 1
    assert "choose one TFLite model" in capsys.readouterr().err
    # Another chunk size: the exported steps no longer fit the config.
    assert run("stream", *common, "--set", "streaming.chunk_ms=80", "--tflite", *audio[:1]) == 1
    assert "run the export stage before 'stream --tflite'" in capsys.readouterr().err


@pytest.mark.slow
def test_int8_step_has_int8_weights_and_a_float32_filterbank(streaming_run):
    """The int8 step quantizes the network's weights, not the mel filterbank: a
    dynamic-range int8 filterbank would quantize the power spectrum too (see
    ``GraphFeatures.mel_power``)."""
    from ai_edge_litert.interpreter import Interpreter

    common, _, _ = streaming_run
    features = load_config(SpeechConfig, STREAMING).features
    filterbank = [features.n_fft // 2 + 1, features.n_mels]
    tensors = Interpreter(model_path=str(Path(common[3]) / "tflite" / "stream_int8.tflite")
                          ).get_tensor_details()  # the main graph's: conv and output weights
    assert any(t["dtype"] == np.int8 for t in tensors)
    assert [t["dtype"] for t in tensors if list(t["shape"]) == filterbank] == [np.float32]
    assert not any(t["dtype"] == np.int8 and filterbank[0] in t["shape"] for t in tensors)


def test_stream_needs_a_causal_model(tmp_path, capsys):
    # Refused from the config alone, before a run or a model is needed.
    assert run("stream", "--config", CONFIGS / "speech_smoke.yaml", "--run-dir", tmp_path) == 1
    assert "model.causal: streaming needs a causal model" in capsys.readouterr().err
