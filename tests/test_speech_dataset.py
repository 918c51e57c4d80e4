import numpy as np
import tensorflow as tf

from data_prep.speech_dataset import (
    LABEL_PAD,
    SpecAugmentConfig,
    bucket_boundaries,
    make_inference_batches,
    make_training_dataset,
    spec_augment,
    time_stretch,
)


def toy(n=40, dims=5, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 120, n)
    features = [np.full((t, dims), i, np.float32) for i, t in enumerate(lengths)]
    labels = [list(range(1, 2 + i % 7)) for i in range(n)]
    return features, labels


def as_lists(dataset):
    return [(x["features"].numpy(), x["feature_lengths"].numpy(), y.numpy()) for x, y in dataset]


def test_training_batches_are_made_without_autotuning():
    # Its background thread made deleting an epoch's iterator block for up to 40 s.
    features, labels = toy()
    for dataset in (make_training_dataset(features, labels, 8, seed=1),
                    make_training_dataset(features, labels, 8, shuffle=False)):
        assert dataset.options().autotune.enabled is False


def test_batches_are_padded_bucketed_and_complete():
    features, labels = toy()
    batches = as_lists(make_training_dataset(features, labels, batch_size=8, seed=1))
    seen = []
    for feats, lengths, y in batches:
        assert feats.shape[0] == lengths.shape[0] == y.shape[0] <= 8
        assert feats.shape[1] == lengths.max()
        for row, length, label in zip(feats, lengths, y, strict=True):
            i = int(row[0, 0])  # each toy utterance is filled with its own index
            seen.append(i)
            assert length == len(features[i])
            assert (row[length:] == 0).all()  # feature padding
            real = label[label != LABEL_PAD]
            assert list(real) == labels[i] and (label[len(real):] == LABEL_PAD).all()
    assert sorted(seen) == list(range(40))


def test_same_seed_same_batches_other_seed_other_order():
    features, labels = toy()
    aug = SpecAugmentConfig()
    a, b, c = (as_lists(make_training_dataset(features, labels, 8, aug, seed=s))
               for s in (3, 3, 4))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x[0], y[0])
    assert [x[0].shape for x in a] != [x[0].shape for x in c] or any(
        (x[0] != y[0]).any() for x, y in zip(a, c, strict=True))


def test_validation_batches_keep_order_without_augmentation():
    features, labels = toy()
    batches = as_lists(make_training_dataset(features, labels, 8, shuffle=False))
    for feats, lengths, _ in batches:
        for row, length in zip(feats, lengths, strict=True):
            np.testing.assert_array_equal(row[:length], features[int(row[0, 0])])


def test_spec_augment_masks():
    features = tf.ones([100, 40]) * tf.range(40, dtype=tf.float32)
    cfg = SpecAugmentConfig(freq_masks=2, freq_mask_width=8, time_masks=2, time_mask_width=30,
                            time_mask_fraction=0.1)
    seed = tf.constant([7, 1], tf.int64)
    out = spec_augment(features, seed, cfg).numpy()
    np.testing.assert_array_equal(out, spec_augment(features, seed, cfg).numpy())
    fill = features.numpy().mean()
    masked = out == fill
    masked_bins = masked.all(axis=0)
    masked_frames = masked.all(axis=1)
    assert 0 < masked_bins.sum() <= 16
    assert masked_frames.sum() <= 2 * 10  # time masks capped at 10% of 100 frames
    # Outside the masks nothing changes.
    keep = ~masked
    np.testing.assert_array_equal(out[keep], features.numpy()[keep])
    other = spec_augment(features, tf.constant([8, 1], tf.int64), cfg).numpy()
    assert (other != out).any()
    off = SpecAugmentConfig(freq_masks=0, time_masks=0)
    np.testing.assert_array_equal(spec_augment(features, seed, off).numpy(), features.numpy())


def test_time_stretch_resamples_time_only_and_respects_min_length():
    ramp = tf.tile(tf.range(100, dtype=tf.float32)[:, None], [1, 4])  # frame i holds i
    seed = tf.constant([3, 0], tf.int64)
    half = time_stretch(ramp, seed, 0.5, 0.5).numpy()
    assert half.shape == (50, 4)
    assert (np.diff(half[:, 0]) > 0).all() and 0 <= half.min() and half.max() <= 99
    np.testing.assert_array_equal(half[:, 0], half[:, 3])  # features are not mixed
    np.testing.assert_allclose(time_stretch(ramp, seed, 1.0, 1.0), ramp)
    assert time_stretch(ramp, seed, 1.5, 1.5).shape == (150, 4)
    assert time_stretch(ramp, seed, 0.5, 0.5, min_length=70).shape == (70, 4)
    # Never longer than the original because of min_length.
    assert time_stretch(ramp[:30], seed, 0.5, 0.5, min_length=70).shape == (30, 4)
    lengths = {time_stretch(ramp, tf.constant([i, 0], tf.int64), 0.8, 1.2).shape[0]
               for i in range(10)}
    assert len(lengths) > 1 and all(80 <= n <= 120 for n in lengths)


def test_training_batches_are_time_stretched():
    features, labels = toy()
    minimum = [len(f) // 2 + 5 for f in features]
    aug = SpecAugmentConfig(freq_masks=0, time_masks=0, time_stretch=[0.5, 0.5])
    seen = []
    for feats, lengths, _ in as_lists(make_training_dataset(features, labels, 8, aug, seed=1,
                                                            min_lengths=minimum)):
        for row, length in zip(feats, lengths, strict=True):
            i = int(round(row[0, 0]))
            seen.append(i)
            assert length == max(round(len(features[i]) * 0.5), minimum[i])
    assert sorted(seen) == list(range(40))


def test_bucket_boundaries_follow_the_data():
    assert bucket_boundaries([50] * 10) == [51]
    bounds = bucket_boundaries(list(range(1, 801)), num_buckets=4)
    assert bounds == [201, 401, 601]


def test_inference_batches_and_order():
    features, _ = toy(n=11)
    dataset, order = make_inference_batches(features, batch_size=4)
    restored = [None] * 11
    flat = []
    for batch in dataset:
        for row, length in zip(batch["features"].numpy(), batch["feature_lengths"].numpy(),
                               strict=True):
            flat.append(row[:length])
    for position, row in zip(order, flat, strict=True):
        restored[position] = row
    for a, b in zip(restored, features, strict=True):
        np.testing.assert_array_equal(a, b)
    lengths = [len(f) for f in flat]
    assert lengths == sorted(lengths, reverse=True)
