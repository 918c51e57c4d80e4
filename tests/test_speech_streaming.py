"""Causal recognizers and the chunked stream: the stream computes the offline logits."""

import keras
import numpy as np
import pytest

from data_prep.audio_features import compute_features, normalize
from data_prep.char_vocabulary import CharVocabulary
from data_prep.graph_features import GraphFeatures
from data_prep.speech_config import FeatureConfig
from models.ctc_recognizer import CTCRecognizer
from models.ctc_streaming import frame_lags
from pipelines.speech import streaming
from pipelines.speech.streaming import GreedyPrefix, StreamStep, stream_utterance
from tests.helpers import assert_keras_round_trip

FEATURES = FeatureConfig(normalization="global")
STATS = (np.full(40, -6, np.float32), np.full(40, 3, np.float32))


def causal(**overrides):
    keras.utils.set_random_seed(0)
    config = dict(num_features=40, vocab_size=5, conv_channels=8, rnn_units=8, rnn_layers=2,
                  dropout=0.0, causal=True)
    model = CTCRecognizer(**{**config, **overrides})
    model.build()
    return model


def audio(samples=4321, seed=0):
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(samples)).astype(np.float32)


def offline_log_probs(model, samples):
    features = normalize(compute_features(samples, FEATURES), FEATURES, STATS)
    logits = model({"features": features[None], "feature_lengths": np.array([len(features)])})
    return np.asarray(keras.ops.log_softmax(logits))[0]


def streamed_log_probs(model, samples, frames_per_chunk, block=777, monkeypatch=None):
    """Every log-prob frame the stream decodes, in order (blocks of ``block`` samples)."""
    step = StreamStep(model, GraphFeatures(FEATURES, STATS), frames_per_chunk)
    seen, add = [], GreedyPrefix.add
    monkeypatch.setattr(GreedyPrefix, "add",
                        lambda self, lp, frames: seen.append(lp) or add(self, lp, frames))
    blocks = [samples[i:i + block] for i in range(0, len(samples), block)]
    stream_utterance(step, step.keras_runner(), blocks, CharVocabulary("abcd"))
    return np.concatenate(seen)


