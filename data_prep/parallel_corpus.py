"""Reading parallel corpora: two aligned text files, or one tab-separated file.

Every problem is reported with the file (and line) it comes from; nothing is silently
truncated or skipped except empty and over-long pairs, whose counts are returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.file_io import CorpusError, read_lines

__all__ = ["CorpusError", "ParallelCorpus", "drop_empty", "read_parallel", "read_tsv"]


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
