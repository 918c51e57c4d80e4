"""The training features of a speech run as TFRecord shards: ``prepare`` computes them in
worker processes and writes them (resuming after an interruption), ``train`` streams them.

Only the train split is sharded: it is the one that grows with the corpus (and with
speed perturbation and synthetic voices). Validation and test stay small and are
handled whole: ``features/val.npz``, and test features are computed by ``evaluate``
itself (their time is part of the real-time factor it reports).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_prep.audio_features import EPSILON, FrameStats
from data_prep.feature_shards import (
    OWN_NORMALIZATION,
    ShardFeatures,
    ShardTask,
    check_shard,
    compute_shard,
    default_workers,
    end_with_parent,
    finished,
    group_stats,
    marker,
    read_marker,
    shard_name,
)
from data_prep.file_io import atomic_file, atomic_savez, atomic_write_json
from data_prep.manifest import read_manifest
from data_prep.piece_vocabulary import Vocabulary
from data_prep.speech_config import FeatureConfig
from data_prep.speech_dataset import make_streaming_dataset, read_shards, write_shard
from models.ctc_frames import ctc_frames_needed, min_input_frames
from pipelines.speech.config import SpeechConfig
from pipelines.speech.data import fitting

GROUP_STATS = "train_stats.npz"  # (mean, std) [groups, F] of global/speaker normalization


def training_set(cfg: SpeechConfig, entries: list[dict]) -> tuple[list[dict], list[float]]:
    """The training utterances in shard order, with their speed factors: one copy of the
    manifest per speed perturbation factor (copy-major)."""
    speeds = cfg.data.speed_perturbation
    return ([e for _ in speeds for e in entries],
            [speed for speed in speeds for _ in entries])


def normalization_groups(cfg: FeatureConfig, speakers: list) -> tuple[list[int], int]:
    """Each utterance's normalization group and the number of groups: one for
    ``global``, one per speaker for ``speaker`` (an utterance without a speaker, and every
    utterance of the other normalizations, is normalized on its own in its shard)."""
    if cfg.normalization == "global":
        return [0] * len(speakers), 1
    if cfg.normalization != "speaker":
        return [OWN_NORMALIZATION] * len(speakers), 0
    ids: dict = {}
    groups = [OWN_NORMALIZATION if s is None else ids.setdefault(s, len(ids)) for s in speakers]
    return groups, len(ids)


def shard_paths(run, count: int) -> list[Path]:
    return [run.path("features", shard_name(k, count)) for k in range(count)]


def write_train_shards(cfg: SpeechConfig, run, entries: list[dict], vocab: Vocabulary,
                       fingerprint: str, resume: bool = True) -> list[FrameStats]:
    """Compute and write the training features as shards of ``cfg.shards.utterances``
    utterances, and return each normalization group's statistics.

    With ``resume``, shards an earlier, interrupted prepare with the same ``fingerprint``
    finished (its marker and checksum agree) are kept. The others are computed by
    ``cfg.shards.workers`` processes, and each is written atomically (a temporary file
    renamed into place, then its marker).
    """
    utterances, speeds = training_set(cfg, entries)
    # Each speed is a voice of its own (its spectrum is shifted).
    speakers = [None if e.get("speaker") is None else (e["speaker"], speed)
                for e, speed in zip(utterances, speeds, strict=True)]
    groups, group_count = normalization_groups(cfg.features, speakers)
    labels = [vocab.encode(e["text"], where=e["audio_filepath"]) for e in entries]
    size = cfg.shards.utterances
    count = math.ceil(len(utterances) / size)
    paths = shard_paths(run, count)
    tasks = [ShardTask(k, k * size, [e["audio_filepath"] for e in utterances[k * size:][:size]],
                       speeds[k * size:][:size], groups[k * size:][:size]) for k in range(count)]
    remove_stale_shards(run, set(paths))
    todo = [task for task in tasks
            if not (resume and finished(paths[task.index], fingerprint, task))]
    if len(todo) < count:
        print(f"[prepare] resuming: {count - len(todo)} of {count} train shards are done",
              flush=True)
    for result in computed(todo, cfg.features, cfg.shards.workers or default_workers()):
        task, shard = result.task, paths[result.task.index]
        with atomic_file(shard) as tmp:
            write_shard(tmp, result.features,
                        [labels[i % len(entries)] for i in range(task.first,
                                                                 task.first + len(task.paths))],
                        task.first, task.groups)
        # The marker last: a shard without one is never trusted.
        atomic_write_json(shard.with_suffix(".json"), marker(fingerprint, result, shard))
        print(f"[prepare] train shard {task.index + 1} of {count} written "
              f"({len(task.paths)} utterances)", flush=True)
    stats = group_stats([read_marker(p) for p in paths], group_count)
    if stats:
        mean, std = zip(*(s.mean_std() for s in stats), strict=True)
        atomic_savez(run.path("features", GROUP_STATS), mean=np.stack(mean), std=np.stack(std))
    else:
        run.path("features", GROUP_STATS).unlink(missing_ok=True)
    return stats


def remove_stale_shards(run, keep: set[Path]) -> None:
    """Shards (and markers, and temporary files) that are not of the current layout, and
    the in-memory cache of earlier versions."""
    folder = run.path("features")
    for path in [*folder.glob("train-*-of-*"), *folder.glob(".train-*.part")]:
        if path.with_suffix(".tfrecord") not in keep:
            path.unlink()
    run.path("features", "train.npz").unlink(missing_ok=True)


def computed(tasks: list[ShardTask], cfg: FeatureConfig, workers: int
             ) -> Iterator[ShardFeatures]:
    """``compute_shard`` of every task, in the order they finish: in this process for one
    worker (or one task), else in ``workers`` processes.

    Processes start with ``spawn``: forking a process that runs TensorFlow's thread pools
    can deadlock the child; they end when this process does, even killed. At most two
    tasks per worker are in flight, so finished shards wait in memory only until they
    are written.
    """
    if workers == 1 or len(tasks) <= 1:
        for task in tasks:
            yield compute_shard(task, cfg)
        return
    workers = min(workers, len(tasks))
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=end_with_parent, initargs=(os.getpid(),))
    queue, pending = iter(tasks), set()
    try:
        while True:
            while len(pending) < 2 * workers and (task := next(queue, None)) is not None:
                pending.add(pool.submit(compute_shard, task, cfg))
            if not pending:
                return
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: f.result().task.index):
                yield future.result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


@dataclass
class TrainShards:
    """What ``train`` needs to stream the shards: per training-set position the frame
    count, whether CTC can fit the transcript, and the fewest frames time stretching may
    leave; and the normalization of groups (``make_streaming_dataset``)."""

    files: list[Path]
    fingerprint: str
    lengths: np.ndarray
    keep: np.ndarray
    min_lengths: np.ndarray
    skipped: int
    mean: np.ndarray | None
    scale: np.ndarray | None

    def shuffle_buffer(self, megabytes: float, num_features: int) -> int:
        """Utterances of average length (of those kept) in ``megabytes`` of float32
        features, at least 1."""
        frames = float(np.mean(self.lengths[self.keep]))
        return max(1, int(megabytes * 2 ** 20 // (frames * num_features * 4)))

    def check(self) -> None:
        """ShardError naming the first shard that is corrupt (checksum), if one is."""
        for path in self.files:
            check_shard(path, self.fingerprint, checksum=True)


def train_shards(cfg: SpeechConfig, run, vocab: Vocabulary, fingerprint: str
                 ) -> TrainShards:
    """The run's training shards, checked against their markers (present, of the last
    prepare, not truncated: ShardError naming the shard otherwise)."""
    entries = read_manifest(run.path("data", "train.jsonl"))
    utterances, _ = training_set(cfg, entries)
    paths = shard_paths(run, math.ceil(len(utterances) / cfg.shards.utterances))
    lengths = [n for path in paths for n in check_shard(path, fingerprint)["lengths"]]
    # Per manifest entry, not per copy: only these counts are kept, not the label ids.
    needed = [ctc_frames_needed(vocab.encode(e["text"], where=e["audio_filepath"]))
              for e in entries] * len(cfg.data.speed_perturbation)
    keep, skipped = fitting("train", utterances, lengths, needed, cfg)
    min_lengths = [min_input_frames(n, cfg.model.conv_layers, cfg.model.conv_stride)
                   for n in needed]
    mean, scale = group_normalization(run)
    return TrainShards(paths, fingerprint, np.asarray(lengths), np.asarray(keep),
                       np.asarray(min_lengths, np.int32), skipped, mean, scale)


def group_normalization(run) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(mean, scale) [groups, F] of the global or per-speaker normalization that shards
    leave to their reader (None, None: there is none): an utterance of group ``g``
    becomes ``(features - mean[g]) / scale[g]``, the float32 arithmetic of ``normalize``."""
    if not run.path("features", GROUP_STATS).is_file():
        return None, None
    stats = np.load(run.path("features", GROUP_STATS))
    return stats["mean"], (stats["std"] + np.float32(EPSILON)).astype(np.float32)


