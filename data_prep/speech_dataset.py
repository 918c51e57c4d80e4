"""``tf.data`` input pipelines for CTC speech recognition, with SpecAugment.

Training batches are ``({"features": [B, T, F], "feature_lengths": [B]}, labels [B, L])``
with labels padded with ``LABEL_PAD`` (-1). Utterances are grouped into length buckets so
a batch holds utterances of similar duration and little padding.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_prep.speech_config import SpecAugmentConfig

LABEL_PAD = -1
NUM_BUCKETS = 8


def _mask(seed, size, max_width):
    """A boolean [size] vector with one random run of 0..max_width True values."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    width = tf.cast(tf.floor(tf.random.stateless_uniform(
        [], seeds[0], 0.0, tf.cast(max_width, tf.float32) + 1.0)), tf.int32)
    width = tf.minimum(width, size)
    start = tf.cast(tf.floor(tf.random.stateless_uniform(
        [], seeds[1], 0.0, tf.cast(size - width, tf.float32) + 1.0)), tf.int32)
    positions = tf.range(size)
    return (positions >= start) & (positions < start + width)


def spec_augment(features, seed, cfg: SpecAugmentConfig):
    """Apply time and frequency masks to one utterance [T, F]; ``seed`` is a [2] int tensor.

    The same seed gives the same masks, so an epoch's augmentation is reproducible.
    """
    frames, bins = tf.shape(features)[0], tf.shape(features)[1]
    seeds = tf.random.experimental.stateless_split(seed, cfg.freq_masks + cfg.time_masks)
    time_width = tf.minimum(cfg.time_mask_width, tf.cast(
        tf.cast(frames, tf.float32) * cfg.time_mask_fraction, tf.int32))
    masked_bins = tf.zeros([bins], tf.bool)
    for i in range(cfg.freq_masks):
        masked_bins |= _mask(seeds[i], bins, cfg.freq_mask_width)
    masked_frames = tf.zeros([frames], tf.bool)
    for i in range(cfg.time_masks):
        masked_frames |= _mask(seeds[cfg.freq_masks + i], frames, time_width)
    masked = masked_frames[:, None] | masked_bins[None, :]
    return tf.where(masked, tf.reduce_mean(features), features)


def time_stretch(features, seed, low: float, high: float, min_length=1):
    """Resample one utterance [T, F] to ``round(T * factor)`` frames, with ``factor``
    uniform in [low, high] (from the [2] int ``seed``), but never fewer than
    ``min(T, min_length)``."""
    frames = tf.shape(features)[0]
    factor = tf.random.stateless_uniform([], seed, low, high)
    target = tf.cast(tf.round(tf.cast(frames, tf.float32) * factor), tf.int32)
    target = tf.maximum(target, tf.minimum(frames, min_length))
    # Resize as an image [T, F, 1] along time only; bilinear keeps the feature scale.
    resized = tf.image.resize(features[:, :, None], tf.stack([target, tf.shape(features)[1]]),
                              method="bilinear")
    return resized[:, :, 0]


def _ragged(arrays: list[np.ndarray], dtype) -> tf.RaggedTensor:
    lengths = [len(a) for a in arrays]
    return tf.RaggedTensor.from_row_lengths(np.concatenate(arrays).astype(dtype), lengths)


def _inputs(features):
    # Rows of a ragged tensor arrive in map() as plain [T, F] tensors.
    return {"features": features, "feature_lengths": tf.shape(features)[0]}


def bucket_boundaries(lengths: list[int], num_buckets: int = NUM_BUCKETS) -> list[int]:
    """Frame-count bucket bounds at quantiles of ``lengths``: buckets fill evenly."""
    quantiles = np.quantile(lengths, np.linspace(0, 1, num_buckets + 1)[1:-1])
    return sorted({int(q) + 1 for q in quantiles})


