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
    boundaries = bucket_boundaries([len(f) for f in features])
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
    return dataset.prefetch(tf.data.AUTOTUNE)


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
