import gzip

import pytest

from data_prep import download, multi30k
from data_prep.download import ChecksumError, DownloadError, sha256_of


def test_data_dir_is_used_first(tmp_path, monkeypatch):
    target = tmp_path / "data" / "some" / "file.txt"
    target.parent.mkdir(parents=True)
    target.write_text("hello")
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path / "data"))
    got = download.fetch("some/file.txt", "http://invalid.example/file.txt", None)
    assert got == target


def test_download_verifies_checksum_and_leaves_nothing_on_mismatch(tmp_path, monkeypatch):
    source = tmp_path / "upstream.txt"
    source.write_bytes(b"payload")
    monkeypatch.setenv(download.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.DATA_DIR_ENV, raising=False)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        download.fetch("x/file.txt", source.as_uri(), "0" * 64)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    got = download.fetch("x/file.txt", source.as_uri(), sha256_of(source))
    assert got.read_bytes() == b"payload"
    assert got.parent == tmp_path / "cache" / "x"


def test_failed_download_names_the_url_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(download.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.DATA_DIR_ENV, raising=False)
    missing = (tmp_path / "upstream" / "gone.txt").as_uri()
    with pytest.raises(DownloadError, match=f"cannot download {missing}.*data directory"):
        download.fetch("x/gone.txt", missing, None)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_multi30k_checksums_match_local_copy(multi30k_dir):
    raw = multi30k_dir / multi30k.RELATIVE_DIR
    for name, digest in multi30k.SHA256.items():
        assert sha256_of(raw / name) == digest, name


def test_multi30k_missing_file_is_downloaded_to_cache(tmp_path, monkeypatch):
    # Upstream is replaced by a local folder with the same layout; the real URL is kept
    # in the module for real users.
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    payload = gzip.compress(b"Ein Hund.\n")
    (upstream / "val.de.gz").write_bytes(payload)
    monkeypatch.setattr(multi30k, "UPSTREAM", upstream.as_uri())
    monkeypatch.setitem(multi30k.SHA256, "val.de.gz", sha256_of(upstream / "val.de.gz"))
    monkeypatch.setenv(download.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.DATA_DIR_ENV, raising=False)
    path = multi30k.multi30k_file("val", "de")
    assert path == tmp_path / "cache" / multi30k.RELATIVE_DIR / "val.de.gz"
    assert path.read_bytes() == payload
