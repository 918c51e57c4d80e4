"""Reading parallel corpora: two aligned text files, or one tab-separated file.

Every problem is reported with the file (and line) it comes from; nothing is silently
truncated or skipped except empty and over-long pairs, whose counts are returned.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path


class CorpusError(ValueError):
    """Malformed corpus input; the message names the file and line."""


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
    """Lines of a UTF-8 text file (optionally gzip-compressed), unstripped."""
    path = Path(path)
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, not a text file")
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return decode_lines(f.read(), path)


@dataclass
class ParallelCorpus:
    """Aligned source/target sentences and what was dropped while reading them."""

    source: list[str]
    target: list[str]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)


def read_parallel(source_path, target_path) -> ParallelCorpus:
    """Read two aligned files; their line counts must match."""
    source = [line.strip() for line in read_lines(source_path)]
    target = [line.strip() for line in read_lines(target_path)]
    if len(source) != len(target):
        raise CorpusError(
            f"line counts differ: {source_path} has {len(source)} lines, "
            f"{target_path} has {len(target)} lines"
        )
    return ParallelCorpus(source, target)


def read_tsv(path) -> ParallelCorpus:
    """Read ``source<TAB>target`` lines; every line must have exactly one tab."""
    source, target = [], []
    for number, line in enumerate(read_lines(path), start=1):
        # A blank line is an empty pair (dropped and counted later), not a malformed one.
        parts = line.split("\t") if line.strip() else ["", ""]
        if len(parts) != 2:
            raise CorpusError(
                f"{path}:{number}: expected 2 tab-separated fields (source, target), "
                f"found {len(parts)}"
            )
        source.append(parts[0].strip())
        target.append(parts[1].strip())
    return ParallelCorpus(source, target)


def drop_empty(corpus: ParallelCorpus) -> ParallelCorpus:
    """Remove pairs where either side is empty, counting them under ``dropped['empty']``."""
    keep = [i for i, (s, t) in enumerate(zip(corpus.source, corpus.target)) if s and t]
    dropped = dict(corpus.dropped)
    dropped["empty"] = dropped.get("empty", 0) + len(corpus) - len(keep)
    return ParallelCorpus(
        [corpus.source[i] for i in keep], [corpus.target[i] for i in keep], dropped
    )
