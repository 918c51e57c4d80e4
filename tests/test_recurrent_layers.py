"""Keras' GRU/LSTM layers (cuDNN-eligible on a GPU) against the RNN-over-cell layers of
checkpoints saved before them: the same numbers, the same variables, old files loading.

Which layers Keras would run on cuDNN is checked without a GPU: with TensorFlow told a
GPU is there, a traced graph holds a ``CudnnRNNV3`` op for each such layer (the graph is
never run).
"""

import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from data_prep.char_vocabulary import CharVocabulary
from data_prep.graph_features import GraphFeatures
from data_prep.speech_config import FeatureConfig
from models.config import CELL_TYPES
from models.ctc_decoding import CTCDecoder
from models.ctc_recognizer import CTCRecognizer
from models.ctc_streaming import NO_END, StreamingRecognizer
from models.decoding import Translator
from models.rnn_cells import without_cudnn
from pipelines.config import load_config
from pipelines.speech.inference import export_recognizer
from pipelines.speech.streaming import StreamStep
from pipelines.translation.config import TranslationConfig
from pipelines.translation.inference import export_translator
from pipelines.translation.stages import build_model
from tests.data.legacy_rnn import make
from tests.helpers import ROOT, batch, tiny

FIXTURES = ROOT / "tests" / "data" / "legacy_rnn"
SMOKE = ROOT / "pipelines" / "configs" / "translation_smoke.yaml"
# The module, not the function ``rnn`` its package exports under the same name.
TF_RNN = importlib.import_module("keras.src.backend.tensorflow.rnn")


def recognizer(**overrides):
    keras.utils.set_random_seed(0)
    config = dict(num_features=6, vocab_size=5, conv_channels=4, rnn_layers=2, rnn_units=5,
                  dropout=0.0)
    model = CTCRecognizer(**{**config, **overrides})
    model.build()
    return model


def speech_batch(lengths=(11, 6, 9)):
    features = np.random.default_rng(0).standard_normal((3, 11, 6)).astype("float32")
    for row, n in enumerate(lengths):
        features[row, n:] = 0.0  # right-padded, as batches are
    return {"features": features, "feature_lengths": np.array(lengths, "int32")}


def recurrent_layers(model):
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.RNN)]


def assert_same_variables(new, old):
    """The same variables in the same order: the trainer restores a checkpoint by order,
    and seeds each dropout layer by the position of its seed generator."""
    assert [(v.name, tuple(v.shape)) for v in new.variables] == [
        (v.name, tuple(v.shape)) for v in old.variables]


def assert_equal(new, old):
    np.testing.assert_array_equal(ops.convert_to_numpy(new), ops.convert_to_numpy(old))


@pytest.mark.parametrize("cell", CELL_TYPES)
@pytest.mark.parametrize("input_feeding", [False, True])
def test_keras_layers_translate_exactly_as_the_cell_rnns(cell, input_feeding):
    kwargs = dict(cell=cell, input_feeding=input_feeding, encoder_layers=2, decoder_layers=2)
    old, new = tiny(legacy_rnn=True, **kwargs), tiny(**kwargs)
    assert all(type(layer) is keras.layers.RNN for layer in recurrent_layers(old))
    assert not any(type(layer) is keras.layers.RNN for layer in recurrent_layers(new))
    assert_same_variables(new, old)
    new.set_weights(old.get_weights())
    inputs = batch()
    assert (inputs["source"] == 0).any()  # a padded row: masks included
    assert_equal(new(inputs), old(inputs))
    for a, b in zip(new.encoder(inputs["source"]), old.encoder(inputs["source"]), strict=True):
        assert_equal(a, b)
    # Inference steps the decoder's cells one token at a time.
    assert_equal(Translator(new, beam_size=2)(inputs["source"]),
                 Translator(old, beam_size=2)(inputs["source"]))


