"""LibriSpeech on a generated fixture in the upstream layout (the real corpus cannot be
downloaded here)."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from data_prep import librispeech
from data_prep.download import DownloadError
from pipelines import speech
from tests.helpers import serve_downloads

CONFIG = Path(__file__).resolve().parent.parent / "pipelines" / "configs" / "librispeech_100.yaml"
SUBSETS = {"train": "train-clean-100", "val": "dev-clean", "test": "test-clean"}


def write_subset(root: Path, subset: str, speakers=(19, 26), utterances=3) -> Path:
    """``LibriSpeech/<subset>/<speaker>/<chapter>/``: FLAC tones and a transcript file."""
    rng = np.random.default_rng(len(subset))
    folder = root / "LibriSpeech" / subset
    for speaker in speakers:
        chapter = folder / str(speaker) / "198"
        chapter.mkdir(parents=True)
        lines = []
        for i in range(utterances):
            uid = f"{speaker}-198-{i:04d}"
            t = np.arange(int(16000 * (0.6 + 0.2 * i))) / 16000
            sf.write(chapter / f"{uid}.flac",
                     0.3 * np.sin(2 * np.pi * rng.uniform(200, 900) * t), 16000)
            lines.append(f"{uid} {'HELLO WORLD' if i % 2 else 'IT IS'}")
        (chapter / f"{speaker}-198.trans.txt").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def librispeech_data_dir(tmp_path) -> Path:
    for subset in SUBSETS.values():
        write_subset(tmp_path / "data", subset)
    return tmp_path / "data"


def test_subset_entries_from_the_data_directory(librispeech_data_dir):
    entries = librispeech.subset_entries("dev-clean", librispeech_data_dir)
    assert len(entries) == 6 and {e["speaker"] for e in entries} == {"19", "26"}
    assert entries[1]["text"] == "HELLO WORLD" and entries[0]["audio_filepath"].endswith(".flac")
    assert entries[0]["duration"] == pytest.approx(0.6)


def _archive(folder: Path, extra_member: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=f"LibriSpeech/{folder.name}")
        if extra_member:
            data = b"x"
            info = tarfile.TarInfo(extra_member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_subset_archive_is_downloaded_and_unpacked_into_the_cache(tmp_path, monkeypatch):
    upstream = write_subset(tmp_path / "upstream", "dev-clean")
    requested = serve_downloads(monkeypatch, tmp_path / "cache", _archive(upstream))
    folder = librispeech.subset_dir("dev-clean", tmp_path / "empty_data_dir")
    assert requested == [librispeech.URL.format(subset="dev-clean")]
    assert folder == tmp_path / "cache" / "LibriSpeech" / "dev-clean"
    assert sorted(p.relative_to(folder) for p in folder.rglob("*.flac")) == \
        sorted(p.relative_to(upstream) for p in upstream.rglob("*.flac"))
    assert len(librispeech.subset_entries("dev-clean", None)) == 6 and len(requested) == 1


def test_an_archive_member_outside_the_subset_is_refused(tmp_path, monkeypatch):
    upstream = write_subset(tmp_path / "upstream", "dev-clean")
    serve_downloads(monkeypatch, tmp_path / "cache",
                    _archive(upstream, "LibriSpeech/dev-clean/../evil/x"))
    with pytest.raises(DownloadError, match="unsafe member path"):
        librispeech.subset_dir("dev-clean", tmp_path / "empty_data_dir")
    assert not (tmp_path / "cache" / "LibriSpeech" / "dev-clean").exists()
    assert not list((tmp_path / "cache").rglob("x"))


def test_config_prepares_the_corpus(librispeech_data_dir, tmp_path):
    run_dir = tmp_path / "run"
    assert speech.main(["prepare", "--config", str(CONFIG), "--run-dir", str(run_dir),
                        "--data-dir", str(librispeech_data_dir), "--set", "shards.workers=1"]) == 0
    report = json.loads((run_dir / "data" / "report.json").read_text())
    assert [report[split]["utterances"] for split in SUBSETS] == [6, 6, 6]
    assert report["train"]["speakers"] == 2
    manifest = [json.loads(line) for line in
                (run_dir / "data" / "train.jsonl").read_text().splitlines()]
    assert {m["text"] for m in manifest} == {"hello world", "it is"}  # lowercased
