import dataclasses

import numpy as np
import pytest
import soundfile as sf

from data_prep.audio_features import (
    AudioError,
    FeatureConfig,
    compute_features,
    extract_features,
    global_stats,
    load_audio,
    normalize,
    normalize_by_speaker,
    speech_frames,
)


def tone(freq, seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def test_stereo_44k_is_mixed_down_and_resampled(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, tone(440, 1.0, 44100, channels=2), 44100)
    audio = load_audio(path, 8000)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert abs(len(audio) - 8000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 8000 / len(audio) - 440) < 2  # still a 440 Hz tone
    assert 0.3 < np.abs(audio).max() < 0.6  # mixdown averages the channels, no doubling


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_perturbation_scales_duration_and_pitch(tmp_path, speed):
    path = tmp_path / "tone.wav"
    sf.write(path, tone(300, 1.0, 8000), 8000)
    audio = load_audio(path, 8000, speed=speed)
    assert abs(len(audio) - 8000 / speed) <= 1
    peak = np.argmax(np.abs(np.fft.rfft(audio))) * 8000 / len(audio)
    assert abs(peak - 300 * speed) < 2


def test_corrupt_empty_and_missing_files_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(AudioError, match="corrupt.wav: cannot read audio"):
        load_audio(corrupt, 8000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 8000)
    with pytest.raises(AudioError, match="empty.wav: empty audio"):
        load_audio(empty, 8000)
    zero_bytes = tmp_path / "zero.flac"
    zero_bytes.write_bytes(b"")
    with pytest.raises(AudioError, match="zero.flac"):
        load_audio(zero_bytes, 8000)
    with pytest.raises(AudioError, match="missing.wav: audio file not found"):
        load_audio(tmp_path / "missing.wav", 8000)
    with pytest.raises(AudioError, match="is a directory, not an audio file"):
        load_audio(tmp_path, 8000)


def test_undecodable_and_truncated_files_say_what_is_wrong(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"hello world" * 10)
    with pytest.raises(AudioError, match=r"junk\.wav: cannot read audio \(\w+: \S"):
        load_audio(junk, 8000)  # the decoders' exceptions here have empty messages
    whole = tmp_path / "whole.wav"
    sf.write(whole, tone(300, 1.0, 8000), 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:1000])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated wav: its header announces "
                                         r"16000 bytes of audio, the file holds 956"):
        load_audio(cut, 8000)
    assert len(load_audio(whole, 8000)) == 8000


