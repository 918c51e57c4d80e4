"""In-graph features (data_prep.graph_features) against the librosa ones training uses."""

import numpy as np
import pytest
import tensorflow as tf

from data_prep.audio_features import (
    compute_features,
    global_stats,
    normalize,
    normalize_by_speaker,
)
from data_prep.graph_features import GraphFeatures
from data_prep.speech_config import FeatureConfig

# Measured: the largest gap over these signals is ~1e-5 for log-mel (values up to ~14),
# ~1e-4 for unnormalized MFCC (values up to ~400), ~6e-6 after normalization.
TOLERANCE = {"none": dict(atol=1e-4, rtol=1e-5), "normalized": dict(atol=5e-5, rtol=0)}


def signals(sample_rate=8000):
    """Speech-like test signals of awkward lengths (not multiples of the hop)."""
    rng = np.random.default_rng(0)
    out = []
    for n in (1001, 2400, 3333, 5000):
        t = np.arange(n) / sample_rate
        tone = np.sin(2 * np.pi * rng.uniform(200, 1500) * t) * np.hanning(n)
        out.append((0.3 * tone + 0.01 * rng.standard_normal(n)).astype(np.float32))
    out.append(np.zeros(1600, np.float32))  # silence
    return out


def graph_batch(extractor, audio):
    n = max(len(a) for a in audio)
    batch = np.stack([np.pad(a, (0, n - len(a)), constant_values=0.5) for a in audio])
    features, lengths = extractor(tf.constant(batch), tf.constant([len(a) for a in audio]))
    return features.numpy(), lengths.numpy()


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
@pytest.mark.parametrize("normalization", ["none", "utterance", "speech", "global"])
def test_graph_features_match_librosa(kind, normalization):
    cfg = FeatureConfig(kind=kind, normalization=normalization)
    audio = signals()
    raw = [compute_features(a, cfg) for a in audio]
    stats = global_stats(raw) if normalization == "global" else None
    expected = [normalize(r, cfg, stats) for r in raw]
    # Padding is filled with 0.5, not zeros: samples past a row's length must be ignored.
    features, lengths = graph_batch(GraphFeatures(cfg, stats), audio)
    tolerance = TOLERANCE["none" if normalization == "none" else "normalized"]
    for want, got, length, samples in zip(expected, features, lengths, audio):
        assert length == len(want) and np.all(np.isfinite(got))
        assert np.all(got[length:] == 0)
        if normalization in ("utterance", "speech") and not samples.any():
            # Digital silence: every feature is constant, and per-utterance normalization
            # divides its rounding noise by EPSILON, in NumPy as in the graph.
            continue
        np.testing.assert_allclose(got[:length], want, **tolerance)


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_graph_speaker_normalization_pools_the_batch_as_one_speaker(kind):
    cfg = FeatureConfig(kind=kind, normalization="speaker")
    audio = signals()[:4]  # no digital silence: one speaker's speech
    expected = normalize_by_speaker([compute_features(a, cfg) for a in audio],
                                    ["ann"] * len(audio), cfg)
    features, lengths = graph_batch(GraphFeatures(cfg), audio)
    for want, got, length in zip(expected, features, lengths):
        assert length == len(want) and np.all(got[length:] == 0)
        np.testing.assert_allclose(got[:length], want, **TOLERANCE["normalized"])


def test_other_rates_and_windows():
    cfg = FeatureConfig(sample_rate=16000, window_ms=32, hop_ms=12.5, n_mels=64, fmax=7000)
    audio = signals(16000)[:2]
    expected = [compute_features(a, cfg) for a in audio]
    features, lengths = graph_batch(GraphFeatures(FeatureConfig(**{
        **cfg.__dict__, "normalization": "none"})), audio)
    for want, got, length in zip(expected, features, lengths):
        np.testing.assert_allclose(got[:length], want[:length], atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("normalization", ["none", "utterance"])
def test_graph_trimming_matches_librosa(normalization):
    """trim_db in the graph cuts each row where librosa.effects.trim does (silence of
    different lengths before and after the sound, digital silence kept whole)."""
    cfg = FeatureConfig(trim_db=30, normalization=normalization)
    rng = np.random.default_rng(1)
    audio = [np.concatenate([0.001 * rng.standard_normal(before).astype(np.float32), a,
                             0.001 * rng.standard_normal(after).astype(np.float32)])
             for a, before, after in zip(signals()[:4], (0, 1234, 3000, 77), (2500, 0, 999, 4321))]
    audio.append(np.zeros(1600, np.float32))
    expected = [normalize(compute_features(a, cfg), cfg) for a in audio]
    features, lengths = graph_batch(GraphFeatures(cfg), audio)
    untrimmed = [1 + len(a) // cfg.hop_length for a in audio]
    assert all(len(e) < n for e, n in zip(expected[:4], untrimmed[:4]))  # edges were cut
    tolerance = TOLERANCE["none" if normalization == "none" else "normalized"]
    for want, got, length in zip(expected, features, lengths):
        assert length == len(want) and np.all(got[length:] == 0)
        if normalization == "none" or want.std() > 0:  # digital silence: see above
            np.testing.assert_allclose(got[:length], want, **tolerance)


def test_audio_trimmed_to_nothing_is_kept_whole_in_the_graph_too():
    # A hop as long as the window: sound only at the very end is loud in just the frame
    # centred on the end, which librosa trims to [n, n]; compute_features keeps it all.
    cfg = FeatureConfig(sample_rate=8000, window_ms=25, hop_ms=25, trim_db=30,
                        normalization="none")
    audio = np.zeros(600, np.float32)
    audio[-50:] = np.random.default_rng(0).standard_normal(50)
    want = compute_features(audio, cfg)
    features, lengths = graph_batch(GraphFeatures(cfg), [audio])
    assert lengths[0] == len(want) == 4
    np.testing.assert_allclose(features[0, :4], want, **TOLERANCE["none"])


def test_unsupported_settings_are_named():
    with pytest.raises(ValueError, match="features.normalization: loudness has no in-graph"):
        GraphFeatures(FeatureConfig(normalization="loudness"))  # no validate(): a future mode
    with pytest.raises(ValueError, match="normalization: global"):
        GraphFeatures(FeatureConfig(normalization="global"))
    with pytest.raises(ValueError, match="a stream needs global"):
        GraphFeatures(FeatureConfig(normalization="utterance")).normalize_frames(tf.zeros([1, 40]))


def test_the_filterbank_without_a_matrix_product_gives_the_same_log_mel():
    cfg = FeatureConfig(normalization="none")
    extractor = GraphFeatures(cfg)
    frames = tf.signal.frame(np.concatenate(signals()), cfg.n_fft, cfg.hop_length)
    np.testing.assert_allclose(extractor.log_mel(frames, matmul=False).numpy(),
                               extractor.log_mel(frames).numpy(), **TOLERANCE["none"])
