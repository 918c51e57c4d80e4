"""The hybrid CTC/attention speech model and attention rescoring."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from data_prep.speech_dataset import make_training_dataset
from models.attention_rescoring import AttentionRescoringDecoder
from models.ctc_attention_recognizer import CTCAttentionRecognizer, decoder_targets
from models.ctc_decoding import CTCDecoder
from models.ctc_recognizer import CTCRecognizer
from tests.helpers import assert_keras_round_trip
from tests.test_speech_models import batch

DECODER = dict(units=16, embedding_dim=8, attention_units=8, dropout=0.0, ctc_weight=0.3)
LABELS = np.array([[1, 2, 3], [3, 3, -1], [1, -1, -1]], np.int32)


def tiny(decoder=None, **overrides):
    kwargs = dict(num_features=6, vocab_size=5, conv_layers=2, conv_channels=8, rnn_layers=1,
                  rnn_units=8, dropout=0.0)
    model = CTCAttentionRecognizer({**DECODER, **(decoder or {})}, **{**kwargs, **overrides})
    model.build()
    return model


def scores(model, inputs, hypotheses):
    encoded = model.encode(inputs)
    lengths = model.output_lengths(inputs["feature_lengths"])
    return ops.convert_to_numpy(model.attention_log_likelihood(encoded, lengths, hypotheses))


def test_teacher_forcing_adds_sos_and_eos_and_pads_with_minus_one():
    target_in, target_out = decoder_targets(LABELS, 5)
    assert ops.convert_to_numpy(target_in).tolist() == [[5, 1, 2, 3], [5, 3, 3, 5],
                                                        [5, 1, 5, 5]]
    assert ops.convert_to_numpy(target_out).tolist() == [[1, 2, 3, 5], [3, 3, 5, -1],
                                                         [1, 5, -1, -1]]
    # An empty hypothesis is just <eos> after <sos>.
    target_in, target_out = decoder_targets(np.full((1, 2), -1, np.int32), 5)
    assert ops.convert_to_numpy(target_out).tolist() == [[5, -1, -1]]


def test_shapes_and_the_memory_mask():
    model = tiny()
    inputs = batch()
    assert tuple(model(inputs).shape) == (3, 5, 5)  # the CTC logits, as CTCRecognizer's
    encoded = model.encode(inputs)
    target_in, _ = decoder_targets(LABELS, model.sos_eos)
    logits = model.decoder_logits(encoded, model.output_lengths(inputs["feature_lengths"]),
                                  target_in)
    assert tuple(logits.shape) == (3, 4, 6)  # the labels and <sos/eos>
    # The padded frames of the shorter utterances are masked out of the attention: an
    # utterance scores the same alone as in the padded batch, garbage padding or not.
    together = scores(model, inputs, LABELS)
    noisy = dict(inputs, features=inputs["features"].copy())
    noisy["features"][2, 7:] = 100.0
    np.testing.assert_allclose(scores(model, noisy, LABELS), together, rtol=1e-5)
    alone = {"features": inputs["features"][2:3, :7], "feature_lengths": np.array([7], np.int32)}
    np.testing.assert_allclose(scores(model, alone, LABELS[2:3]), together[2:3], rtol=1e-5)
    assert np.all(together < 0)


def test_keras_round_trip(tmp_path):
    model = tiny({"cell": "gru", "attention": "additive", "input_feeding": True})
    inputs = batch()

    def outputs(m):
        return [m(inputs), scores(m, inputs, LABELS)]

    loaded = assert_keras_round_trip(model, outputs, tmp_path, atol=1e-6)
    assert loaded.decoder_config == model.decoder_config and loaded.config == model.config


@pytest.mark.parametrize("encoder", [{}, {"rnn_layers": 2, "intermediate_ctc_layer": 1}])
def test_with_ctc_weight_one_the_loss_is_the_ctc_loss(encoder):
    keras.utils.set_random_seed(0)
    hybrid = tiny({"ctc_weight": 1.0}, **encoder)
    ctc = CTCRecognizer(**{k: v for k, v in hybrid.get_config().items()
                           if k in ("num_features", "vocab_size", "conv_layers",
                                    "conv_channels", "rnn_layers", "rnn_units", "dropout",
                                    *encoder)})
    ctc.build()
    ctc.set_weights(hybrid.get_weights()[:len(ctc.weights)])  # the encoder and CTC head
    inputs = batch()
    total, count = hybrid.loss_sum_and_count(inputs, LABELS)
    expected, _ = ctc.loss_sum_and_count(inputs, LABELS)
    assert float(count) == 3
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)
    # With some weight on the decoder, the loss differs, and both halves are finite.
    mixed = tiny({"ctc_weight": 0.5})
    assert np.isfinite(float(mixed.loss_sum_and_count(inputs, LABELS)[0]))
    assert float(mixed.compute_loss(inputs, LABELS, mixed(inputs))) > 0


def test_rescoring_returns_a_hypothesis_of_the_n_best():
    keras.utils.set_random_seed(1)
    model = tiny()
    inputs = batch(lengths=(20, 13, 7, 40), seed=3)
    for weight in (0.0, 0.3, 1.0):
        decoder = AttentionRescoringDecoder(model, beam_width=4, ctc_weight=weight)
        nbest = decoder.nbest(inputs)
        for best, hyps in zip(decoder(inputs), nbest, strict=True):
            assert len(hyps) == 4
            assert best in [h for h, _, _ in hyps]
            combined = [weight * c + (1 - weight) * a for _, c, a in hyps]
            assert best == hyps[int(np.argmax(combined))][0]
    # All weight on CTC: the beam search's own best.
    decoder = AttentionRescoringDecoder(model, beam_width=4, ctc_weight=1.0)
    assert decoder(inputs) == CTCDecoder(model, "beam_search", beam_width=4)(inputs)
    # The attention scores are the model's teacher-forced log-likelihoods.
    hyps = [h for h, _, _ in nbest[0]]
    padded = np.full((len(hyps), max(map(len, hyps)) or 1), -1, np.int32)
    for i, h in enumerate(hyps):
        padded[i, :len(h)] = h
    one = {k: np.repeat(v[:1], len(hyps), axis=0) for k, v in inputs.items()}
    np.testing.assert_allclose([a for _, _, a in nbest[0]], scores(model, one, padded),
                               rtol=1e-4)


def test_rescoring_edge_cases():
    model = tiny()
    # More prefixes asked for than one frame gives (the empty one and each label): N is
    # capped at the vocabulary size; an utterance of no frames decodes to nothing.
    decoder = AttentionRescoringDecoder(model, beam_width=16)
    assert decoder.top_paths == 5
    inputs = {"features": np.ones((2, 4, 6), np.float32),
              "feature_lengths": np.array([1, 0], np.int32)}
    assert decoder(inputs)[1] == []
    with pytest.raises(ValueError, match="attention decoder"):
        ctc = CTCRecognizer(num_features=6, vocab_size=5)
        AttentionRescoringDecoder(ctc)
    with pytest.raises(ValueError, match="ctc_weight"):
        AttentionRescoringDecoder(model, ctc_weight=1.5)
    with pytest.raises(ValueError, match="causal"):
        tiny(causal=True)


def utterances(transcripts, vocab_size, seed=0, frames_per_label=8):
    """Features of each transcript: per label a fixed random pattern, plus noise."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((vocab_size, 6)).astype(np.float32)
    return [np.concatenate([np.repeat(patterns[i][None], frames_per_label, 0)
                            for i in [0, *ids, 0]])
            + 0.1 * rng.standard_normal(((len(ids) + 2) * frames_per_label, 6)).astype(np.float32)
            for ids in transcripts]


