import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from models.attention import SCORES, Attention
from models.attention_decoder import ATTENTION_OUTPUTS, INITS
from models.losses import MaskedLabelSmoothingLoss
from tests.helpers import SRC_V, TGT_V, assert_keras_round_trip, batch, tiny

# Every cell x score x input feeding, each paired with one of the output/init choices in
# turn (all four pairings appear with every cell).
VARIANTS = [
    dict(cell=c, attention=a, input_feeding=f, attention_output=o, decoder_init=i)
    for (c, a, f), (o, i) in zip(itertools.product(("gru", "lstm", "rnn"), SCORES, (True, False)),
                                 itertools.cycle(itertools.product(ATTENTION_OUTPUTS, INITS)))
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_shapes_and_padding_invariance(variant):
    model = tiny(**variant)
    inputs = batch()
    logits = ops.convert_to_numpy(model(inputs))
    assert logits.shape == (3, 5, TGT_V) and np.isfinite(logits).all()
    # Extra source padding must not change any output: it is masked in the encoder and
    # in attention.
    padded = dict(inputs, source=np.pad(inputs["source"], ((0, 0), (0, 4))))
    np.testing.assert_allclose(ops.convert_to_numpy(model(padded)), logits, atol=1e-5)
    # Target padding after a position must not change that position's logits.
    short = dict(inputs, target_in=np.pad(inputs["target_in"][:, :3], ((0, 0), (0, 2))))
    np.testing.assert_allclose(ops.convert_to_numpy(model(short))[:, :3], logits[:, :3], atol=1e-5)


def test_encoder_padding_never_changes_real_positions():
    model = tiny(encoder_layers=2, cell="lstm")
    src = batch()["source"]
    memory, mask, final = model.encoder(src)
    memory2, mask2, final2 = model.encoder(np.pad(src, ((0, 0), (0, 5))))
    real = ops.convert_to_numpy(mask)
    np.testing.assert_allclose(ops.convert_to_numpy(memory2)[:, :7][real],
                               ops.convert_to_numpy(memory)[real], atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(final2), ops.convert_to_numpy(final), atol=1e-5)
    # Sentence 0 alone (no padding at all) gives the same states as inside the padded batch.
    alone, _, final_alone = model.encoder(src[:1, :4])
    np.testing.assert_allclose(ops.convert_to_numpy(alone)[0], ops.convert_to_numpy(memory)[0, :4],
                               atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(final_alone)[0], ops.convert_to_numpy(final)[0],
                               atol=1e-5)


@pytest.mark.parametrize("score", SCORES)
def test_attention_ignores_padding(score):
    layer = Attention(score, units=8)
    rng = np.random.default_rng(1)
    query, memory = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 5, 6))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
    context, weights = layer(query.astype("float32"), memory.astype("float32"), mask)
    weights = ops.convert_to_numpy(weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
    assert (weights[0, :, 3:] == 0).all()
    changed = memory.copy()
    changed[0, 3:] = 100.0  # garbage under the padding
    context2, _ = layer(query.astype("float32"), changed.astype("float32"), mask)
    np.testing.assert_allclose(ops.convert_to_numpy(context2), ops.convert_to_numpy(context), atol=1e-5)


def test_dot_attention_size_mismatch_is_explained():
    with pytest.raises(ValueError, match="dot attention needs equal"):
        tiny(attention="dot", decoder_units=30, attentional_dim=30)


def test_residual_output_needs_decoder_sized_attentional_vector():
    with pytest.raises(ValueError, match="residual_norm needs model.attentional_dim"):
        tiny(attention_output="residual_norm", attentional_dim=16)


def test_zero_init_decoder_sees_the_source_only_through_attention():
    """With decoder_init=zeros the first step's state ignores the encoder summary."""
    model = tiny(decoder_init="zeros")
    memory, keys, mask, states, _ = model.encode(batch()["source"])
    assert not np.any(ops.convert_to_numpy(states[0][0]))
    assert not any("bridge" in w.path for w in model.weights)


def test_tied_embeddings_need_matching_sizes():
    with pytest.raises(ValueError, match="tie_embeddings"):
        tiny(attentional_dim=20, tie_embeddings=True)


def test_tied_output_uses_embedding_matrix():
    tied, untied = tiny(tie_embeddings=True), tiny(tie_embeddings=False)
    assert untied.count_params() - tied.count_params() == 24 * TGT_V


@pytest.mark.parametrize("variant", [dict(cell="gru", input_feeding=True),
                                     dict(cell="gru", attention="additive", decoder_init="bridge",
                                          attention_output="tanh"),
                                     dict(cell="lstm", attention="general", input_feeding=False,
                                          encoder_layers=2, decoder_layers=2, tie_embeddings=True)])
def test_keras_round_trip(tmp_path, variant):
    model = tiny(**variant)
    inputs = batch()
    assert_keras_round_trip(model, lambda m: m(inputs), tmp_path)


def test_round_trip_keeps_compiled_loss(tmp_path):
    model = tiny()
    model.compile(optimizer="adam", loss=MaskedLabelSmoothingLoss(0.2))
    loaded = assert_keras_round_trip(model, lambda m: m(batch()), tmp_path)
    assert loaded.loss.label_smoothing == 0.2


@pytest.mark.parametrize("output,init", itertools.product(ATTENTION_OUTPUTS, INITS))
def test_step_matches_teacher_forcing(output, init):
    """Step-wise decoding (used by search) computes the same logits as the full pass."""
    for feeding in (True, False):
        model = tiny(input_feeding=feeding, cell="lstm", decoder_layers=2, attention_output=output,
                     decoder_init=init)
        inputs = batch()
        full = ops.convert_to_numpy(model(inputs))
        memory, keys, mask, states, attentional = model.encode(inputs["source"])
        for t in range(inputs["target_in"].shape[1]):
            logits, states, attentional, _ = model.decoder.step(
                inputs["target_in"][:, t], states, attentional, memory, keys, mask)
            np.testing.assert_allclose(ops.convert_to_numpy(logits), full[:, t], atol=1e-4)


def test_loss_ignores_padding_and_matches_cross_entropy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 10)).astype("float32")
    labels = np.array([[5, 6, 3, 0], [7, 3, 0, 0]])
    plain = MaskedLabelSmoothingLoss(0.0)(labels, logits)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    real = labels != 0
    expected = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0][real].mean()
    np.testing.assert_allclose(float(plain), expected, rtol=1e-5)
    garbage = logits.copy()
    garbage[~real] = 50.0  # whatever the model says at padding does not matter
    np.testing.assert_allclose(float(MaskedLabelSmoothingLoss(0.1)(labels, garbage)),
                               float(MaskedLabelSmoothingLoss(0.1)(labels, logits)), rtol=1e-6)
    assert float(MaskedLabelSmoothingLoss(0.1)(labels, logits)) > float(plain) * 0.9


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_bidirectional_layers_build_inside_load_model(loading_scope, cell):
    # Regression: loading a checkpoint after training failed with "'GRUCell' object has
    # no attribute 'go_backwards'" once Python reused the id of a collected layer.
    from models.ctc_recognizer import CTCRecognizer
    from models.rnn_encoder import RNNEncoder

    encoder = RNNEncoder(SRC_V, embedding_dim=8, units=4, num_layers=3, cell=cell)
    recognizer = CTCRecognizer(num_features=8, vocab_size=5, rnn_layers=3, rnn_units=4, cell=cell)
    for stack in (encoder.layers_, recognizer.rnns):
        rnns = [layer.forward_layer for layer in stack] + [layer.backward_layer for layer in stack]
        assert all(isinstance(r, keras.layers.RNN) for r in rnns)
        assert len({id(r.cell) for r in rnns}) == len(rnns)  # no cell shared by two layers


