"""Attention over encoder states: Bahdanau (additive), Luong (dot, general) and scaled
dot-product scoring."""

from __future__ import annotations

import keras
from keras import ops

from models.config import SCORES


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class Attention(keras.layers.Layer):
    """Scores decoder queries against encoder memory and returns context vectors.

    The memory-side projection does not depend on the query, so ``precompute_keys`` runs
    it once per source sentence and every decoding step reuses it.

    Args:
        score: ``"additive"`` (Bahdanau: ``v^T tanh(W_q q + W_k m)``), ``"dot"``
            (Luong: ``q^T m``, needs equal sizes), ``"general"`` (Luong: ``q^T W m``) or
            ``"scaled_dot"`` (one head of Vaswani et al.'s attention:
            ``(W_q q + b_q)^T (W_k m + b_k) / sqrt(units)``, the scorer of the TensorFlow
            NMT tutorial's ``MultiHeadAttention``).
        units: hidden size of the additive and scaled-dot scorers (ignored by the others).
    """

    def __init__(self, score: str = "scaled_dot", units: int = 256, **kwargs):
        super().__init__(**kwargs)
        if score not in SCORES:
            raise ValueError(f"model.attention must be one of {SCORES}, got {score!r}")
        self.score = score
        self.units = units

    def build(self, query_shape, memory_shape, memory_mask_shape=None, keys_shape=None):
        query_dim, memory_dim = query_shape[-1], memory_shape[-1]
        if self.score == "dot" and query_dim != memory_dim:
            raise ValueError(
                f"dot attention needs equal decoder ({query_dim}) and encoder output "
                f"({memory_dim}) sizes; use 'general' or change model.decoder_units"
            )
        if self.score == "general":
            self.key_proj = keras.layers.Dense(query_dim, use_bias=False, name="key_proj")
            self.key_proj.build(memory_shape)
        elif self.score == "scaled_dot":
            # As in Keras' MultiHeadAttention both projections have biases; the key bias
            # shifts all scores of a query equally, so the softmax ignores it.
            self.key_proj = keras.layers.Dense(self.units, name="key_proj")
            self.key_proj.build(memory_shape)
            self.query_proj = keras.layers.Dense(self.units, name="query_proj")
            self.query_proj.build(query_shape)
        elif self.score == "additive":
            self.key_proj = keras.layers.Dense(self.units, use_bias=False, name="key_proj")
            self.key_proj.build(memory_shape)
            self.query_proj = keras.layers.Dense(self.units, use_bias=True, name="query_proj")
            self.query_proj.build(query_shape)
            self.energy = keras.layers.Dense(1, use_bias=False, name="energy")
            self.energy.build((None, self.units))

    def precompute_keys(self, memory):
        """Memory-side projection, [B, S, D_m] -> [B, S, D_k]."""
        return memory if self.score == "dot" else self.key_proj(memory)

    def call(self, query, memory, memory_mask, keys=None):
        """Attend from ``query`` [B, T, D_q] to ``memory`` [B, S, D_m].

        ``memory_mask`` [B, S] is true at real (non-padding) source positions. Returns
        ``(context [B, T, D_m], weights [B, T, S])``.
        """
        if keys is None:
            keys = self.precompute_keys(memory)
        if self.score == "additive":
            hidden = ops.tanh(ops.expand_dims(self.query_proj(query), 2) + ops.expand_dims(keys, 1))
            scores = ops.squeeze(self.energy(hidden), -1)
        elif self.score == "scaled_dot":
            # The 1/sqrt(units) keeps the scores' variance near 1 at initialization, so
            # the softmax starts spread out and its gradient is not vanishingly small.
            query = self.query_proj(query) / (self.units ** 0.5)
            scores = ops.einsum("btd,bsd->bts", query, keys)
        else:
            scores = ops.einsum("btd,bsd->bts", query, keys)
        # Padding gets a large negative score, so its softmax weight is exactly 0. In
        # float32 even under mixed precision: -1e9 is -inf in float16, and a source of
        # padding only (a stand-in row of a distributed batch) would give 0/0.
        mask = ops.expand_dims(ops.cast(memory_mask, "bool"), 1)
        scores = ops.where(mask, ops.cast(scores, "float32"), -1e9)
        weights = ops.cast(ops.softmax(scores, axis=-1), memory.dtype)
        return ops.einsum("bts,bsd->btd", weights, memory), weights

    def get_config(self):
        return {**super().get_config(), "score": self.score, "units": self.units}