@pytest.mark.slow
def test_a_tiny_hybrid_memorizes_utterances_and_rescoring_returns_them():
    """Six synthetic utterances, no dropout: joint training until attention rescoring
    transcribes every one right."""
    transcripts = [[1, 2, 3], [3, 1], [2, 2, 1], [1, 3, 2, 4], [4, 4], [2, 4, 1, 3]]
    features = utterances(transcripts, vocab_size=5)
    keras.utils.set_random_seed(0)
    model = tiny({"units": 32, "embedding_dim": 16, "attention_units": 16, "ctc_weight": 0.5},
                 conv_layers=1, conv_channels=16, rnn_units=32)
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    dataset = make_training_dataset(features, transcripts, batch_size=6, shuffle=False).cache()
    inputs = next(iter(dataset))[0]
    order = [int(np.argmax([len(f) == n and np.allclose(f, x[:n]) for f in features]))
             for x, n in zip(inputs["features"].numpy(), inputs["feature_lengths"].numpy(),
                             strict=True)]
    expected = [transcripts[i] for i in order]
    decoder = AttentionRescoringDecoder(model, beam_width=4, ctc_weight=0.3)
    for _ in range(15):
        model.fit(dataset.repeat(), steps_per_epoch=25, shuffle=False, verbose=0)
        if decoder(inputs) == expected:
            break
    assert decoder(inputs) == expected
    # The decoder learnt the transcripts too: alone (ctc_weight 0) it picks them as well.
    assert AttentionRescoringDecoder(model, beam_width=4, ctc_weight=0.0)(inputs) == expected