def make_training_dataset(features: list[np.ndarray], labels: list[list[int]], batch_size: int,
                          augment: SpecAugmentConfig | None = None, seed: int | None = None,
                          shuffle: bool = True, min_lengths: list[int] | None = None
                          ) -> tf.data.Dataset:
    """Bucketed, padded ``(inputs, labels)`` batches of ``batch_size`` utterances.

    Args:
        features: per-utterance normalized features [T, F].
        labels: per-utterance label ids (non-empty).
        batch_size: utterances per batch (the last batch of a bucket may be smaller).
        augment: augmentation settings, or None for no augmentation (validation).
        seed: shuffle and augmentation seed; the same seed gives the same batches.
        shuffle: shuffle utterances and batches (training); off for validation.
        min_lengths: per-utterance fewest frames time stretching may leave (the frames
            CTC needs for the transcript); None: 1.
    """
    if min_lengths is None:
        min_lengths = [1] * len(features)
    dataset = tf.data.Dataset.from_tensor_slices(
        (_ragged(features, np.float32), _ragged([np.asarray(x) for x in labels], np.int32),
         np.asarray(min_lengths, np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=False)
    return batch_utterances(dataset, [len(f) for f in features], batch_size, augment, seed,
                            shuffle)


def batch_utterances(dataset: tf.data.Dataset, lengths: list[int], batch_size: int,
                     augment: SpecAugmentConfig | None, seed: int | None, shuffle: bool
                     ) -> tf.data.Dataset:
    """``make_training_dataset``'s batches of a dataset of ``(features [T, F], labels,
    min_length)`` utterances in training order, whose frame counts are ``lengths``."""
    if augment is not None:
        base = tf.constant([seed or 0, 0], tf.int64)

        def apply(index, example):
            features, y, min_length = example
            # A per-utterance seed from (seed, position): deterministic, different per utterance.
            utterance_seed = base + tf.stack([tf.constant(0, tf.int64), index])
            if augment.time_stretch:
                low, high = augment.time_stretch
                stretch_seed = utterance_seed + tf.constant([1, 0], tf.int64)
                features = time_stretch(features, stretch_seed, low, high, min_length)
            return spec_augment(features, utterance_seed, augment), y, min_length

        dataset = dataset.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE,
                                          deterministic=True)
    dataset = dataset.map(lambda f, y, _: (_inputs(f), y))
    boundaries = bucket_boundaries(lengths)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda inputs, y: inputs["feature_lengths"],
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        padding_values=({"features": 0.0, "feature_lengths": 0}, LABEL_PAD),
    )
    if shuffle:
        # Buckets fill at different rates; shuffling whole batches removes the resulting
        # short-to-long drift within an epoch.
        dataset = dataset.shuffle(256, seed=seed, reshuffle_each_iteration=False)
    # Without tf.data's autotuning: with it, deleting an epoch's finished iterator blocked
    # for up to 40 s in some epochs (waiting on a background thread, the CPU idle), which
    # made AN4 epochs alternate between 44 and 84 s; measured without it: 43-49 s every
    # epoch, the same batches and losses (docs/benchmarks.md, AN4 training time).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


# -- TFRecord shards (data_prep/feature_shards.py) ----------------------------------------


def _int64s(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def write_shard(path, features: list[np.ndarray], labels: list[list[int]], first: int,
                groups: list[int]) -> None:
    """Write utterances as ``tf.train.Example`` records to the TFRecord file ``path``
    (not atomically: write to a temporary name and rename).

    Args:
        path: the file to write.
        features: per-utterance float32 features [T, F].
        labels: per-utterance label ids.
        first: the training-set position of the first utterance (the others follow).
        groups: per-utterance normalization group (see ``read_shards``).
    """
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, (x, y, group) in enumerate(zip(features, labels, groups, strict=True)):
            example = tf.train.Example(features=tf.train.Features(feature={
                "features": tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[np.ascontiguousarray(x, np.float32).tobytes()])),
                "labels": _int64s(y),
                "index": _int64s([first + i]),
                "group": _int64s([group]),
            }))
            writer.write(example.SerializeToString())


SHARD_FEATURES = {"features": tf.io.FixedLenFeature([], tf.string),
                  "labels": tf.io.VarLenFeature(tf.int64),
                  "index": tf.io.FixedLenFeature([], tf.int64),
                  "group": tf.io.FixedLenFeature([], tf.int64)}


