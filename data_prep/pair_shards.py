"""Tokenized sentence pairs in TFRecord shards: written by translation ``prepare`` from a
stream of pairs, streamed back by ``train`` with ``tf.data``.

A corpus far larger than memory passes through in one pass: ``write_pair_shards`` holds
one pair at a time, and the reader holds a shuffle buffer. Each shard is written under a
temporary name and renamed when complete; an index (``<prefix>.shards.json``) lists every
shard with its pair count and SHA-256, and ``verified_shards`` checks them before
training, so a truncated or corrupt shard is an error naming it, never a silent partial
epoch.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import tensorflow as tf

from data_prep.download import sha256_of
from data_prep.file_io import ShardError, atomic_file, atomic_write_json


def index_path(directory: Path, prefix: str) -> Path:
    return Path(directory) / f"{prefix}.shards.json"


def _example(source: list[int], target: list[int]) -> bytes:
    feature = {name: tf.train.Feature(int64_list=tf.train.Int64List(value=ids))
               for name, ids in (("source", source), ("target", target))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_pair_shards(pairs: Iterable[tuple[list[int], list[int]]], directory: Path,
                      prefix: str, pairs_per_shard: int) -> list[dict]:
    """Write ``(source ids, target ids)`` pairs into ``<prefix>-00000.tfrecord``, ... of
    ``pairs_per_shard`` pairs each (the last may be smaller), then the index. Returns the
    index entries ``{"file", "pairs", "sha256"}``."""
    directory = Path(directory)
    for stale in directory.glob(f"{prefix}-*.tfrecord"):
        stale.unlink()
    shards, pairs = [], iter(pairs)
    while (first := next(pairs, None)) is not None:
        path = directory / f"{prefix}-{len(shards):05d}.tfrecord"
        count = 0
        # Renamed into place only once complete: an error leaves no partial shard.
        with atomic_file(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
            for source, target in itertools.chain([first],
                                                  itertools.islice(pairs, pairs_per_shard - 1)):
                writer.write(_example(source, target))
                count += 1
        shards.append({"file": path.name, "pairs": count, "sha256": sha256_of(path)})
    atomic_write_json(index_path(directory, prefix), {"shards": shards})
    return shards


def verified_shards(directory: Path, prefix: str) -> list[Path]:
    """The shard paths of ``<prefix>.shards.json``, each checked against its size and
    checksum; a missing, truncated or altered shard is a ``ShardError`` naming it."""
    index = index_path(directory, prefix)
    try:
        shards = json.loads(index.read_text())["shards"]
    except (OSError, ValueError, KeyError) as e:
        raise ShardError(f"{index}: missing or unreadable shard index ({e}); rerun prepare") \
            from None
    paths = []
    for shard in shards:
        path = Path(directory) / shard["file"]
        if not path.is_file():
            raise ShardError(f"{path}: shard missing; rerun prepare with --force")
        if sha256_of(path) != shard["sha256"]:
            raise ShardError(f"{path}: shard is truncated or corrupt (checksum differs from "
                             f"{index.name}); rerun prepare with --force")
        paths.append(path)
    return paths


def _parse(record):
    spec = {name: tf.io.RaggedFeature(tf.int64) for name in ("source", "target")}
    pair = tf.io.parse_single_example(record, spec)
    return tf.cast(pair["source"], tf.int32), tf.cast(pair["target"], tf.int32)


def pair_dataset(paths: list[Path], seed: int | None, shuffle: bool,
                 shuffle_buffer: int) -> tf.data.Dataset:
    """``(source ids, target ids)`` int32 pairs read from ``paths``: with ``shuffle``,
    the shard order and (within ``shuffle_buffer`` pairs) the pair order are shuffled
    with ``seed``; the same seed gives the same order."""
    files = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=False)
    # Several shards read at once mix their pairs; deterministic keeps the order seeded.
    pairs = files.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(paths)),
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pairs = pairs.map(_parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        pairs = pairs.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    return pairs
