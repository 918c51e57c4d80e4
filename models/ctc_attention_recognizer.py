"""The hybrid CTC/attention speech model: ``CTCRecognizer``'s encoder and CTC head, and an
attention decoder over the encoder's outputs, trained jointly (WeNet, ESPnet)."""

from __future__ import annotations

from dataclasses import asdict

import keras
from keras import ops

from models.attention_decoder import AttentionDecoder
from models.config import AttentionDecoderConfig
from models.ctc_recognizer import CTCRecognizer, _frame_mask, tiny_batch
from models.losses import MaskedLabelSmoothingLoss

PAD = -1  # label padding, as the speech datasets pad their label batches


def decoder_targets(labels, sos_eos: int):
    """Teacher forcing of label ids ``[B, L]`` (padded with -1): decoder inputs
    ``[sos] + labels`` and outputs ``labels + [eos]``, both ``[B, L + 1]``. The inputs'
    padding is ``sos_eos`` (the decoder runs left to right, so it never reaches a real
    output); the outputs' is -1."""
    labels = ops.cast(labels, "int32")
    real = labels >= 0
    lengths = ops.sum(ops.cast(real, "int32"), axis=-1)
    column = ops.ones_like(labels[:, :1])
    target_in = ops.concatenate([column * sos_eos, ops.where(real, labels, sos_eos)], axis=1)
    padded = ops.concatenate([labels, column * PAD], axis=1)
    positions = ops.arange(ops.shape(padded)[1], dtype="int32")[None, :]
    target_out = ops.where(positions == lengths[:, None], sos_eos, ops.where(
        positions < lengths[:, None], padded, PAD))
    return target_in, target_out


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class CTCAttentionRecognizer(CTCRecognizer):
    """A ``CTCRecognizer`` with an attention decoder over its encoder: hybrid CTC/attention.

    The encoder (convolutions and RNNs) and the CTC output layer are ``CTCRecognizer``'s,
    and so is ``call``: it returns the CTC logits ``[B, T', V]``, so every CTC decoder
    (greedy, beam search, closed set, the word language model) and the SavedModel export
    work on this model unchanged. The decoder (``AttentionDecoder``, the translator's)
    attends over the encoder's outputs, its memory masked past each utterance's
    subsampled length; its tokens are the CTC label ids plus ``sos_eos = vocab_size``,
    the start and end of a transcript (as ESPnet's). The blank id is never a target.

    The training loss (``loss_sum_and_count``, for the trainer) is ``ctc_weight`` times
    the CTC loss plus ``1 - ctc_weight`` times the decoder's label-smoothed cross-entropy
    of ``labels + [eos]`` given ``[sos] + labels``, each summed over an utterance and
    averaged over utterances (ESPnet's and WeNet's default normalization).
    ``attention_log_likelihood`` scores hypotheses for attention rescoring
    (``models.attention_rescoring``).

    Args:
        attention_decoder: the fields of ``AttentionDecoderConfig`` (a dict, as
            ``get_config`` stores them, or the dataclass).
        legacy_rnn: as for ``CTCRecognizer`` (the encoder's layers only).
        **config: the fields of ``CTCRecognizerConfig``; ``causal`` is refused (a
            decoder reads the whole utterance, so the model cannot stream).
    """

    def __init__(self, attention_decoder=None, legacy_rnn=False, **kwargs):
        super().__init__(legacy_rnn=legacy_rnn, **kwargs)
        d = attention_decoder if attention_decoder is not None else AttentionDecoderConfig()
        self.decoder_config = (d if isinstance(d, AttentionDecoderConfig)
                               else AttentionDecoderConfig(**d))
        if self.config.causal:
            raise ValueError("a causal (streaming) model cannot have an attention decoder")
        d = self.decoder_config
        self.sos_eos = self.config.vocab_size
        self.decoder = AttentionDecoder(
            self.config.vocab_size + 1, embedding_dim=d.embedding_dim, units=d.units,
            num_layers=d.layers, cell=d.cell, attention=d.attention,
            attention_units=d.attention_units, attentional_dim=d.units,
            input_feeding=d.input_feeding, dropout=d.dropout, init="zeros",
            attention_output="residual_norm", name="attention_decoder")
        self.attention_loss = MaskedLabelSmoothingLoss(d.label_smoothing, pad_id=PAD)

    def build(self, input_shape=None):
        # The encoder's and CTC heads' weights (CTCRecognizer.build), then the decoder's,
        # made by running it on a tiny batch.
        super().build()
        inputs = tiny_batch(self.config.num_features)
        self.decoder_logits(self.encode(inputs), self.output_lengths(inputs["feature_lengths"]),
                            ops.zeros((1, 2), "int32"))

    def decoder_logits(self, encoded, lengths, target_in, training=False):
        """Teacher-forced decoder logits ``[B, L, V + 1]`` for decoder inputs ``[B, L]``
        over encoder outputs ``[B, T', D]`` of ``lengths`` real frames each."""
        # Zero start states: the first state only gives the batch size and dtype.
        return self.decoder(target_in, encoded, _frame_mask(encoded, lengths), encoded[:, 0],
                            training=training)

    def attention_log_likelihood(self, encoded, lengths, hypotheses):
        """``log P(hypothesis + [eos] | utterance)`` under the decoder, teacher-forced: for
        label ids ``[B, L]`` (padded with -1, possibly empty) and the encoder outputs
        ``[B, T', D]`` (with ``lengths``) of the utterance of each row. ``[B]`` float32."""
        target_in, target_out = decoder_targets(hypotheses, self.sos_eos)
        logits = ops.cast(self.decoder_logits(encoded, lengths, target_in), "float32")
        picked = ops.take_along_axis(ops.log_softmax(logits, axis=-1),
                                     ops.expand_dims(ops.maximum(target_out, 0), -1), axis=-1)
        return ops.sum(ops.where(target_out >= 0, picked[..., 0], 0.0), axis=-1)

    def loss_sum_and_count(self, x, y, training=False):
        """The joint loss summed over the utterances of a batch, and their number."""
        encoded, ctc, count = self.encoded_ctc_sum_and_count(x, y, training)
        target_in, target_out = decoder_targets(y, self.sos_eos)
        decoded = self.decoder_logits(encoded, self.output_lengths(x["feature_lengths"]),
                                      target_in, training=training)
        attention, _ = self.attention_loss.sum_and_count(target_out, decoded)
        weight = self.decoder_config.ctc_weight
        return weight * ctc + (1.0 - weight) * attention, count

    @property
    def loss_needs_own_pass(self) -> bool:
        return True  # ``call``'s CTC logits lack the decoder's half of the loss

    def get_config(self):
        return {**super().get_config(), "attention_decoder": asdict(self.decoder_config)}