def read_shards(files: list[str], num_features: int, shuffle_files: bool = False,
                seed: int | None = None, cycle_length: int = 4) -> tf.data.Dataset:
    """The utterances of TFRecord shards as ``(features [T, F], labels, index, group)``.

    Args:
        files: the shards, in order.
        num_features: F.
        shuffle_files: read the shards in an order shuffled with ``seed``, interleaving
            ``cycle_length`` of them; otherwise one after the other, in order.
        seed: the shard order's seed.
        cycle_length: shards read at once when ``shuffle_files``.
    """
    names = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files:
        names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
        records = names.interleave(tf.data.TFRecordDataset, cycle_length=cycle_length,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        records = names.flat_map(tf.data.TFRecordDataset)

    def parse(record):
        example = tf.io.parse_single_example(record, SHARD_FEATURES)
        features = tf.reshape(tf.io.decode_raw(example["features"], tf.float32),
                              [-1, num_features])
        labels = tf.cast(tf.sparse.to_dense(example["labels"]), tf.int32)
        return features, labels, example["index"], example["group"]

    return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_streaming_dataset(files: list[str], num_features: int, lengths: np.ndarray,
                           keep: np.ndarray, min_lengths: np.ndarray, batch_size: int,
                           shuffle_buffer: int, augment: SpecAugmentConfig | None = None,
                           seed: int | None = None, mean: np.ndarray | None = None,
                           scale: np.ndarray | None = None) -> tf.data.Dataset:
    """``make_training_dataset``'s batches of the utterances in TFRecord shards, streamed.

    The utterances kept are shuffled in a buffer of ``shuffle_buffer``; when it holds all
    of them the shards are read in order, and the batches are exactly those
    ``make_training_dataset`` makes of the same utterances in memory (a whole-set shuffle
    is a uniform permutation already). Otherwise the shard order is shuffled too (with
    ``seed``) and shards are interleaved, so the buffer mixes several of them.

    Args:
        files: the shards in training-set order (``read_shards``).
        num_features: F.
        lengths: frame count of every utterance, by training-set position.
        keep: bool, by position: the utterances to train on.
        min_lengths: by position: the fewest frames time stretching may leave.
        batch_size, augment, seed: as ``make_training_dataset``'s.
        shuffle_buffer: utterances the shuffle buffer holds.
        mean, scale: [groups, F] float32: an utterance of normalization group ``g >= 0``
            becomes ``(features - mean[g]) / scale[g]``; group -1 is used as stored.
    """
    kept = int(np.sum(keep))
    dataset = read_shards(files, num_features, shuffle_files=shuffle_buffer < kept, seed=seed)
    keep_table, min_table = tf.constant(keep, tf.bool), tf.constant(min_lengths, tf.int32)
    dataset = dataset.filter(lambda x, y, index, group: tf.gather(keep_table, index))
    tables = None if mean is None else (tf.constant(mean, tf.float32),
                                        tf.constant(scale, tf.float32))

    def normalize(x, y, index, group):
        if tables is not None:
            g = tf.maximum(group, 0)
            x = tf.where(group >= 0, (x - tables[0][g]) / tables[1][g], x)
        return x, y, tf.gather(min_table, index)

    dataset = dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.shuffle(min(shuffle_buffer, kept), seed=seed,
                              reshuffle_each_iteration=False)
    return batch_utterances(dataset, [int(n) for n in np.asarray(lengths)[keep]], batch_size,
                            augment, seed, shuffle=True)


def make_inference_batches(features: list[np.ndarray], batch_size: int
                           ) -> tuple[tf.data.Dataset, np.ndarray]:
    """Padded input batches sorted by length, and the order to undo the sort.

    Returns ``(dataset, order)``: the i-th utterance of the batches is ``features[order[i]]``.
    """
    order = np.argsort([-len(f) for f in features], kind="stable")
    dataset = tf.data.Dataset.from_tensor_slices(_ragged([features[i] for i in order],
                                                         np.float32))
    dataset = dataset.map(_inputs).padded_batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE), order
