"""Recurrent decoder with attention (optionally input feeding and tied output embeddings)."""

from __future__ import annotations

import keras
from keras import ops

from models.attention import Attention
from models.config import ATTENTION_OUTPUTS, INITS
from models.rnn_cells import SAVED_BEFORE_FUSED_LAYERS, num_states, recurrent_layer


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class AttentionDecoder(keras.layers.Layer):
    """Stacked RNN decoder attending over encoder memory (Luong et al., 2015).

    Each step runs the RNN stack, attends from the top hidden state ``h`` to the encoder
    memory, and forms the attentional vector ``a`` that is projected to vocabulary
    logits: Luong's ``a = tanh(W_c [context; h])``, or ``a = LayerNorm(h + W_c context)``
    (the residual form of the TensorFlow NMT tutorial's cross-attention block). With
    ``input_feeding`` the previous ``a`` is joined to the next input embedding, so
    earlier alignment decisions inform the next one; without it the RNN runs over the
    whole target at once and attention is computed for all steps in parallel, which
    trains faster.

    Args:
        vocab_size: target vocabulary size.
        embedding_dim: size of the target embeddings.
        units: hidden size of every decoder RNN layer.
        num_layers: number of stacked RNN layers.
        cell: ``"gru"``, ``"lstm"`` or ``"rnn"``.
        attention: ``"scaled_dot"``, ``"additive"`` (Bahdanau), ``"dot"`` or ``"general"``
            (Luong); see ``Attention``.
        attention_units: query/key size of the scaled-dot and additive scorers.
        attentional_dim: size of the attentional vector ``a``; must equal ``units`` for
            ``residual_norm`` and ``embedding_dim`` when ``tie_embeddings`` is set.
        input_feeding: feed the previous attentional vector into the next step.
        tie_embeddings: share the target embedding matrix with the output projection.
        dropout: dropout on embeddings and on ``a`` before the projection.
        init: ``"bridge"`` starts the RNN states from ``tanh(W final)`` of the encoder's
            final states; ``"zeros"`` starts them at zero, so attention is the decoder's
            only way to see the source.
        attention_output: ``"tanh"`` (Luong) or ``"residual_norm"``; the residual form
            needs ``attentional_dim == units``.
        legacy_rnn: ``keras.layers.RNN`` over cells, as older checkpoints store them,
            instead of Keras' GRU/LSTM layers (see ``models.rnn_cells``).
    """

    def __init__(self, vocab_size, embedding_dim=256, units=512, num_layers=1, cell="gru",
                 attention="scaled_dot", attention_units=256, attentional_dim=512,
                 input_feeding=False, tie_embeddings=False, dropout=0.0, init="zeros",
                 attention_output="residual_norm", legacy_rnn=False, **kwargs):
        super().__init__(**kwargs)
        if tie_embeddings and attentional_dim != embedding_dim:
            raise ValueError(
                f"model.tie_embeddings needs model.attentional_dim ({attentional_dim}) equal "
                f"to model.embedding_dim ({embedding_dim})"
            )
        if init not in INITS:
            raise ValueError(f"model.decoder_init must be one of {INITS}, got {init!r}")
        if attention_output not in ATTENTION_OUTPUTS:
            raise ValueError(f"model.attention_output must be one of {ATTENTION_OUTPUTS}, "
                             f"got {attention_output!r}")
        if attention_output == "residual_norm" and attentional_dim != units:
            raise ValueError(
                f"model.attention_output=residual_norm needs model.attentional_dim "
                f"({attentional_dim}) equal to model.decoder_units ({units})"
            )
        self.init, self.attention_output = init, attention_output
        self.vocab_size, self.embedding_dim, self.units = vocab_size, embedding_dim, units
        self.num_layers, self.cell, self.attention_score = num_layers, cell, attention
        self.attention_units, self.attentional_dim = attention_units, attentional_dim
        self.input_feeding, self.tie_embeddings, self.dropout = input_feeding, tie_embeddings, dropout
        self.states_per_layer, self.legacy_rnn = num_states(cell), legacy_rnn

        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        if init == "bridge":
            self.bridge = keras.layers.Dense(units * num_layers * self.states_per_layer,
                                             activation="tanh", name="bridge")
        # Without input feeding the layers run over the whole target (on cuDNN on a GPU);
        # input feeding and inference step their cells one token at a time.
        self.rnns = [recurrent_layer(cell, units, i, legacy_rnn, return_sequences=True,
                                     name=f"rnn_{i}")
                     for i in range(num_layers)]
        self.attention = Attention(attention, attention_units, name="attention")
        if attention_output == "tanh":
            self.combine = keras.layers.Dense(attentional_dim, activation="tanh",
                                              use_bias=False, name="combine")
        else:
            self.combine = keras.layers.Dense(attentional_dim, name="combine")
            self.norm = keras.layers.LayerNormalization(name="norm")
        self.drop = keras.layers.Dropout(dropout)
        if not tie_embeddings:
            self.projection = keras.layers.Dense(vocab_size, name="projection")

    def build(self, target_in_shape, memory_shape, memory_mask_shape=None, final_shape=None):
        batch, memory_dim = memory_shape[0], memory_shape[-1]
        self.embedding.build(target_in_shape)
        if self.init == "bridge":
            self.bridge.build((batch, memory_dim))
        rnn_in = self.embedding_dim + (self.attentional_dim if self.input_feeding else 0)
        for rnn in self.rnns:
            rnn.build((batch, None, rnn_in))
            rnn_in = self.units
        self.attention.build((batch, None, self.units), memory_shape)
        if self.attention_output == "tanh":
            self.combine.build((batch, None, memory_dim + self.units))
        else:
            self.combine.build((batch, None, memory_dim))
            self.norm.build((batch, None, self.units))
        if self.tie_embeddings:
            self.output_bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros",
                                               name="output_bias")
        else:
            self.projection.build((batch, None, self.attentional_dim))

    # -- pieces shared by teacher forcing and step-wise decoding -------------------------

    def initial_state(self, final, batch_size=None):
        """Decoder start: RNN states (zero, or bridged from the encoder summary ``final``)
        and a zero attentional vector.

        Returns ``(states, attentional)``; ``states`` is a list per layer of the cell's
        state tensors ([h] or [h, c]).
        """
        n, k = self.num_layers * self.states_per_layer, self.states_per_layer
        if self.init == "bridge":
            flat = ops.split(self.bridge(final), n, axis=-1)
        else:
            flat = [ops.zeros((ops.shape(final)[0], self.units), final.dtype)] * n
        states = [flat[i * k:(i + 1) * k] for i in range(self.num_layers)]
        attentional = ops.zeros((ops.shape(final)[0], self.attentional_dim), final.dtype)
        return states, attentional

    def logits(self, attentional):
        """Vocabulary logits from attentional vectors [..., attentional_dim]."""
        if self.tie_embeddings:
            return ops.matmul(attentional, ops.transpose(self.embedding.embeddings)) + self.output_bias
        return self.projection(attentional)

    def _attend(self, hidden, memory, keys, memory_mask):
        context, weights = self.attention(hidden, memory, memory_mask, keys=keys)
        if self.attention_output == "tanh":
            return self.combine(ops.concatenate([context, hidden], axis=-1)), weights
        return self.norm(hidden + self.combine(context)), weights

    def _cells_step(self, x, states, training):
        """One time step through the RNN stack: ``(top output, new states per layer)``."""
        new_states = []
        for rnn, layer_states in zip(self.rnns, states):
            x, layer_states = rnn.cell(x, layer_states, training=training)
            new_states.append(list(layer_states))
        return x, new_states

    def step(self, tokens, states, attentional, memory, keys, memory_mask):
        """One inference step for tokens [B]: returns ``(logits, states, attentional, weights)``."""
        x = self.embedding(tokens)
        if self.input_feeding:
            x = ops.concatenate([x, attentional], axis=-1)
        x, new_states = self._cells_step(x, states, training=False)
        attentional, weights = self._attend(ops.expand_dims(x, 1), memory, keys, memory_mask)
        attentional, weights = attentional[:, 0], weights[:, 0]
        return self.logits(attentional), new_states, attentional, weights

    # -- teacher forcing -----------------------------------------------------------------

    def call(self, target_in, memory, memory_mask, final, training=False):
        """Teacher-forced logits [B, T, V] for decoder inputs [B, T] (BOS + target)."""
        return self.logits(self.attentional_vectors(target_in, memory, memory_mask, final,
                                                    training=training))

    def attentional_vectors(self, target_in, memory, memory_mask, final, training=False):
        """Teacher-forced attentional vectors [B, T, attentional_dim] (dropout applied in
        training): ``call`` without the projection to the vocabulary."""
        keys = self.attention.precompute_keys(memory)
        states, attentional = self.initial_state(final)
        x = self.drop(self.embedding(target_in), training=training)
        if self.input_feeding:
            attentional = self._scan_with_feeding(x, states, attentional, memory, keys,
                                                  memory_mask, training)
        else:
            for rnn, layer_states in zip(self.rnns, states):
                x = rnn(x, initial_state=layer_states, training=training)
            attentional, _ = self._attend(x, memory, keys, memory_mask)
        return self.drop(attentional, training=training)

    def _scan_with_feeding(self, x, states, attentional, memory, keys, memory_mask, training):
        def body(carry, x_t):
            attentional, states = carry
            h, new_states = self._cells_step(ops.concatenate([x_t, attentional], axis=-1), states,
                                             training)
            attentional, _ = self._attend(ops.expand_dims(h, 1), memory, keys, memory_mask)
            carry = (attentional[:, 0], new_states)
            # Keras' TensorFlow scan stacks outputs with the carry's structure, so the
            # whole carry is emitted; only the attentional vectors are kept below.
            return carry, carry

        _, (outputs, _) = ops.scan(body, (attentional, states), ops.transpose(x, (1, 0, 2)))
        return ops.transpose(outputs, (1, 0, 2))

    def compute_mask(self, *args, **kwargs):
        return None

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
            "units": self.units, "num_layers": self.num_layers, "cell": self.cell,
            "attention": self.attention_score, "attention_units": self.attention_units,
            "attentional_dim": self.attentional_dim, "input_feeding": self.input_feeding,
            "tie_embeddings": self.tie_embeddings, "dropout": self.dropout, "init": self.init,
            "attention_output": self.attention_output, "legacy_rnn": self.legacy_rnn,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**SAVED_BEFORE_FUSED_LAYERS, **config})
