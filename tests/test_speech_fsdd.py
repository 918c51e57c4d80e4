import io
import tarfile
from collections import Counter

import numpy as np
import pytest
import soundfile as sf

from data_prep import download, fsdd
from data_prep.digit_strings import DigitStringConfig, make_digit_strings
from tests.helpers import serve_downloads

SPEAKERS = ("ann", "bob", "cy")


def make_fsdd(folder, speakers=SPEAKERS, takes=12):
    """A fake recordings/ folder: digit d of take i is a d-dependent tone of 0.2 s."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(1600) / 8000
    for speaker in speakers:
        for digit in range(10):
            for index in range(takes):
                wave = 0.1 * np.sin(2 * np.pi * (200 + 100 * digit + index) * t)
                sf.write(folder / f"{digit}_{speaker}_{index}.wav", wave, 8000)
    return folder


def test_recordings_are_parsed_not_assumed(tmp_path):
    folder = make_fsdd(tmp_path / "recordings", speakers=("ann", "bob"), takes=3)
    (folder / "README.md").write_text("not a recording")
    recordings = fsdd.list_recordings(folder)
    assert len(recordings) == 2 * 10 * 3
    first = recordings[0]
    assert (first.index, first.speaker, first.digit, first.text) == (0, "ann", 0, "zero")
    assert recordings[-1].path.name == "9_bob_2.wav"
    with pytest.raises(fsdd.FSDDError, match="no FSDD recordings"):
        fsdd.list_recordings(tmp_path)


def test_standard_split_by_take(tmp_path):
    recordings = fsdd.list_recordings(make_fsdd(tmp_path / "r"))
    splits = fsdd.split_recordings(recordings, test_takes=5, val_takes=2)
    assert {r.index for r in splits["test"]} == set(range(5))
    assert {r.index for r in splits["val"]} == {5, 6}
    assert {r.index for r in splits["train"]} == set(range(7, 12))
    for items in splits.values():
        assert {r.speaker for r in items} == set(SPEAKERS)
        assert {r.digit for r in items} == set(range(10))


def test_leave_speakers_out_split(tmp_path):
    recordings = fsdd.list_recordings(make_fsdd(tmp_path / "r"))
    splits = fsdd.split_recordings(recordings, val_takes=2, test_speakers=["bob"])
    assert {r.speaker for r in splits["test"]} == {"bob"} and len(splits["test"]) == 120
    assert {r.speaker for r in splits["train"] + splits["val"]} == {"ann", "cy"}
    assert {r.index for r in splits["val"]} == {0, 1}
    with pytest.raises(fsdd.FSDDError, match=r"unknown speakers \['zed'\]"):
        fsdd.split_recordings(recordings, test_speakers=["zed"])
    with pytest.raises(fsdd.FSDDError, match="no speaker to train on"):
        fsdd.split_recordings(recordings, test_speakers=list(SPEAKERS))


def release_archive(tmp_path) -> bytes:
    """A tarball laid out like the upstream GitHub release archive."""
    make_fsdd(tmp_path / "src" / "recordings", speakers=("ann",), takes=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        root = f"free-spoken-digit-dataset-{fsdd.VERSION}"
        tar.add(tmp_path / "src" / "recordings", arcname=f"{root}/recordings")
        readme = b"FSDD"
        info = tarfile.TarInfo(f"{root}/README.md")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return buffer.getvalue()


def test_download_extracts_recordings_into_the_cache(tmp_path, monkeypatch):
    requested = serve_downloads(monkeypatch, tmp_path / "cache", release_archive(tmp_path))
    folder = fsdd.recordings_dir(tmp_path / "empty_data_dir")
    assert requested == [fsdd.ARCHIVE_URL]
    assert folder == tmp_path / "cache" / "fsdd" / "recordings"
    assert len(fsdd.list_recordings(folder)) == 20
    assert not list(folder.parent.glob(".recordings.*"))  # the temporary folder is gone
    # Found in the cache from now on: no second download.
    assert fsdd.recordings_dir(None) == folder and len(requested) == 1


def test_data_directory_wins_over_cache_and_download(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", pytest.fail)
    make_fsdd(tmp_path / "data" / "fsdd" / "recordings", speakers=("ann",), takes=1)
    assert fsdd.recordings_dir(tmp_path / "data") == tmp_path / "data" / "fsdd" / "recordings"


def test_digit_strings_are_deterministic_single_speaker_and_from_given_takes(tmp_path):
    recordings = fsdd.list_recordings(make_fsdd(tmp_path / "r"))
    test_takes = [r for r in recordings if r.index < 2]
    cfg = DigitStringConfig(min_digits=1, max_digits=7, noise_dbfs=-60)
    a = make_digit_strings(test_takes, 40, cfg, 8000, tmp_path / "a", seed=(0, 2))
    b = make_digit_strings(test_takes, 40, cfg, 8000, tmp_path / "b", seed=(0, 2))
    c = make_digit_strings(test_takes, 40, cfg, 8000, tmp_path / "c", seed=(1, 2))
    assert [e["text"] for e in a] == [e["text"] for e in b] != [e["text"] for e in c]
    np.testing.assert_array_equal(sf.read(a[3]["audio_filepath"])[0],
                                  sf.read(b[3]["audio_filepath"])[0])
    by_name = {r.path.name: r for r in recordings}
    lengths = set()
    for item in a:
        sources = [by_name[name] for name in item["sources"]]
        assert {r.speaker for r in sources} == {item["speaker"]}
        assert all(r.index < 2 for r in sources)
        assert item["text"] == " ".join(fsdd.DIGIT_WORDS[int(d)] for d in item["digits"])
        assert item["digits"] == "".join(str(r.digit) for r in sources)
        lengths.add(len(sources))
        audio, rate = sf.read(item["audio_filepath"])
        assert rate == 8000 and abs(len(audio) / rate - item["duration"]) < 1e-3
        # Each digit is 0.2 s, each gap 0.05-0.4 s and each edge at most 0.2 s.
        n = len(sources)
        assert 0.2 * n + 0.05 * (n - 1) - 1e-3 <= item["duration"] <= 0.6 * n + 1e-3
    assert lengths <= set(range(1, 8)) and len(lengths) >= 5
    per_speaker = Counter(item["speaker"] for item in a)
    assert len(per_speaker) == len({r.speaker for r in test_takes})
    assert max(per_speaker.values()) - min(per_speaker.values()) <= 1


def test_noise_fills_the_gaps(tmp_path):
    recordings = fsdd.list_recordings(make_fsdd(tmp_path / "r", speakers=("ann",), takes=1))
    quiet = DigitStringConfig(noise_dbfs=None, max_edge=0.2, min_gap=0.2, max_gap=0.2)
    noisy = DigitStringConfig(noise_dbfs=-40, max_edge=0.2, min_gap=0.2, max_gap=0.2)
    silent = make_digit_strings(recordings, 1, quiet, 8000, tmp_path / "q", seed=0)[0]
    hiss = make_digit_strings(recordings, 1, noisy, 8000, tmp_path / "n", seed=0)[0]
    a, _ = sf.read(silent["audio_filepath"])
    b, _ = sf.read(hiss["audio_filepath"])
    assert len(a) == len(b)
    gaps = a == 0
    assert gaps.sum() > 0.1 * 8000  # zero-valued samples: the edges and gaps
    assert 0.005 < np.sqrt(np.mean(b[gaps] ** 2)) < 0.02  # -40 dBFS is 0.01 RMS


def test_digit_strings_record_where_each_word_ends(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    t = np.arange(800) / 8000
    for digit in range(10):  # 0.1 s of tone, then 0.1 s of silence inside the recording
        wave = np.r_[0.1 * np.sin(2 * np.pi * (300 + 50 * digit) * t), np.zeros(800)]
        sf.write(folder / f"{digit}_ann_0.wav", wave, 8000)
    quiet = DigitStringConfig(noise_dbfs=None, min_digits=2, max_digits=5)
    for item in make_digit_strings(fsdd.list_recordings(folder), 5, quiet, 8000,
                                   tmp_path / "s", seed=0):
        audio, _ = sf.read(item["audio_filepath"])
        loud = np.flatnonzero(np.abs(audio) > 1e-3)
        tone_ends = loud[np.r_[np.diff(loud) > 100, True]] + 1  # the last loud sample of each
        assert len(item["word_ends"]) == len(tone_ends) == len(item["digits"])
        # The word ends with its tone, not with the recording's silence (25 ms frames).
        np.testing.assert_allclose(np.array(item["word_ends"]) * 8000, tone_ends, atol=200)
