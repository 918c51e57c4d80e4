import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from models.ctc_decoding import CTCDecoder
from models.ctc_frames import ctc_frames_needed, subsampled_length
from models.ctc_recognizer import CTCRecognizer, CTCRecognizerConfig
from tests.helpers import assert_keras_round_trip


def tiny(**overrides):
    kwargs = dict(num_features=6, vocab_size=5, conv_layers=2, conv_channels=8, rnn_layers=2,
                  rnn_units=8, dropout=0.0)
    model = CTCRecognizer(**{**kwargs, **overrides})
    model.build()
    return model


def batch(lengths=(20, 13, 7), dims=6, seed=0):
    rng = np.random.default_rng(seed)
    features = np.zeros((len(lengths), max(lengths), dims), np.float32)
    for i, n in enumerate(lengths):
        features[i, :n] = rng.standard_normal((n, dims))
    return {"features": features, "feature_lengths": np.array(lengths, np.int32)}


@pytest.mark.parametrize("conv_type", ["1d", "2d"])
def test_subsampled_length_matches_the_convolutions(conv_type):
    model = tiny(conv_layers=2, conv_stride=2, conv_type=conv_type)
    for frames in (1, 7, 8, 9, 20):
        logits = model(batch(lengths=(frames,)))
        assert logits.shape[1] == subsampled_length(frames, 2, 2)
    assert subsampled_length(np.array([9, 16]), 1, 3).tolist() == [3, 6]
    assert subsampled_length(9, 0, 2) == 9


@pytest.mark.parametrize("conv_type", ["1d", "2d"])
def test_padding_does_not_change_real_outputs(conv_type):
    model = tiny(conv_type=conv_type)
    inputs = batch()
    full = ops.convert_to_numpy(model(inputs))
    alone = ops.convert_to_numpy(model({"features": inputs["features"][2:3, :7],
                                        "feature_lengths": np.array([7], np.int32)}))
    frames = subsampled_length(7, 2, 2)
    np.testing.assert_allclose(full[2, :frames], alone[0, :frames], atol=1e-5)


@pytest.mark.parametrize("overrides", [dict(), dict(cell="lstm", conv_layers=0, blank_index=4),
                                       dict(conv_type="2d", num_features=7),
                                       dict(intermediate_ctc_layer=1)])
def test_keras_round_trip(tmp_path, overrides):
    model = tiny(**overrides)
    inputs = batch(dims=model.config.num_features)
    labels = np.array([[0, 1, 2], [3, 3, -1], [1, -1, -1]], np.int32)
    # The loss too: it reads the intermediate output layer, which call() does not.
    loaded = assert_keras_round_trip(
        model, lambda m: [m(inputs), m.loss_sum_and_count(inputs, labels)[0]], tmp_path)
    assert loaded.config == model.config


def test_intermediate_ctc_mixes_a_lower_layers_ctc_loss_into_training_only():
    plain = tiny(rnn_layers=3)
    model = tiny(rnn_layers=3, intermediate_ctc_layer=2, intermediate_ctc_weight=0.25)
    model.set_weights(plain.get_weights() + model.get_weights()[len(plain.get_weights()):])
    inputs, labels = batch(), np.array([[0, 1, 2], [3, 3, -1], [1, -1, -1]], np.int32)
    # Inference is the plain model's.
    np.testing.assert_allclose(model(inputs), plain(inputs), atol=1e-6)
    top, count = plain.loss_sum_and_count(inputs, labels)
    lower = model._encode(inputs)[1]
    assert lower.shape == plain.encode(inputs).shape
    extra, _ = model._ctc_sum_and_count(inputs, labels, model.intermediate_output(lower))
    total, same_count = model.loss_sum_and_count(inputs, labels)
    np.testing.assert_allclose(float(total), 0.75 * float(top) + 0.25 * float(extra), rtol=1e-5)
    assert float(same_count) == float(count) == 3.0
    np.testing.assert_allclose(float(model.compute_loss(inputs, labels, model(inputs))),
                               float(total) / 3.0, rtol=1e-5)
    # The intermediate output layer is trained: the loss has gradients for it.
    with tf.GradientTape() as tape:
        loss = model.loss_sum_and_count(inputs, labels, training=True)[0]
    grads = tape.gradient(loss, model.intermediate_output.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)


def test_2d_front_end_sees_frequency_patterns_wherever_they_are():
    # The same 2-D filters slide over frequency: a bump moved by two bins (one bin of
    # the first layer's output) gives the same first-layer activations, moved.
    model = tiny(conv_type="2d", conv_layers=1, num_features=12)
    frames = np.zeros((1, 10, 12), np.float32)
    frames[0, :, 3] = 1.0
    moved = np.roll(frames, 2, axis=-1)
    conv, norm = model.convs[0], model.conv_norms[0]
    a, b = (np.asarray(model.conv_block(conv, norm, model.front_end_input(f)))
            for f in (frames, moved))
    assert a.shape == (1, 3, 6, 8)  # (10 - 5) // 2 + 1 frames, ceil(12 / 2) bins, channels
    np.testing.assert_allclose(a[:, :, 1:4], b[:, :, 2:5], atol=1e-6)
    assert model.front_end_output(a).shape == (1, 3, 48)  # the RNN reads bins x channels