def test_language_model_n_best_rescoring(tmp_path):
    from data_prep.ngram_lm import write_arpa
    from models.attention_rescoring import LanguageModelRescoringDecoder
    from models.ctc_lm_decoding import CTCLanguageModelDecoder

    labels = ["", "a", "b", " ", "c"]

    def encode(text):
        return [labels.index(c) for c in text]

    keras.utils.set_random_seed(2)
    model = tiny()
    arpa = write_arpa(tmp_path / "lm.arpa", ["ab", "ab c", "cab", "b"] * 3, 2)
    lm = CTCLanguageModelDecoder(model, labels, encode, arpa, weight=0.5, word_bonus=1.0,
                                 beam_width=8)
    inputs = batch(lengths=(20, 13, 40), seed=4)
    nbest = [lm.search_nbest(x, 4) for x in lm.log_probs(inputs)]
    assert all(1 <= len(b) <= 4 for b in nbest)
    # The search's best is the first of its N-best, and all CTC weight keeps it.
    assert [encode(b[0][0]) for b in nbest] == lm(inputs)
    assert LanguageModelRescoringDecoder(lm, encode, 4, ctc_weight=1.0)(inputs) == lm(inputs)
    decoder = LanguageModelRescoringDecoder(lm, encode, 4, ctc_weight=0.3)
    for i, best in enumerate(decoder(inputs)):
        hyps = [encode(text) for text, _ in nbest[i]]
        assert best in hyps
        one = {k: np.repeat(v[i:i + 1], len(hyps), axis=0) for k, v in inputs.items()}
        padded = np.full((len(hyps), max(1, *map(len, hyps))), -1, np.int32)
        for j, h in enumerate(hyps):
            padded[j, :len(h)] = h
        combined = 0.3 * np.array([s for _, s in nbest[i]]) + 0.7 * scores(model, one, padded)
        assert best == hyps[int(np.argmax(combined))]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_loss_and_rescoring(policy):
    from pipelines.trainer import _dtype_policy

    with _dtype_policy(policy):
        model = tiny()
    inputs = batch()
    with tf.GradientTape() as tape:
        total, _ = model.loss_sum_and_count(inputs, LABELS, training=True)
    grads = tape.gradient(total, model.trainable_variables)
    assert np.isfinite(float(total))
    assert all(g is not None and np.all(np.isfinite(ops.convert_to_numpy(g))) for g in grads)
    decoded = AttentionRescoringDecoder(model, beam_width=4)(inputs)
    assert len(decoded) == 3 and all(0 < i < 5 for row in decoded for i in row)