@pytest.mark.parametrize("kind, dims", [("log_mel", 40), ("mfcc", 13)])
def test_feature_shapes(kind, dims):
    cfg = FeatureConfig(kind=kind)
    features = compute_features(tone(300, 0.5, 8000), cfg)
    # Centered frames: one per 10 ms hop, plus one.
    assert features.shape == (4000 // cfg.hop_length + 1, dims) == (51, dims)
    assert features.dtype == np.float32 and np.isfinite(features).all()


def test_log_mel_peaks_at_the_tone():
    low = compute_features(tone(200, 0.5, 8000), FeatureConfig()).mean(axis=0)
    high = compute_features(tone(3000, 0.5, 8000), FeatureConfig()).mean(axis=0)
    assert np.argmax(low) < 10 < 30 < np.argmax(high)


def test_normalizations():
    rng = np.random.default_rng(0)
    features = [rng.normal(5.0, 3.0, (n, 4)).astype(np.float32) for n in (30, 50)]
    per_utt = normalize(features[0], FeatureConfig(normalization="utterance"))
    np.testing.assert_allclose(per_utt.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(per_utt.std(axis=0), 1, atol=1e-3)
    stats = global_stats(features)
    joined = np.concatenate([normalize(f, FeatureConfig(normalization="global"), stats)
                             for f in features])
    np.testing.assert_allclose(joined.mean(axis=0), 0, atol=1e-5)
    assert normalize(features[0], FeatureConfig(normalization="none")) is features[0]


@pytest.mark.parametrize("kind", ["log_mel", "mfcc"])
def test_speech_normalization_ignores_silence(kind):
    # A tone with 0.1 s or 0.6 s of near-silence after it: per-utterance statistics move
    # with the amount of silence, speech-frame statistics do not.
    cfg = FeatureConfig(kind=kind)
    quiet = np.random.default_rng(0).normal(0, 1e-4, 8000).astype(np.float32)
    word = tone(300, 0.3, 8000)
    short, long = (compute_features(np.concatenate([word, quiet[:n]]), cfg) for n in (800, 4800))
    frames = len(compute_features(word, cfg)) - 2  # away from the tone's end

    def moved(normalization):
        c = dataclasses.replace(cfg, normalization=normalization)
        return np.abs(normalize(short, c)[:frames] - normalize(long, c)[:frames]).max()

    assert moved("speech") < 0.05 < 0.5 < moved("utterance")
    loud = speech_frames(long, cfg)
    assert loud[:frames].all() and not loud[-30:].any()


def test_speaker_normalization_removes_a_channel_and_keeps_the_words_apart():
    cfg = FeatureConfig(normalization="speaker")
    words = [compute_features(tone(f, 0.3, 8000), cfg) for f in (300, 600, 1200)]
    # Speaker b: the same words through another channel (a gain per mel band, which is
    # a constant added to the log-mel features).
    channel = np.linspace(-2.0, 3.0, cfg.n_mels, dtype=np.float32)
    features = words + [w + channel for w in words]
    speakers = ["a"] * 3 + ["b"] * 3
    out = normalize_by_speaker(features, speakers, cfg)
    assert [f.shape for f in out] == [f.shape for f in features]
    for i in range(3):  # the channel is gone
        np.testing.assert_allclose(out[i], out[i + 3], atol=1e-3)
    # A speaker's speech frames: zero mean, unit variance over all their words together,
    # so each word keeps what sets it apart (per-utterance statistics would remove it).
    joined = np.concatenate([o[speech_frames(f, cfg)] for o, f in zip(out, features[:3])])
    np.testing.assert_allclose(joined.mean(axis=0), 0, atol=1e-4)
    assert np.abs(out[0].mean(axis=0) - out[2].mean(axis=0)).max() > 1.0
    # An unknown speaker (None) is normalized alone, like normalization=speech.
    alone = normalize_by_speaker(features[:2], [None, None], cfg)
    speech = dataclasses.replace(cfg, normalization="speech")
    for f, got in zip(features[:2], alone, strict=True):
        np.testing.assert_allclose(got, normalize(f, speech), atol=1e-5)


def test_parallel_extraction_keeps_order_and_reports_bad_files(tmp_path):
    paths = []
    for i, seconds in enumerate([0.3, 0.1, 0.5]):
        paths.append(tmp_path / f"{i}.wav")
        sf.write(paths[-1], tone(500, seconds, 8000), 8000)
    features = extract_features(paths, FeatureConfig(), workers=2)
    assert [len(f) for f in features] == [31, 11, 51]
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="bad.wav"):
        extract_features([*paths, tmp_path / "bad.wav"], FeatureConfig(), workers=2)


def test_trim_removes_silent_edges_only():
    rate = 8000
    word = tone(300, 0.3, rate)
    padded = np.concatenate([np.zeros(rate // 5, np.float32), word, np.zeros(rate // 2, np.float32)])
    cfg = FeatureConfig(trim_db=30)
    # 0.2 s + 0.5 s of silence (70 frames) go; the tone stays, give or take a window per edge.
    assert abs(len(compute_features(padded, cfg)) - len(compute_features(word, cfg))) <= 4
    assert len(compute_features(padded, FeatureConfig())) == 101  # trimming is off by default
    silence = np.zeros(rate // 2, np.float32)
    assert len(compute_features(silence, cfg)) == len(compute_features(silence, FeatureConfig()))


def test_no_progress_bar_without_a_terminal(tmp_path, capsys):
    path = tmp_path / "tone.wav"
    sf.write(path, tone(300, 0.1, 8000), 8000)
    assert len(extract_features([path] * 120, FeatureConfig())) == 120
    assert capsys.readouterr().err == ""  # a log file would fill with bar updates
