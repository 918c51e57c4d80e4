"""The translation model: bidirectional RNN encoder + attention RNN decoder."""

from __future__ import annotations

from dataclasses import asdict

import keras
from keras import ops

from data_prep.special_ids import PAD_ID

# Registers FusedAdam, the optimizer the trainer compiles with, so that load_model
# finds it in checkpoints.
from models import fused_adam  # noqa: F401
from models.attention_decoder import AttentionDecoder
from models.config import Seq2SeqConfig
from models.rnn_cells import SAVED_BEFORE_FUSED_LAYERS
from models.rnn_encoder import RNNEncoder

# Options added after models were first saved, with the behaviour those models have.
LEGACY_DEFAULTS = {"decoder_init": "bridge", "attention_output": "tanh",
                   **SAVED_BEFORE_FUSED_LAYERS}


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class Seq2SeqTranslator(keras.Model):
    """Encoder-decoder translation model.

    ``call({"source": [B, S], "target_in": [B, T]})`` returns teacher-forced logits
    [B, T, V]. ``encode`` and ``decoder.step`` are the pieces greedy and beam search use.

    Args:
        legacy_rnn: the recurrent layers of older checkpoints, saved without this field
            (``keras.layers.RNN`` over cells; see ``models.rnn_cells``). Not a
            ``Seq2SeqConfig`` field: it changes how weights are stored, not what the model
            computes, so experiment configs and their fingerprints do not mention it.
        **config: the fields of ``Seq2SeqConfig``.
    """

    def __init__(self, legacy_rnn=False, **kwargs):
        fields = Seq2SeqConfig.__dataclass_fields__
        model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        super().__init__(**kwargs)
        self.config, self.legacy_rnn = Seq2SeqConfig(**model_kwargs), legacy_rnn
        c = self.config
        self.encoder = RNNEncoder(
            c.source_vocab_size, c.embedding_dim, c.encoder_units, c.encoder_layers, c.cell,
            c.dropout, legacy_rnn=legacy_rnn, name="encoder",
        )
        self.decoder = AttentionDecoder(
            c.target_vocab_size, embedding_dim=c.embedding_dim, units=c.decoder_units,
            num_layers=c.decoder_layers, cell=c.cell, attention=c.attention,
            attention_units=c.attention_units, attentional_dim=c.attentional_dim,
            input_feeding=c.input_feeding, tie_embeddings=c.tie_embeddings, dropout=c.dropout,
            init=c.decoder_init, attention_output=c.attention_output, legacy_rnn=legacy_rnn,
            name="decoder",
        )

    def build(self, input_shape=None):
        # Build every weight by running a tiny batch, so a freshly constructed (or
        # deserialized) model has all its variables before weights are loaded.
        # call() rather than __call__, which would re-enter build().
        dummy = ops.ones((1, 2), "int32")
        self.call({"source": dummy, "target_in": dummy})
        self.built = True

    def call(self, inputs, training=False):
        memory, mask, final = self.encoder(inputs["source"], training=training)
        return self.decoder(inputs["target_in"], memory, mask, final, training=training)

    def loss_sum_and_count(self, x, y, training=False):
        """The compiled token loss (``MaskedLabelSmoothingLoss``) summed over the real
        target tokens of a batch, and their number, for the trainer.

        Same value as the loss of ``call``'s logits, but only real tokens are projected to
        the vocabulary: the projection is about 60% of the model's FLOPs (8000 x 512 per
        token against ~5 MFLOP for everything else) and padding 10-15% of a bucketed batch.
        """
        memory, mask, final = self.encoder(x["source"], training=training)
        attentional = self.decoder.attentional_vectors(x["target_in"], memory, mask, final,
                                                       training=training)
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        # Row indices of the real tokens in the flattened [B * T] batch.
        real = ops.nonzero(ops.not_equal(labels, PAD_ID))[0]
        attentional = ops.take(
            ops.reshape(attentional, (-1, ops.shape(attentional)[-1])), real, axis=0)
        return self.loss.sum_and_count(ops.take(labels, real), self.decoder.logits(attentional))

    def encode(self, source):
        """Inference-time encoding: ``(memory, keys, mask, states, attentional)``."""
        memory, mask, final = self.encoder(source, training=False)
        keys = self.decoder.attention.precompute_keys(memory)
        states, attentional = self.decoder.initial_state(final)
        return memory, keys, mask, states, attentional

    @classmethod
    def from_config(cls, config):
        # Models saved before these options existed had a bridge, Luong's tanh
        # attentional vector and RNN-over-cell layers; their checkpoints must load as what
        # they were.
        return cls(**{**LEGACY_DEFAULTS, **config})

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {**super().get_config(), **asdict(self.config), "legacy_rnn": self.legacy_rnn}