@pytest.mark.parametrize("frames, overrides", [
    (16, dict()),  # one stride-2 conv, GRU
    (4, dict(conv_layers=2, conv_kernel=3)),  # the smallest chunk: one output frame
    (8, dict(conv_layers=2, lookahead=1)),
    (8, dict(lookahead=4)),  # more look-ahead than a stride: the top lags by frames
    (12, dict(conv_layers=0, cell="lstm")),
    (6, dict(conv_stride=3, conv_kernel=4, cell="rnn")),
    (8, dict(conv_type="2d", conv_layers=2, lookahead=1)),  # buffers of bins x channels
])
def test_stream_gives_the_offline_log_probs(frames, overrides, monkeypatch):
    model = causal(**overrides)
    samples = audio()
    expected = offline_log_probs(model, samples)
    got = streamed_log_probs(model, samples, frames, monkeypatch=monkeypatch)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_stream_is_independent_of_how_the_audio_arrives(monkeypatch):
    model, samples = causal(), audio(3000, seed=1)
    runs = [streamed_log_probs(model, samples, 8, block, monkeypatch) for block in (1, 640, 5000)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


def test_final_search_gets_the_utterances_offline_log_probs():
    model, samples = causal(conv_layers=2, lookahead=1), audio()
    step = StreamStep(model, GraphFeatures(FEATURES, STATS), 8)
    searched, partials = [], []
    blocks = [samples[i:i + 700] for i in range(0, len(samples), 700)]
    text = stream_utterance(step, step.keras_runner(), blocks, CharVocabulary("abcd"),
                            partials.append, final=lambda lp: searched.append(lp) or "final")
    assert text == "final" and "final" not in partials
    assert len(searched) == 1  # once, at the end
    np.testing.assert_allclose(searched[0], offline_log_probs(model, samples), atol=1e-5)


def test_causal_outputs_do_not_depend_on_the_future():
    model = causal(conv_layers=2, lookahead=1)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((1, 40, 40)).astype(np.float32)
    changed = features.copy()
    changed[0, 30:] += 5.0
    lengths = np.array([40])
    a = np.asarray(model({"features": features, "feature_lengths": lengths}))
    b = np.asarray(model({"features": changed, "feature_lengths": lengths}))
    # Output j sees feature frames up to 4j + lookahead * (1 + 2) = 4j + 3.
    np.testing.assert_array_equal(a[0, :7], b[0, :7])
    assert not np.allclose(a[0, 7:], b[0, 7:])


def test_causal_model_round_trip(tmp_path):
    model = causal(cell="lstm", lookahead=2)
    inputs = {"features": np.ones((1, 9, 40), np.float32), "feature_lengths": np.array([9])}
    loaded = assert_keras_round_trip(model, lambda m: m(inputs), tmp_path)
    assert loaded.config.causal and loaded.config.lookahead == 2


def test_lags_follow_the_convolutions():
    cfg = causal(conv_layers=2).config
    assert frame_lags(cfg) == [3, 1, 0]  # s * lag + s - 1 - lookahead, from the top
    assert frame_lags(cfg, min_feature_lag=4) == [7, 3, 1]
    assert frame_lags(causal(conv_layers=2, lookahead=3, conv_kernel=5).config) == [2, 2, 2]


def test_greedy_prefix_follows_ctc_greedy_rules():
    decoder = GreedyPrefix(blank_index=0)
    one_hot = np.eye(4)
    assert decoder.add(one_hot[[1, 1, 0]])  # "a", repeat merged, blank
    assert decoder.add(one_hot[[1]])  # a blank separates two a's
    assert not decoder.add(one_hot[[1, 0, 0]])
    assert decoder.add(one_hot[[2, 3]], frames=[7, 9]) and decoder.ids == [1, 1, 2, 3]
    assert decoder.frames == [0, 0, 7, 9]  # where each label was emitted


def test_stream_of_silence_is_empty_and_step_rejects_unstreamable_features():
    model = causal()
    step = StreamStep(model, GraphFeatures(FEATURES, STATS), 8)
    # An untrained model may emit anything; silence must simply finish (and short input
    # still yields the frames of a padded chunk).
    stream_utterance(step, step.keras_runner(), [np.zeros(10, np.float32)], CharVocabulary("abcd"))
    with pytest.raises(ValueError, match="a stream needs global"):
        StreamStep(model, GraphFeatures(FeatureConfig(normalization="utterance")), 8)
    with pytest.raises(ValueError, match="features.kind: a stream needs log_mel"):
        StreamStep(model, GraphFeatures(FeatureConfig(kind="mfcc", normalization="none")), 8)
    with pytest.raises(ValueError, match="features.trim_db: a stream cannot trim"):
        StreamStep(model, GraphFeatures(FeatureConfig(trim_db=30, normalization="none")), 8)
    with pytest.raises(ValueError, match="multiple of 2 feature frames"):
        StreamStep(model, GraphFeatures(FEATURES, STATS), 7)
    assert streaming.NO_END > 10 ** 8


def test_a_stray_byte_at_the_end_of_stdin_is_ignored_with_a_warning(capsys):
    import io

    from pipelines.speech.streaming import stdin_blocks

    pcm = (np.arange(-500, 500, dtype=np.int16) * 30).tobytes()
    blocks = list(stdin_blocks(io.BufferedReader(io.BytesIO(pcm + b"\x07")), 8000,
                               block_bytes=300))
    assert np.array_equal(np.concatenate(blocks), np.frombuffer(pcm, "<i2") / 32768.0)
    assert "stdin ends with half a sample (an odd number of bytes), ignored" in \
        capsys.readouterr().err


def test_a_damaged_tflite_step_model_is_one_line_naming_it(tmp_path):
    from pipelines.config import ConfigError
    from pipelines.speech.streaming import tflite_runner

    path = tmp_path / "stream_float32.tflite"
    path.write_bytes(b"TFL3" + b"\x00" * 20)
    with pytest.raises(ConfigError, match=f"^{path}: truncated or damaged TFLite step model"):
        tflite_runner(path, step=None)
