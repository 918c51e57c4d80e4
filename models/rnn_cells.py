"""Recurrent layers by cell type, and where Keras may run them on cuDNN.

The layers are Keras' ``GRU``, ``LSTM`` and ``SimpleRNN``: on a GPU, with the TensorFlow
backend, Keras runs ``GRU`` and ``LSTM`` with their default activations (as here) on the
fused cuDNN kernel. Older saved models were built as ``keras.layers.RNN``
over a ``GRUCell``/``LSTMCell``/``SimpleRNNCell``, which always runs Keras' generic loop;
``legacy=True`` rebuilds that structure, whose weights a ``.keras`` file stores under other
names (``rnns/rnn`` instead of ``rnns/gru``). Both compute the same thing: on a CPU the
layers fall back to the generic loop of the cells, with the same variables in the same
order.
"""

from __future__ import annotations

import contextlib

import keras

from models.config import CELL_TYPES

CELLS = dict(zip(CELL_TYPES, (keras.layers.GRUCell, keras.layers.LSTMCell,
                              keras.layers.SimpleRNNCell), strict=True))
LAYERS = dict(zip(CELL_TYPES, (keras.layers.GRU, keras.layers.LSTM, keras.layers.SimpleRNN),
                  strict=True))
# The ``legacy_rnn`` value of a model or layer config saved before the option existed.
SAVED_BEFORE_FUSED_LAYERS = {"legacy_rnn": True}


def _check(cell_type: str) -> None:
    if cell_type not in CELLS:
        raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {cell_type!r}")


def make_cell(cell_type: str, units: int, name: str) -> keras.layers.Layer:
    """A GRU, LSTM or SimpleRNN cell (``cell_type`` in ``gru``, ``lstm``, ``rnn``)."""
    _check(cell_type)
    return CELLS[cell_type](units, name=name)


def recurrent_layer(cell_type: str, units: int, index: int, legacy: bool = False,
                    **rnn_kwargs) -> keras.layers.RNN:
    """A GRU, LSTM or SimpleRNN layer (``cell_type`` in ``gru``, ``lstm``, ``rnn``) of
    ``units``; with ``legacy``, ``keras.layers.RNN`` over the cell ``cell_{index}``.
    ``rnn_kwargs`` (``return_sequences``, ``name``, ...) go to the layer."""
    if legacy:
        return keras.layers.RNN(make_cell(cell_type, units, f"cell_{index}"), **rnn_kwargs)
    _check(cell_type)
    return LAYERS[cell_type](units, **rnn_kwargs)


def bidirectional_rnn(cell_type: str, units: int, index: int, legacy: bool = False,
                      **rnn_kwargs) -> keras.layers.Bidirectional:
    """``Bidirectional(recurrent_layer(...))`` named ``birnn_{index}``, with concatenated
    outputs; ``rnn_kwargs`` go to the recurrent layer."""
    template = recurrent_layer(cell_type, units, index, legacy, **rnn_kwargs)
    layer = keras.layers.Bidirectional(template, merge_mode="concat", name=f"birnn_{index}")
    # Bidirectional builds both directions by serializing ``template`` and deserializing
    # it. Inside ``load_model`` that happens in Keras' object-sharing scope, which keys
    # objects by id(); once a template is garbage-collected, the next layer's template can
    # get its id and be "deserialized" as the cell recorded under it ("'GRUCell' object
    # has no attribute 'go_backwards'", seen loading a checkpoint after training). Keeping
    # the template alive as long as the layer keeps its id unique; object.__setattr__
    # because Keras would otherwise track it as a (never built) sublayer.
    object.__setattr__(layer, "_template", template)
    return layer


def num_states(cell_type: str) -> int:
    """State tensors per layer: LSTM carries (h, c), GRU and SimpleRNN carry h."""
    return 2 if cell_type == "lstm" else 1


@contextlib.contextmanager
def without_cudnn(layer: keras.layers.Layer):
    """Inside, the GRU and LSTM layers in ``layer`` (a layer or model) run Keras' generic
    loop even on a GPU: for graphs that must run on any device or convert to TFLite
    builtin ops (exports), and for masks cuDNN refuses (not right-padded). Only what runs
    or is traced inside is affected."""
    fused = [sub for sub in layer._flatten_layers() if hasattr(sub, "use_cudnn")]
    before = [sub.use_cudnn for sub in fused]
    for sub in fused:
        sub.use_cudnn = False
    try:
        yield
    finally:
        for sub, value in zip(fused, before, strict=True):
            sub.use_cudnn = value
