"""keras-io's "Automatic Speech Recognition using CTC" model, the speech reference.

The Keras example a user would start from (``examples/audio/ctc_asr.py``), DeepSpeech2-like:
two 2-D convolutions over the spectrogram (32 filters, kernels 11x41 and 11x21 in time x
frequency, strides 2x2 and 1x2, no bias, batch normalization, ReLU), five bidirectional
GRUs (512 units per direction in the example; dropout 0.5 between them), a dense ReLU layer
of twice the GRU width (dropout 0.5) and a character CTC output; Adam at 1e-4, batches of 32
padded to their longest utterance (no bucketing). ``benchmarks/speech_reference.py``
compares it with our recognizer at the same parameter count (``reference_units``).

Written for this project in Keras 3, on our batches (``{"features", "feature_lengths"}``,
labels padded with -1) and vocabulary (blank at index 0; the example's is last), with
logits out (the example ends with a softmax; the loss applies it) and a CTC loss over true
frame and label counts (the example's counts padding too).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from data_prep.speech_dataset import LABEL_PAD, _inputs, _ragged

# The example's recipe. Convolutions: (filters, kernel, strides), (time, frequency).
CONVOLUTIONS = ((32, (11, 41), (2, 2)), (32, (11, 21), (1, 2)))
RNN_LAYERS = 5
EXAMPLE_UNITS = 512  # its GRU width, before scaling to our parameter count
DROPOUT = 0.5
LEARNING_RATE = 1e-4
BATCH_SIZE = 32


# -- the reference model --------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceConfig:
    """The fields ``CTCDecoder`` reads (``num_features``, ``blank_index``) and the width."""

    num_features: int
    vocab_size: int
    rnn_units: int
    blank_index: int = 0


def frequency_bins(num_features: int) -> int:
    """Frequency bins left by the convolutions ("same" padding: ceil(n / stride) each)."""
    for _, _, (_, stride) in CONVOLUTIONS:
        num_features = -(-num_features // stride)
    return num_features


class DeepSpeech2Reference(keras.Model):
    """keras-io's CTC ASR model (DeepSpeech2-like), on our batches.

    ``call({"features": [B, T, F], "feature_lengths": [B]})`` returns logits
    [B, ceil(T / 2), V]. As in the example, nothing is masked: the convolutions, batch
    normalization and the backward GRUs see each batch's padding.

    Args:
        num_features: F, the feature bins per frame.
        vocab_size: V, output classes, the CTC blank included.
        rnn_units: GRU units per direction (the example's 512, or a scaled width).
        blank_index: the CTC blank's class.
    """

    def __init__(self, num_features, vocab_size, rnn_units, blank_index=0, **kwargs):
        super().__init__(**kwargs)
        self.config = ReferenceConfig(num_features, vocab_size, rnn_units, blank_index)
        L = keras.layers
        self.convs = [L.Conv2D(filters, kernel, strides=strides, padding="same",
                               use_bias=False, name=f"conv_{i + 1}")
                      for i, (filters, kernel, strides) in enumerate(CONVOLUTIONS)]
        self.norms = [L.BatchNormalization(name=f"conv_{i + 1}_bn")
                      for i in range(len(CONVOLUTIONS))]
        self.rnn_inputs = frequency_bins(num_features) * CONVOLUTIONS[-1][0]
        self.rnns = [L.Bidirectional(L.GRU(rnn_units, return_sequences=True),
                                     merge_mode="concat", name=f"bidirectional_{i + 1}")
                     for i in range(RNN_LAYERS)]
        self.dropout = L.Dropout(DROPOUT)
        self.dense = L.Dense(2 * rnn_units, activation="relu", name="dense_1")
        self.output_layer = L.Dense(vocab_size, name="logits")

    def build(self, input_shape=None):
        # Every weight now, so the parameter count is known before training.
        self.call({"features": ops.zeros((1, 8, self.config.num_features)),
                   "feature_lengths": ops.array([8], "int32")})
        self.built = True

    def output_lengths(self, feature_lengths):
        """Logit frames of each utterance: the first convolution halves time."""
        return (ops.cast(feature_lengths, "int32") + 1) // 2

    def call(self, inputs, training=False):
        x = ops.expand_dims(inputs["features"], -1)  # the spectrogram as a 1-channel image
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = ops.relu(norm(conv(x), training=training))
        # [B, T', bins, filters] -> [B, T', bins * filters]: one vector per frame.
        x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.rnn_inputs))
        for i, rnn in enumerate(self.rnns):
            x = rnn(x, training=training)
            if i < len(self.rnns) - 1:
                x = self.dropout(x, training=training)
        return self.output_layer(self.dropout(self.dense(x), training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # The mean CTC loss per utterance, as the example's ctc_batch_cost under fit, but
        # over true lengths: labels come padded with -1, frames per feature_lengths.
        labels = ops.cast(y, "int32")
        label_lengths = ops.sum(ops.cast(labels >= 0, "int32"), axis=-1)
        loss = ops.ctc_loss(labels, ops.cast(y_pred, "float32"), label_lengths,
                            self.output_lengths(x["feature_lengths"]),
                            mask_index=self.config.blank_index)
        return ops.mean(loss)

    def get_config(self):
        return {**super().get_config(), "num_features": self.config.num_features,
                "vocab_size": self.config.vocab_size, "rnn_units": self.config.rnn_units,
                "blank_index": self.config.blank_index}


def reference_parameters(num_features: int, vocab_size: int, units: int) -> int:
    """Parameter count of ``DeepSpeech2Reference`` (``count_params``: batch normalization's
    moving statistics included; Keras GRUs have two bias vectors)."""
    total, channels = 0, 1
    for filters, (kt, kf), _ in CONVOLUTIONS:
        total += kt * kf * channels * filters + 4 * filters
        channels = filters
    inputs = frequency_bins(num_features) * channels
    for _ in range(RNN_LAYERS):
        total += 2 * (3 * units * (inputs + units) + 6 * units)
        inputs = 2 * units
    return total + (inputs * inputs + inputs) + (inputs * vocab_size + vocab_size)


def reference_units(target_params: int, num_features: int, vocab_size: int) -> int:
    """The GRU width that brings ``DeepSpeech2Reference`` closest to ``target_params``."""
    return min(range(1, 4097), key=lambda u: abs(
        reference_parameters(num_features, vocab_size, u) - target_params))


def build_reference(num_features: int, vocab_size: int, units: int, blank_index: int = 0
                    ) -> DeepSpeech2Reference:
    model = DeepSpeech2Reference(num_features, vocab_size, units, blank_index)
    model.build()
    # The example's optimizer; compile's defaults otherwise (jit_compile="auto": no XLA on
    # a CPU-only machine), and the model computes its own loss.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE))
    return model


def reference_batches(features: list[np.ndarray], labels: list[list[int]], seed: int
                      ) -> tf.data.Dataset:
    """The example's input pipeline on our features: one fixed random order (it shuffles
    its file list once), batches of ``BATCH_SIZE`` padded to their longest utterance."""
    order = np.random.default_rng(seed).permutation(len(features))
    dataset = tf.data.Dataset.from_tensor_slices(
        (_ragged([features[i] for i in order], np.float32),
         _ragged([np.asarray(labels[i]) for i in order], np.int32)))
    dataset = dataset.map(lambda f, y: (_inputs(f), y))
    return dataset.padded_batch(
        BATCH_SIZE, padding_values=({"features": 0.0, "feature_lengths": 0}, LABEL_PAD)
    ).prefetch(tf.data.AUTOTUNE)