@pytest.mark.parametrize("cell", CELL_TYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_keras_layers_recognize_exactly_as_the_cell_rnns(cell, causal):
    old = recognizer(cell=cell, causal=causal, legacy_rnn=True)
    new = recognizer(cell=cell, causal=causal)
    assert_same_variables(new, old)
    new.set_weights(old.get_weights())
    inputs = speech_batch()
    assert_equal(new(inputs), old(inputs))
    if causal:
        chunk = inputs["features"][:1, :8]
        steps = [StreamingRecognizer(model, 8) for model in (new, old)]
        (a, a_states), (b, b_states) = [
            step.step(chunk, np.array([0]), np.array([NO_END]), step.initial_states())
            for step in steps]
        for x, y in zip([a, *a_states], [b, *b_states], strict=True):
            assert_equal(x, y)


def test_checkpoints_saved_before_the_keras_layers_load_as_they_were(tmp_path):
    """The fixtures were saved by the code before the change (see their make.py)."""
    cases = [("translator_gru.keras", make.translator_batch),
             ("recognizer_causal_lstm.keras", make.recognizer_batch)]
    for name, data in cases:
        old = keras.saving.load_model(FIXTURES / name)
        assert old.legacy_rnn
        assert all(type(layer) is keras.layers.RNN for layer in recurrent_layers(old))
        # The README's recipe for moving an old model onto the new layers.
        new = type(old).from_config({**old.get_config(), "legacy_rnn": False})
        new.build()
        assert not any(type(layer) is keras.layers.RNN for layer in recurrent_layers(new))
        new.compile(optimizer="adam")
        new.optimizer.build(new.trainable_variables)
        assert_same_variables(new, old)
        assert len(new.optimizer.variables) == len(old.optimizer.variables)
        new.set_weights(old.get_weights())
        x, _ = data()
        assert_equal(new(x), old(x))
        # Saved again, an old model keeps its structure (and its weights' names).
        old.save(tmp_path / name)
        assert keras.saving.load_model(tmp_path / name).legacy_rnn


def test_layers_saved_before_the_option_load_with_the_cell_rnns():
    model = tiny()
    for layer in (model.encoder, model.decoder):
        config = layer.get_config()
        assert config.pop("legacy_rnn") is False
        assert type(layer).from_config(config).legacy_rnn
    config = model.get_config()
    del config["legacy_rnn"]
    assert type(model).from_config(config).legacy_rnn


# -- where Keras would use cuDNN ----------------------------------------------------------

@pytest.fixture
def gpu_visible(monkeypatch):
    """Keras' TensorFlow RNNs believe a GPU is there: traced graphs get cuDNN ops."""
    monkeypatch.setattr(TF_RNN, "_is_gpu_available", lambda: True)


def cudnn_ops(fn, *args) -> int:
    """How many fused cuDNN RNN ops a trace of ``fn(*args)`` holds."""
    graph = tf.function(fn).get_concrete_function(*args).graph.as_graph_def()
    nodes = [*graph.node, *(n for f in graph.library.function for n in f.node_def)]
    return sum(node.op == "CudnnRNNV3" for node in nodes)


@pytest.mark.parametrize("overrides, fused", [
    (dict(), 3),  # the encoder's two directions and the decoder's layer
    (dict(cell="lstm", encoder_layers=2, decoder_layers=2), 6),
    (dict(input_feeding=True), 2),  # the decoder steps its cell
    (dict(cell="rnn"), 0),
    (dict(legacy_rnn=True), 0),
])
def test_translator_layers_on_cudnn(overrides, fused, gpu_visible):
    model = tiny(**overrides)
    inputs = batch()
    assert cudnn_ops(lambda x: model(x, training=True), inputs) == fused
    # Greedy search: the encoder only.
    encoder = 0 if fused == 0 else 2 * model.config.encoder_layers
    assert cudnn_ops(Translator(model)._greedy_impl, inputs["source"]) == encoder
    with without_cudnn(model):
        assert cudnn_ops(lambda x: model(x, training=True), inputs) == 0
    assert cudnn_ops(lambda x: model(x, training=True), inputs) == fused  # restored


@pytest.mark.parametrize("overrides, fused", [
    (dict(), 4), (dict(cell="lstm", causal=True), 2), (dict(cell="rnn"), 0),
    (dict(legacy_rnn=True), 0),
])
def test_recognizer_layers_on_cudnn(overrides, fused, gpu_visible):
    model = recognizer(**overrides)
    assert cudnn_ops(lambda x: model(x, training=True), speech_batch()) == fused


def test_stream_step_and_exports_keep_the_generic_loop(gpu_visible, toy_tokenizer, tmp_path):
    """Graphs that must run anywhere (and convert to TFLite builtins) trace no cuDNN op;
    the stream's first chunks have masks cuDNN refuses (frames before the utterance)."""
    stats = (np.zeros(40, np.float32), np.ones(40, np.float32))
    features = GraphFeatures(FeatureConfig(normalization="global"), stats)
    streaming = recognizer(num_features=40, causal=True)
    step = StreamStep(streaming, features, 8)
    assert cudnn_ops(step.__call__, *step.input_signature()) == 0
    model = recognizer(num_features=40)
    export_recognizer(CTCDecoder(model), CharVocabulary("abcd"), features, tmp_path / "speech")
    assert b"CudnnRNN" not in (tmp_path / "speech" / "saved_model.pb").read_bytes()
    inputs = {"features": np.zeros((1, 5, 40), np.float32), "feature_lengths": np.array([5])}
    assert cudnn_ops(model, inputs) == 4  # outside the export: back on cuDNN

    cfg = load_config(TranslationConfig, SMOKE, [
        "model.embedding_dim=8", "model.encoder_units=8", "model.decoder_units=8",
        "model.attentional_dim=8", "decoding.beam_size=2"])
    translator = build_model(cfg, toy_tokenizer, toy_tokenizer)
    export_translator(translator, toy_tokenizer, toy_tokenizer, cfg.decoding,
                      tmp_path / "translation")
    assert b"CudnnRNN" not in (tmp_path / "translation" / "saved_model.pb").read_bytes()
