"""Choosing a recurrent cell type by name."""

from __future__ import annotations

import keras

from models.config import CELL_TYPES

CELLS = dict(zip(CELL_TYPES, (keras.layers.GRUCell, keras.layers.LSTMCell,
                              keras.layers.SimpleRNNCell), strict=True))


def make_cell(cell_type: str, units: int, name: str) -> keras.layers.Layer:
    """A GRU, LSTM or SimpleRNN cell (``cell_type`` in ``gru``, ``lstm``, ``rnn``)."""
    if cell_type not in CELLS:
        raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {cell_type!r}")
    return CELLS[cell_type](units, name=name)


def bidirectional_rnn(cell_type: str, units: int, index: int, **rnn_kwargs
                      ) -> keras.layers.Bidirectional:
    """``Bidirectional(RNN(cell))`` named ``birnn_{index}`` (cell ``cell_{index}``), with
    concatenated outputs; ``rnn_kwargs`` go to ``keras.layers.RNN``."""
    template = keras.layers.RNN(make_cell(cell_type, units, f"cell_{index}"), **rnn_kwargs)
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
