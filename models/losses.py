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
        vocab = y_pred.shape[-1]
        # (1 - eps) * NLL + eps * mean(-log p) is the cross-entropy against the smoothed
        # one-hot target, so TensorFlow's fused softmax cross-entropy computes it, and its
        # gradient (softmax - target) in the same pass, instead of log_softmax, a gather
        # of the labels' log-probabilities and the gradients of both.
        target = (ops.one_hot(y_true, vocab) * (1.0 - self.label_smoothing)
                  + self.label_smoothing / vocab)
        loss = ops.categorical_crossentropy(target, ops.cast(y_pred, "float32"), from_logits=True)
        mask = ops.cast(ops.not_equal(y_true, self.pad_id), "float32")
        return ops.sum(loss * mask), ops.sum(mask)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "pad_id": self.pad_id}
