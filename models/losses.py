"""Token-level cross-entropy with label smoothing that ignores padding."""

from __future__ import annotations

import keras
from keras import ops

from data_prep.special_ids import PAD_ID


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class MaskedLabelSmoothingLoss(keras.losses.Loss):
    """Label-smoothed cross-entropy from logits, averaged over non-padding tokens.

    Keras' sparse cross-entropy has no label smoothing, and averaging over the batch
    would count padding; this loss mixes ``(1 - eps) * NLL`` with ``eps`` times the mean
    negative log-probability over the vocabulary (Szegedy et al., 2016), and divides the
    sum by the number of real target tokens.

    Args:
        label_smoothing: the smoothing weight ``eps`` in [0, 1).
        pad_id: label id that marks padding.
    """

    def __init__(self, label_smoothing=0.1, pad_id=PAD_ID, name="masked_label_smoothing", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing, self.pad_id = label_smoothing, pad_id

    def call(self, y_true, y_pred):
        total, count = self.sum_and_count(y_true, y_pred)
        return total / ops.maximum(count, 1.0)

    def sum_and_count(self, y_true, y_pred):
        """The summed loss of the real target tokens and their number (float32), for a
        trainer that averages over the tokens of a batch split across replicas."""
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(y_true, -1), axis=-1), -1)
        smooth = -ops.mean(log_probs, axis=-1)
        loss = (1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        return ops.sum(loss * mask), ops.sum(mask)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "pad_id": self.pad_id}
