import json

import numpy as np
import pytest
import soundfile as sf

from data_prep.audio_features import AudioError, load_audio
from data_prep.manifest import (
    ManifestError,
    commonvoice_manifest,
    correct_durations,
    librispeech_manifest,
    ljspeech_manifest,
    main,
    read_manifest,
    write_manifest,
)


def noise(seconds, rate=16000, seed=0):
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(
        np.float32)


def make_librispeech(root):
    """Two speakers, one chapter each, in the LibriSpeech directory layout."""
    for speaker, chapter, texts in [("19", "198", ["HELLO WORLD", "DON'T STOP"]),
                                    ("26", "495", ["GOOD MORNING"])]:
        folder = root / speaker / chapter
        folder.mkdir(parents=True)
        lines = []
        for i, text in enumerate(texts):
            utterance = f"{speaker}-{chapter}-{i:04d}"
            sf.write(folder / f"{utterance}.flac", noise(0.5 + i * 0.25), 16000)
            lines.append(f"{utterance} {text}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_layout(tmp_path):
    entries = librispeech_manifest(make_librispeech(tmp_path / "dev-clean"))
    assert [e["text"] for e in entries] == ["HELLO WORLD", "DON'T STOP", "GOOD MORNING"]
    assert [e["speaker"] for e in entries] == ["19", "19", "26"]
    assert [e["duration"] for e in entries] == [0.5, 0.75, 0.5]
    assert entries[0]["audio_filepath"].endswith("19/198/19-198-0000.flac")


def test_librispeech_missing_audio_names_the_line(tmp_path):
    root = make_librispeech(tmp_path / "ls")
    (root / "19" / "198" / "19-198-0001.flac").unlink()
    with pytest.raises(ManifestError, match=r"19-198.trans.txt:2: audio 19-198-0001.flac"):
        librispeech_manifest(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no \\*.trans.txt"):
        librispeech_manifest(tmp_path / "empty")


def test_ljspeech_layout_prefers_normalized_text(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    (root / "wavs").mkdir(parents=True)
    for name in ("LJ001-0001", "LJ001-0002"):
        sf.write(root / "wavs" / f"{name}.wav", noise(0.25, 22050), 22050)
    (root / "metadata.csv").write_text(
        'LJ001-0001|In 1850 he said "no".|In eighteen fifty he said "no".\n'
        "LJ001-0002|Plain text only|\n", encoding="utf-8")
    entries = ljspeech_manifest(root)
    assert [e["text"] for e in entries] == ['In eighteen fifty he said "no".', "Plain text only"]
    assert entries[0]["duration"] == 0.25 and entries[0]["speaker"] == "LJ"


def test_commonvoice_layout_with_mp3(tmp_path):
    root = tmp_path / "cv" / "en"
    (root / "clips").mkdir(parents=True)
    # libsndfile >= 1.1 encodes MP3 (LAME), so real mp3 fixtures need no external encoder.
    for i in range(2):
        sf.write(root / "clips" / f"common_voice_en_{i}.mp3", noise(1.0, 16000, seed=i),
                 16000, format="MP3")
    (root / "test.tsv").write_text(
        "client_id\tpath\tsentence\tup_votes\n"
        "abc\tcommon_voice_en_0.mp3\tHe said \"hi\".\t2\n"
        "def\tcommon_voice_en_1.mp3\tIt's fine\t1\n", encoding="utf-8")
    entries = commonvoice_manifest(root, "test")
    assert [e["text"] for e in entries] == ['He said "hi".', "It's fine"]
    assert [e["speaker"] for e in entries] == ["abc", "def"]
    # The encoder pads a little; the duration is within a frame of the second written.
    assert abs(entries[0]["duration"] - 1.0) < 0.1
    audio = load_audio(entries[0]["audio_filepath"], 8000)
    assert abs(len(audio) / 8000 - entries[0]["duration"]) < 0.01
    (root / "clips" / "common_voice_en_1.mp3").write_bytes(b"ID3 truncated")
    with pytest.raises(AudioError, match="common_voice_en_1.mp3"):
        commonvoice_manifest(root, "test")
    with pytest.raises(ManifestError, match="train.tsv: not found"):
        commonvoice_manifest(root, "train")


def test_jsonl_round_trip_and_relative_paths(tmp_path):
    (tmp_path / "clips").mkdir()
    path = write_manifest(tmp_path / "m.jsonl", [
        {"audio_filepath": "clips/a.wav", "duration": 1.5, "text": "héllo", "speaker": "x"},
        {"audio_filepath": "/abs/b.wav", "duration": 2.0, "text": "world"},
    ])
    assert json.loads(path.read_text().splitlines()[0])["text"] == "héllo"
    entries = read_manifest(path)
    assert entries[0]["audio_filepath"] == str(tmp_path / "clips" / "a.wav")
    assert entries[1]["audio_filepath"] == "/abs/b.wav" and entries[0]["speaker"] == "x"


@pytest.mark.parametrize("line, message", [
    ("{not json", r"m.jsonl:2: invalid JSON"),
    ('{"audio_filepath": "a.wav", "text": "x"}', r"m.jsonl:2: missing duration"),
    ('{"audio_filepath": "a.wav", "duration": 1, "text": 5}', r"m.jsonl:2: text must be"),
    ('{"audio_filepath": "a.wav", "duration": "1.5", "text": "x"}',
     r"m.jsonl:2: duration must be a positive number of seconds, got '1.5'"),
    ('{"audio_filepath": "a.wav", "duration": -1, "text": "x"}', r"m.jsonl:2: duration must"),
    ('{"audio_filepath": "a.wav", "duration": true, "text": "x"}', r"m.jsonl:2: duration must"),
    ('{"audio_filepath": 7, "duration": 1, "text": "x"}', r"m.jsonl:2: audio_filepath must"),
    ('{"audio_filepath": "", "duration": 1, "text": "x"}', r"m.jsonl:2: audio_filepath must"),
    ('{"audio_filepath": "a.wav", "duration": 1, "text": "x", "speaker": [1]}',
     r"m.jsonl:2: speaker must be"),
    ("[1, 2]", r"m.jsonl:2: missing audio_filepath"),
])
def test_bad_manifest_lines_are_named(tmp_path, line, message):
    good = '{"audio_filepath": "a.wav", "duration": 1, "text": "x"}'
    (tmp_path / "m.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.jsonl")


def test_converter_cli(tmp_path, capsys):
    root = make_librispeech(tmp_path / "ls")
    assert main(["librispeech", str(root), str(tmp_path / "out" / "dev.jsonl")]) == 0
    assert "3 utterances" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "out" / "dev.jsonl")) == 3


def test_durations_are_checked_against_the_audio(tmp_path):
    sf.write(tmp_path / "a.wav", noise(2.0), 16000)
    entries = [{"audio_filepath": str(tmp_path / "a.wav"), "duration": d, "text": "x"}
               for d in (2.04, 9.0)]
    corrected = correct_durations(entries)
    assert [given for _, given in corrected] == [9.0]  # within 0.1 s: kept
    assert [e["duration"] for e in entries] == [2.04, 2.0]


def test_a_manifest_path_that_is_a_directory_is_named(tmp_path):
    with pytest.raises(ManifestError, match=f"^{tmp_path}: is a directory, not a manifest file$"):
        read_manifest(tmp_path)
