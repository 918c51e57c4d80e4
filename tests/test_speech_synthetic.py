import shutil

import numpy as np
import pytest

from data_prep import synthetic_voices
from data_prep.audio_features import load_audio
from data_prep.config_checks import ConfigError
from data_prep.speech_config import SyntheticVoicesConfig
from data_prep.synthetic_voices import SynthesisError, draw_voices, make_synthetic_speech

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (make voices)")


def test_voices_are_drawn_reproducibly_within_the_ranges():
    cfg = SyntheticVoicesConfig(voices=50, pitch=[30, 40], rate=[150, 160], seed=3)
    voices = draw_voices(cfg)
    assert len(voices) == 50 and voices == draw_voices(cfg)
    assert voices != draw_voices(SyntheticVoicesConfig(voices=50, seed=4))
    assert all(30 <= v.pitch <= 40 and 150 <= v.rate <= 160 for v in voices)
    assert all(v.accent in synthetic_voices.ACCENTS and v.variant in synthetic_voices.VARIANTS
               for v in voices)
    assert len({v.name for v in voices}) > 40  # mostly distinct speakers


@pytest.mark.parametrize("field, value", [("pitch", [50, 40]), ("pitch", [0, 100]),
                                          ("rate", [150]), ("rate", [100.5, 200])])
def test_bad_ranges_name_the_field(field, value):
    with pytest.raises(ConfigError, match=f"synthetic.{field}: expected"):
        SyntheticVoicesConfig(voices=3, **{field: value}).validate("synthetic")


def test_missing_espeak_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(SynthesisError, match="needs the espeak-ng program.*make voices") as e:
        make_synthetic_speech(["one"], SyntheticVoicesConfig(voices=1), tmp_path)
    assert "\n" not in str(e.value)


@needs_espeak
def test_every_word_in_every_voice_and_files_are_reused(monkeypatch, tmp_path):
    cfg = SyntheticVoicesConfig(voices=2, seed=1)
    entries = make_synthetic_speech(["one", "seven"], cfg, tmp_path)
    assert [e["text"] for e in entries] == ["one", "seven", "one", "seven"]
    assert len({e["speaker"] for e in entries}) == 2
    for e in entries:
        audio = load_audio(e["audio_filepath"], 8000)
        assert 0.1 < e["duration"] < 3 and np.abs(audio).max() > 0.01  # speech, not silence
    assert not list(tmp_path.glob("*.tmp.wav"))

    def fail(*args):
        raise AssertionError("existing files must not be synthesized again")

    monkeypatch.setattr(synthetic_voices, "synthesize", fail)
    assert make_synthetic_speech(["one", "seven"], cfg, tmp_path) == entries


@needs_espeak
def test_the_same_voice_says_the_same_thing_the_same_way(tmp_path):
    cfg = SyntheticVoicesConfig(voices=1, seed=5)
    first = make_synthetic_speech(["three"], cfg, tmp_path / "a")[0]
    second = make_synthetic_speech(["three"], cfg, tmp_path / "b")[0]
    assert np.array_equal(load_audio(first["audio_filepath"], 8000),
                          load_audio(second["audio_filepath"], 8000))
