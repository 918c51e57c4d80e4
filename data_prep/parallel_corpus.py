"""Reading parallel corpora: two aligned text files, or one tab-separated file.

Every problem is reported with the file (and line) it comes from; nothing is silently
truncated or skipped except empty and over-long pairs, whose counts are returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.file_io import CorpusError, iter_lines

__all__ = ["CorpusError", "ParallelCorpus", "drop_empty", "iter_parallel", "iter_tsv",
           "read_parallel", "read_tsv"]


@dataclass
class ParallelCorpus:
    """Aligned source/target sentences and what was dropped while reading them."""

    source: list[str]
    target: list[str]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    @classmethod
    def from_pairs(cls, pairs) -> ParallelCorpus:
        """The corpus of an iterable of ``(source, target)`` pairs."""
        corpus = cls([], [])
        for s, t in pairs:
            corpus.source.append(s)
            corpus.target.append(t)
        return corpus


def read_parallel(source_path, target_path) -> ParallelCorpus:
    """Read two aligned files; their line counts must match."""
    return ParallelCorpus.from_pairs(iter_parallel(source_path, target_path))


def iter_parallel(source_path, target_path):
    """``(source, target)`` pairs of two aligned files, stripped, streamed; the files'
    line counts must match (checked when the shorter one ends)."""
    source, target = iter_lines(source_path), iter_lines(target_path)
    count = 0
    for s in source:
        t = next(target, None)
        if t is None:
            raise _count_mismatch(source_path, count + 1 + sum(1 for _ in source),
                                  target_path, count)
        count += 1
        yield s.strip(), t.strip()
    rest = sum(1 for _ in target)
    if rest:
        raise _count_mismatch(source_path, count, target_path, count + rest)


def _count_mismatch(source_path, source_lines, target_path, target_lines) -> CorpusError:
    return CorpusError(f"line counts differ: {source_path} has {source_lines} lines, "
                       f"{target_path} has {target_lines} lines")


def read_tsv(path) -> ParallelCorpus:
    """Read ``source<TAB>target`` lines; every line must have exactly one tab."""
    return ParallelCorpus.from_pairs(iter_tsv(path))


def iter_tsv(path):
    """``(source, target)`` pairs of a ``source<TAB>target`` file, stripped, streamed."""
    for number, line in enumerate(iter_lines(path), start=1):
        # A blank line is an empty pair (dropped and counted later), not a malformed one.
        parts = line.split("\t") if line.strip() else ["", ""]
        if len(parts) != 2:
            raise CorpusError(
                f"{path}:{number}: expected 2 tab-separated fields (source, target), "
                f"found {len(parts)}"
            )
        yield parts[0].strip(), parts[1].strip()


def drop_empty(corpus: ParallelCorpus) -> ParallelCorpus:
    """Remove pairs where either side is empty, counting them under ``dropped['empty']``."""
    keep = [i for i, (s, t) in enumerate(zip(corpus.source, corpus.target)) if s and t]
    dropped = dict(corpus.dropped)
    dropped["empty"] = dropped.get("empty", 0) + len(corpus) - len(keep)
    return ParallelCorpus(
        [corpus.source[i] for i in keep], [corpus.target[i] for i in keep], dropped
    )
