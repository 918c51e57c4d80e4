"""Training features in shards: the feature extraction tasks (one per shard, run in
worker processes), their statistics, and the markers that vouch for finished shards.

NumPy and librosa only, no TensorFlow: a worker process imports this module, and
TensorFlow would cost it seconds and hundreds of MB. The main process writes the shards
(TFRecord, ``speech_dataset.write_shard``) and their markers.

A shard ``train-00003-of-00012.tfrecord`` holds utterances ``3 * size .. 4 * size - 1``
of the training set (speed-perturbed copies included, copy-major). Its marker
``train-00003-of-00012.json`` is written after it, atomically, and records what prepare
made it for (a fingerprint), its first utterance, its utterance count, its size and
SHA-256, the frame count of each utterance (train picks and buckets utterances by them
without reading the shards) and the statistics of its frames (global and per-speaker
normalization statistics add up over the markers, without rereading the shards).

Shards hold features that still need their corpus-wide normalization step: global and
per-speaker statistics depend on every shard, so normalized shards could only be written
after all features were computed (held in memory, or written twice). Utterances whose
normalization is their own (``utterance``, ``speech``, ``none``, and ``speaker`` for an
utterance without a speaker) are normalized here, with exactly the code of the
in-memory path; the others (``group`` >= 0) keep raw features, and ``train`` applies
their group's (mean, std) as it reads them, the float32 arithmetic ``normalize`` does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.audio_features import (
    FrameStats,
    compute_features,
    load_audio,
    normalize,
    speech_frames,
    speech_stats,
)
from data_prep.download import sha256_of
from data_prep.file_io import ShardError
from data_prep.speech_config import FeatureConfig

OWN_NORMALIZATION = -1  # the group of an utterance normalized on its own, in its shard
PARENT_POLL_SECONDS = 0.5  # how soon a worker notices that its prepare is gone


def shard_name(index: int, count: int, suffix: str = ".tfrecord") -> str:
    return f"train-{index:05d}-of-{count:05d}{suffix}"


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def end_with_parent(parent: int) -> None:
    """Worker initializer: end this worker process once ``parent`` (the prepare that
    started it) is gone, however it ended (SIGKILL included), instead of computing on for
    nobody while holding its memory. A daemon thread polls the parent's id: an orphan is
    adopted by another process."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


@dataclass
class ShardTask:
    """The utterances of one shard: audio files, their speed factors and normalization
    groups (``OWN_NORMALIZATION``, or an index into the corpus-wide statistics)."""

    index: int
    first: int  # the training-set position of its first utterance
    paths: list[str]
    speeds: list[float]
    groups: list[int]


@dataclass
class ShardFeatures:
    """What a task computed: one [frames, features] array per utterance, and the
    statistics of each normalization group's frames."""

    task: ShardTask
    features: list[np.ndarray]
    stats: dict[int, FrameStats]


def compute_shard(task: ShardTask, cfg: FeatureConfig) -> ShardFeatures:
    """The features of ``task``'s utterances (in a worker process)."""
    features, frames = [], {}
    for path, speed, group in zip(task.paths, task.speeds, task.groups, strict=True):
        raw = compute_features(load_audio(path, cfg.sample_rate, speed), cfg)
        if group != OWN_NORMALIZATION:
            features.append(raw)
            # As speech_stats and global_stats count them: a speaker's speech frames.
            frames.setdefault(group, []).append(
                raw[speech_frames(raw, cfg)] if cfg.normalization == "speaker" else raw)
        elif cfg.normalization == "speaker":  # no speaker: normalized like ``speech``
            features.append(normalize(raw, cfg, speech_stats([raw], cfg)))
        else:
            features.append(normalize(raw, cfg))
    stats = {group: FrameStats.of(np.concatenate(parts)) for group, parts in frames.items()}
    return ShardFeatures(task, features, stats)


def marker(fingerprint: str, result: ShardFeatures, shard: Path) -> dict:
    """The marker of a shard just written from ``result``."""
    return {"fingerprint": fingerprint, "first": result.task.first,
            "utterances": len(result.features), "bytes": shard.stat().st_size,
            "sha256": sha256_of(shard), "lengths": [len(f) for f in result.features],
            "stats": {str(g): s.to_json() for g, s in sorted(result.stats.items())}}


def read_marker(shard: Path) -> dict | None:
    """The marker of ``shard``, or None if there is none (or only a damaged one)."""
    try:
        return json.loads(shard.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def finished(shard: Path, fingerprint: str, task: ShardTask) -> bool:
    """Whether ``shard`` is complete and intact for ``task``: its marker is this
    prepare's, and the file has the size and checksum the marker records."""
    mark = read_marker(shard)
    return (mark is not None and mark.get("fingerprint") == fingerprint
            and mark.get("first") == task.first and mark.get("utterances") == len(task.paths)
            and shard.is_file() and shard.stat().st_size == mark["bytes"]
            and sha256_of(shard) == mark["sha256"])


def check_shard(shard: Path, fingerprint: str, checksum: bool = False) -> dict:
    """The marker of a shard of a finished prepare; ShardError naming it if the shard or
    its marker is missing or from another prepare, the file is not the size the marker
    records (truncated), or, with ``checksum``, its SHA-256 differs (corrupt). The way
    out is ``prepare --force``: plain ``prepare`` would find itself up to date."""
    mark = read_marker(shard)
    if mark is None or mark.get("fingerprint") != fingerprint:
        raise ShardError(f"{shard}: no marker of the last prepare beside it; rerun "
                         "prepare --force")
    if not shard.is_file():
        raise ShardError(f"{shard}: feature shard missing; rerun prepare --force")
    size = shard.stat().st_size
    if size != mark["bytes"]:
        raise ShardError(f"{shard}: truncated or altered feature shard ({size} bytes, "
                         f"{mark['bytes']} written); rerun prepare --force")
    if checksum and sha256_of(shard) != mark["sha256"]:
        raise ShardError(f"{shard}: corrupt feature shard (its SHA-256 differs from the one "
                         "written); rerun prepare --force")
    return mark


def group_stats(marks: list[dict], groups: int) -> list[FrameStats]:
    """Each normalization group's statistics over all the shards, added in shard order
    (so the result does not depend on which worker finished first)."""
    total: list[FrameStats | None] = [None] * groups
    for mark in marks:
        for group, data in mark["stats"].items():
            stats = FrameStats.from_json(data)
            g = int(group)
            total[g] = stats if total[g] is None else total[g] + stats
    return total