# KerasHub-style serialization tests: each public layer, inside a small functional model,
# survives a .keras round trip (config and outputs). CTCRecognizer, a model itself, has
# its own in test_speech_models.py.

def _memory(batch_size=2, src_len=5, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    memory = rng.standard_normal((batch_size, src_len, dim)).astype("float32")
    mask = np.ones((batch_size, src_len), bool)
    mask[0, 3:] = False
    return memory, mask


def test_rnn_encoder_keras_round_trip(tmp_path):
    from models.rnn_encoder import RNNEncoder

    keras.utils.set_random_seed(0)
    source = keras.Input((None,), dtype="int32", name="source")
    model = keras.Model(source, RNNEncoder(SRC_V, embedding_dim=6, units=4, num_layers=2,
                                           cell="lstm")(source))
    assert_keras_round_trip(model, lambda m: m(batch()["source"]), tmp_path)


def test_attention_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    query = keras.Input((None, 4), name="query")
    memory = keras.Input((None, 6), name="memory")
    mask = keras.Input((None,), dtype="bool", name="memory_mask")
    model = keras.Model([query, memory, mask], Attention("additive", units=3)(query, memory, mask))
    values, memory_mask = _memory()
    queries = np.random.default_rng(1).standard_normal((2, 3, 4)).astype("float32")
    assert_keras_round_trip(model, lambda m: m([queries, values, memory_mask]), tmp_path)


def test_attention_decoder_keras_round_trip(tmp_path):
    from models.attention_decoder import AttentionDecoder

    keras.utils.set_random_seed(0)
    target_in = keras.Input((None,), dtype="int32", name="target_in")
    memory = keras.Input((None, 6), name="memory")
    mask = keras.Input((None,), dtype="bool", name="memory_mask")
    final = keras.Input((6,), name="final")
    decoder = AttentionDecoder(TGT_V, embedding_dim=4, units=6, attention="general",
                               attention_units=3, attentional_dim=6)
    model = keras.Model([target_in, memory, mask, final], decoder(target_in, memory, mask, final))
    values, memory_mask = _memory()
    inputs = [batch(batch_size=2)["target_in"], values, memory_mask, values[:, 0]]
    assert_keras_round_trip(model, lambda m: m(inputs), tmp_path)


def test_models_saved_before_the_output_and_init_options_load_as_they_were():
    model = tiny(attention_output="tanh", decoder_init="bridge")
    config = model.get_config()
    del config["attention_output"], config["decoder_init"]  # as an older release saved it
    old = type(model).from_config(config)
    assert (old.config.attention_output, old.config.decoder_init) == ("tanh", "bridge")
    old.build()
    old.set_weights(model.get_weights())  # same weights, same shapes
    inputs = batch()
    np.testing.assert_allclose(ops.convert_to_numpy(old(inputs)),
                               ops.convert_to_numpy(model(inputs)), atol=1e-6)


@pytest.mark.parametrize("variant", [dict(), dict(cell="lstm", input_feeding=True, tie_embeddings=True)])
def test_training_loss_projects_only_real_tokens_with_the_same_value_and_gradient(variant):
    """``loss_sum_and_count`` (what the trainer minimizes) skips the projection of padded
    positions; its sum, count and gradient are those of the compiled loss on ``call``'s
    logits."""
    model = tiny(dropout=0.0, **variant)
    model.compile(optimizer="adam", loss=MaskedLabelSmoothingLoss(0.1))
    inputs = batch()
    labels = np.concatenate([inputs["target_in"][:, 1:], np.zeros((3, 1), "int32")], axis=1)
    assert (labels == 0).any() and (labels != 0).any()
    variables = model.trainable_variables

    def gradients(loss_fn):
        with tf.GradientTape() as tape:
            total, count = loss_fn()
        return float(total), float(count), [tf.convert_to_tensor(g) for g in
                                            tape.gradient(total, variables)]

    fast = gradients(lambda: model.loss_sum_and_count(inputs, labels, training=True))
    full = gradients(lambda: model.loss.sum_and_count(labels, model(inputs, training=True)))
    assert fast[1] == full[1] == (labels != 0).sum()
    np.testing.assert_allclose(fast[0], full[0], rtol=1e-5)
    for a, b in zip(fast[2], full[2], strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