def test_loss_is_ctc_over_true_lengths_with_the_blank_index():
    model = tiny(blank_index=4)
    inputs = batch()
    labels = np.array([[0, 1, 2], [3, 3, -1], [1, -1, -1]], np.int32)
    logits = model(inputs)
    loss = float(model.compute_loss(inputs, labels, logits))
    frames = subsampled_length(inputs["feature_lengths"], 2, 2)
    expected = tf.nn.ctc_loss(
        labels=tf.constant(np.maximum(labels, 0)), logits=logits, label_length=[3, 2, 1],
        logit_length=frames, blank_index=4, logits_time_major=False)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, float(tf.reduce_mean(expected)), rtol=1e-5)
    # Garbage in the padded frames of the shorter utterances changes nothing.
    noisy = dict(inputs, features=inputs["features"].copy())
    noisy["features"][2, 7:] = 100.0
    np.testing.assert_allclose(float(model.compute_loss(noisy, labels, model(noisy))), loss,
                               rtol=1e-5)


class FixedLogits:
    """A stand-in model returning fixed logits: decoding is tested on known inputs."""

    def __init__(self, logits, blank_index):
        self.logits = tf.constant(logits, tf.float32)
        self.config = CTCRecognizerConfig(num_features=1, blank_index=blank_index)

    def __call__(self, inputs, training=False):
        return self.logits

    def output_lengths(self, feature_lengths):
        return feature_lengths


def one_hot_path(path, classes=4, strong=5.0):
    return np.eye(classes, dtype=np.float32)[path] * strong


@pytest.mark.parametrize("strategy", ["greedy", "beam_search"])
@pytest.mark.parametrize("blank", [0, 3])
def test_decoding_merges_repeats_drops_blanks_and_respects_lengths(strategy, blank):
    a, b = [c for c in range(4) if c != blank][:2]
    paths = [[a, a, blank, a, b, b, blank], [b, blank, blank, a, a, a, a]]
    logits = np.stack([one_hot_path(p) for p in paths])
    decoder = CTCDecoder(FixedLogits(logits, blank), strategy, beam_width=4)
    inputs = {"features": np.zeros((2, 7, 1), np.float32),
              "feature_lengths": np.array([7, 3], np.int32)}
    assert decoder(inputs) == [[a, a, b], [b]]


def test_beam_search_finds_the_likelier_label_sequence():
    # Per frame, blank (0) beats "1" slightly, so greedy outputs nothing, but the two
    # frames' alignments of "1" together outweigh the single all-blank path.
    probs = np.array([[[0.55, 0.45], [0.55, 0.45]]], np.float32)
    model = FixedLogits(np.log(probs), 0)
    inputs = {"features": np.zeros((1, 2, 1), np.float32),
              "feature_lengths": np.array([2], np.int32)}
    assert CTCDecoder(model, "greedy")(inputs) == [[]]
    assert CTCDecoder(model, "beam_search", beam_width=4)(inputs) == [[1]]


def test_ctc_frames_needed():
    three, seven = [20, 8, 18, 5, 5], [19, 5, 22, 5, 14]
    assert ctc_frames_needed(three) == 6  # "ee" needs a blank between
    assert ctc_frames_needed(seven) == 5
    assert ctc_frames_needed([]) == 0


def test_closed_set_picks_the_likeliest_candidate():
    blank, a, b, c = 0, 1, 2, 3
    # Utterance 1 reads "a b" and utterance 2 "c" (not a candidate); utterance 3 has one
    # frame, too few for every candidate but [b].
    logits = np.stack([one_hot_path(p) for p in [[a, a, blank, b], [c, c, blank, blank],
                                                  [b, blank, blank, blank]]])
    logits[1, :, b] = 2.0  # "b" is the runner-up at every frame of utterance 2
    inputs = {"features": np.zeros((3, 4, 1), np.float32),
              "feature_lengths": np.array([4, 4, 1], np.int32)}
    candidates = [[b, a], [a, b], [a, a, b], [b], [b, b]]
    decoder = CTCDecoder(FixedLogits(logits, blank), "closed_set", candidates=candidates)
    assert CTCDecoder(FixedLogits(logits, blank), "greedy")(inputs)[1] == [c]
    assert decoder(inputs) == [[a, b], [b], [b]]
    # Without [b], no candidate fits in one frame: nothing, not an arbitrary candidate.
    decoder = CTCDecoder(FixedLogits(logits, blank), "closed_set",
                         candidates=[[b, a], [a, b], [b, b]])
    assert decoder(inputs)[2] == []


def test_invalid_strategy():
    with pytest.raises(ValueError, match="strategy"):
        CTCDecoder(FixedLogits(np.zeros((1, 1, 2)), 0), "viterbi")
    with pytest.raises(ValueError, match="candidates"):
        CTCDecoder(FixedLogits(np.zeros((1, 1, 2)), 0), "closed_set")
    with pytest.raises(ValueError, match="candidates"):
        CTCDecoder(FixedLogits(np.zeros((1, 1, 2)), 0), "greedy", candidates=[[1]])