def streaming_dataset(shards: TrainShards, cfg: SpeechConfig, seed: int) -> tf.data.Dataset:
    """One epoch's training batches (``seed``: the epoch's)."""
    num_features = cfg.features.num_features
    augment = cfg.augment if cfg.augment.active else None
    return make_streaming_dataset(
        [str(p) for p in shards.files], num_features, shards.lengths, shards.keep,
        shards.min_lengths, cfg.training.batch_size,
        shards.shuffle_buffer(cfg.shards.shuffle_buffer_mb, num_features), augment, seed,
        shards.mean, shards.scale)


def load_train_features(cfg: SpeechConfig, run) -> tuple[list[np.ndarray], list[list[int]]]:
    """Every training utterance's normalized features and label ids, in training-set
    order, read whole from the shards (for tests and analyses; ``train`` streams)."""
    utterances, _ = training_set(cfg, read_manifest(run.path("data", "train.jsonl")))
    paths = shard_paths(run, math.ceil(len(utterances) / cfg.shards.utterances))
    for path in paths:
        check_shard(path, run.require("prepare", "reading its features"))
    mean, scale = group_normalization(run)
    features, labels = [], []
    for x, y, _, group in read_shards([str(p) for p in paths],
                                      cfg.features.num_features).as_numpy_iterator():
        if group != OWN_NORMALIZATION:
            x = (x - mean[group]) / scale[group]  # what make_streaming_dataset computes
        features.append(x)
        labels.append(y.tolist())
    return features, labels
