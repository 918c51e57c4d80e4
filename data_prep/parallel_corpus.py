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


def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a UTF-8 text file (optionally gzip-compressed) into stripped lines."""
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for number, line in enumerate(lines, start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(f"{path}:{number}: invalid UTF-8 ({e.reason} at byte {e.start})") from e
        out.append(text.rstrip("\r").strip())
    return out


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
    source, target = read_lines(source_path), read_lines(target_path)
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
        parts = line.split("\t")
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
