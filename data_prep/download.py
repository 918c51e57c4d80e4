"""Finding dataset files locally, or downloading them with checksum verification.

Loaders ask for a file by its path in the upstream layout (for example
``multi30k/data/task1/raw/train.de.gz``). We look in the data directory first
(``--data-dir`` or ``$PIPELINES_DATA_DIR``), then in the download cache, and only then
download it from upstream, verifying its sha256 before it becomes visible.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from data_prep.file_io import atomic_file

DATA_DIR_ENV = "PIPELINES_DATA_DIR"
CACHE_DIR_ENV = "PIPELINES_CACHE_DIR"


class DownloadError(RuntimeError):
    """A dataset file could not be downloaded (network, HTTP or file-system failure)."""


class ChecksumError(DownloadError):
    """A downloaded file does not have the expected sha256."""


def data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The user's data directory: the explicit argument, else ``$PIPELINES_DATA_DIR``."""
    value = explicit or os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Where downloads go: ``$PIPELINES_CACHE_DIR`` or ``~/.cache/rnn-seq2seq-toolkit``."""
    value = os.environ.get(CACHE_DIR_ENV)
    if value:
        return Path(value).expanduser()
    return Path.home() / ".cache" / "rnn-seq2seq-toolkit"


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str | None) -> Path:
    """Download ``url`` to ``dest`` atomically; raise ChecksumError on a mismatch and
    DownloadError when the transfer fails.

    The bytes go to a temporary file beside ``dest`` that is renamed only after the
    checksum matched, so an interrupted or corrupt download never leaves a partial file.
    """
    with atomic_file(dest) as tmp:
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except OSError as e:  # URLError, HTTPError and timeouts are all OSErrors
            raise DownloadError(
                f"cannot download {url} to {dest}: {e}; put the file in the data directory "
                f"(--data-dir or ${DATA_DIR_ENV}) in the upstream layout instead"
            ) from e
        if sha256 is not None:
            actual = sha256_of(tmp)
            if actual != sha256:
                raise ChecksumError(
                    f"checksum mismatch for {url}: expected sha256 {sha256}, got {actual}; "
                    "the download was discarded"
                )
    return dest


def _local(relative_path: str, exists: Callable[[Path], bool], data_dir_arg) -> Path | None:
    """``relative_path`` in the data directory, else in the download cache, if ``exists``
    says it is there."""
    base = data_dir(data_dir_arg)
    for root in ([base] if base is not None else []) + [cache_dir()]:
        if exists(root / relative_path):
            return root / relative_path
    return None


def fetch(relative_path: str, url: str, sha256: str | None, data_dir_arg=None) -> Path:
    """Return a local path to ``relative_path`` (upstream layout), downloading if needed."""
    local = _local(relative_path, Path.is_file, data_dir_arg)
    if local is not None:
        return local
    base, cached = data_dir(data_dir_arg), cache_dir() / relative_path
    where = f"{base / relative_path} (data directory)" if base else f"${DATA_DIR_ENV} is not set"
    print(f"[download] {relative_path} not found locally ({where}); fetching {url}")
    return download(url, cached, sha256)


def extract_files(archive: Path, dest: Path, name_of: Callable[[list[str]], str | None]) -> int:
    """Extract the regular-file members of a tar archive that ``name_of`` names into
    ``dest`` (``name_of(member path parts)`` -> a relative path under ``dest``, or None
    to skip).

    Members are written only under the names ``name_of`` gives, and a name with an empty,
    ``.`` or ``..`` component is refused, so a malicious member path cannot escape
    ``dest``. Files go to a temporary folder renamed to ``dest`` at the
    end: an interrupted extraction never looks like a complete dataset. Returns the
    number of files extracted (0 leaves no ``dest``).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        count = 0
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = name_of(member.name.split("/")) if member.isfile() else None
                if name:
                    if any(part in ("", ".", "..") for part in name.split("/")):
                        raise DownloadError(f"{archive}: unsafe member path {member.name!r}")
                    (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(tmp / name, "wb") as out:
                        shutil.copyfileobj(src, out)
                    count += 1
        if count:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return count


def fetch_folder(relative_dir: str, archive: str, url: str,
                 name_of: Callable[[list[str]], str | None], what: str,
                 data_dir_arg=None) -> Path:
    """A dataset folder in the upstream layout: ``relative_dir`` in the data directory or
    in the download cache, else extracted into the cache from its release archive
    (``archive``, found or downloaded as ``fetch`` does, with no published checksum to
    verify) with ``extract_files(..., name_of)``; ``what`` names the files it must hold."""
    local = _local(relative_dir, Path.is_dir, data_dir_arg)
    if local is not None:
        return local
    cached = cache_dir() / relative_dir
    path = fetch(archive, url, None, data_dir_arg)
    if not extract_files(path, cached, name_of):
        raise DownloadError(f"{path}: the archive holds no {what}")
    return cached
