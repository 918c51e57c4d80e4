"""Bidirectional recurrent encoder."""

from __future__ import annotations

import keras
from keras import ops

from data_prep.special_ids import PAD_ID
from models.rnn_cells import SAVED_BEFORE_FUSED_LAYERS, bidirectional_rnn, num_states


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class RNNEncoder(keras.layers.Layer):
    """Embeddings followed by stacked bidirectional RNN layers.

    Padding (``PAD_ID``, 0) is masked: Keras RNNs carry their state unchanged across masked
    steps, so the backward direction starts at each sentence's real last token and the
    padding never changes a real position's output.

    Args:
        vocab_size: source vocabulary size.
        embedding_dim: size of the token embeddings.
        units: hidden size of each direction (outputs have ``2 * units`` features).
        num_layers: number of stacked bidirectional layers.
        cell: ``"gru"``, ``"lstm"`` or ``"rnn"``.
        dropout: dropout on embeddings and between layers.
        legacy_rnn: ``keras.layers.RNN`` over cells, as older checkpoints store them,
            instead of Keras' GRU/LSTM layers (see ``models.rnn_cells``).
    """

    def __init__(self, vocab_size, embedding_dim=256, units=256, num_layers=1, cell="gru",
                 dropout=0.0, legacy_rnn=False, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.num_layers, self.cell, self.dropout = num_layers, cell, dropout
        self.legacy_rnn = legacy_rnn
        # mask_zero relies on PAD_ID being 0 (see data_prep.special_ids).
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True,
                                                name="embedding")
        self.layers_ = [bidirectional_rnn(cell, units, i, legacy_rnn, return_sequences=True,
                                          return_state=True)
                        for i in range(num_layers)]
        self.drop = keras.layers.Dropout(dropout)

    def build(self, source_shape):
        self.embedding.build(source_shape)
        shape = (*source_shape, self.embedding_dim)
        for layer in self.layers_:
            layer.build(shape)
            shape = (*source_shape, 2 * self.units)

    def call(self, source, training=False):
        """Encode token ids [B, S].

        Returns ``(memory [B, S, 2*units], mask [B, S] bool, final [B, 2*units])`` where
        ``final`` joins the last layer's forward and backward final hidden states.
        """
        mask = ops.not_equal(source, PAD_ID)
        x = self.drop(self.embedding(source), training=training)
        for i, layer in enumerate(self.layers_):
            if i > 0:
                x = self.drop(x, training=training)
            x, *states = layer(x, mask=mask, training=training)
        n = num_states(self.cell)
        # States come as forward states then backward states; [0] is h for every cell type.
        final = ops.concatenate([states[0], states[n]], axis=-1)
        return x, mask, final

    def compute_mask(self, source, previous_mask=None):
        return None

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
            "units": self.units, "num_layers": self.num_layers, "cell": self.cell,
            "dropout": self.dropout, "legacy_rnn": self.legacy_rnn,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**SAVED_BEFORE_FUSED_LAYERS, **config})
