"""File I/O shared by every layer: atomic writes and reading and writing text lines.

Atomic writes: readers see the old file or the complete new one, never a part. Lines are
split at ``\n`` only, never at the other separators ``str.splitlines`` knows.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from pathlib import Path

import numpy as np


class CorpusError(ValueError):
    """Malformed text input (or a text file that is missing); the message names the file
    and line."""


class ShardError(ValueError):
    """A prepared data shard (or its index or marker) is missing, truncated or corrupt;
    the message names it."""


@contextlib.contextmanager
def atomic_file(dest: str | Path):
    """Yield a temporary path beside ``dest``; rename it over ``dest`` if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would.
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process umask. It can only be read by setting it: the stand-in is the most
    restrictive mask, so a file another thread creates meanwhile is private, not public."""
    mask = os.umask(0o777)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and rename, never a partial file."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_savez(path, **arrays) -> Path:
    """``numpy.savez`` to ``path``, atomically (through a file object, so NumPy does not
    append ``.npz`` to the temporary name)."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def write_lines(path, lines: list[str]) -> Path:
    """Write one ``\n``-terminated line per string, atomically (``read_lines`` reads them
    back unchanged)."""
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def decode_lines(raw: bytes, name, first: int = 1) -> list[str]:
    """Split UTF-8 bytes into lines at ``\n`` only (``\r\n`` too), unstripped.

    Not ``str.splitlines``: it also breaks at U+2028, U+0085 and form feeds, which would
    silently split one sentence in two and misalign a parallel corpus. ``first``: the
    line number of the first line, for error messages.
    """
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for number, line in enumerate(lines, start=first):
        try:
            out.append(line.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as e:
            raise CorpusError(f"{name}:{number}: invalid UTF-8 ({e.reason} at byte {e.start})") from e
    return out


def read_lines(path: str | os.PathLike) -> list[str]:
    """Lines of a UTF-8 text file (optionally gzip-compressed), unstripped, split as
    ``decode_lines`` splits them."""
    return list(iter_lines(path))


def iter_lines(path: str | os.PathLike):
    """``read_lines``, streamed: one line at a time, never the whole file in memory."""
    path = Path(path)
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, not a text file")
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        # Binary files iterate at b"\n" only, as decode_lines splits.
        for number, raw in enumerate(f, start=1):
            yield from decode_lines(raw, path, number)
