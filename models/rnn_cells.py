"""Choosing a recurrent cell type by name."""

from __future__ import annotations

import keras

CELLS = {"gru": keras.layers.GRUCell, "lstm": keras.layers.LSTMCell, "rnn": keras.layers.SimpleRNNCell}


def make_cell(cell_type: str, units: int, name: str) -> keras.layers.Layer:
    """A GRU, LSTM or SimpleRNN cell (``cell_type`` in ``gru``, ``lstm``, ``rnn``)."""
    if cell_type not in CELLS:
        raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {cell_type!r}")
    return CELLS[cell_type](units, name=name)


def num_states(cell_type: str) -> int:
    """State tensors per layer: LSTM carries (h, c), GRU and SimpleRNN carry h."""
    return 2 if cell_type == "lstm" else 1
