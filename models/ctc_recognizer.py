"""The speech model: convolutional front end, bidirectional (or causal) RNN, CTC output."""

from __future__ import annotations

from dataclasses import asdict

import keras
from keras import ops

# Registers FusedAdam, the optimizer the trainer compiles with, so that load_model
# finds it in checkpoints.
from models import fused_adam  # noqa: F401
from models.config import CTCRecognizerConfig
from models.ctc_frames import subsampled_length
from models.rnn_cells import SAVED_BEFORE_FUSED_LAYERS, bidirectional_rnn, recurrent_layer

FREQUENCY_KERNEL = 3  # 2-D front end: frequency bins per filter, zero-padded by 1 each side


def conv_input_shapes(config: CTCRecognizerConfig) -> list[tuple[int, ...]]:
    """The shape of one input frame of each conv layer: ``(features,)`` then
    ``(channels,)`` for 1-D convolutions; ``(bins, channels)`` for 2-D, where the
    features come as one channel and each layer halves the bins."""
    c = config
    if c.conv_type == "1d":
        return [(c.num_features if i == 0 else c.conv_channels,) for i in range(c.conv_layers)]
    shapes, bins = [], c.num_features
    for i in range(c.conv_layers):
        shapes.append((bins, 1 if i == 0 else c.conv_channels))
        bins = subsampled_length(bins, 1, 2)
    return shapes


def conv_border(config: CTCRecognizerConfig) -> tuple[int, int]:
    """(left, right) zero frames padded around each conv layer's input.

    (k - 1) in all, so a stride-s convolution outputs ceil(n / s) frames whose windows do
    not depend on the batch. Bidirectional models center the window ((k - 1) // 2 on the
    left); causal ones put all but ``lookahead`` frames on the left, so an output frame
    sees at most ``lookahead`` input frames past its own.
    """
    k = config.conv_kernel
    right = config.lookahead if config.causal else k // 2
    return k - 1 - right, right


def tiny_batch(num_features: int) -> dict:
    """One utterance of 8 zero frames: the batch ``build`` runs to create weights."""
    return {"features": ops.zeros((1, 8, num_features)), "feature_lengths": ops.array([8], "int32")}


def _frame_mask(x, lengths):
    """[B, T] True for the real frames of a [B, T, ...] batch."""
    return ops.arange(ops.shape(x)[1])[None, :] < lengths[:, None]


def per_frame(mask, x):
    """A [B, T] frame mask as [B, T, 1, ...] in ``x``'s dtype, to multiply the frames
    ``x`` by ([B, T, C] for 1-D convolutions, [B, T, F, C] for 2-D)."""
    return ops.reshape(ops.cast(mask, x.dtype), (*ops.shape(mask), *[1] * (len(x.shape) - 2)))


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class CTCRecognizer(keras.Model):
    """Acoustic model trained with CTC.

    ``call({"features": [B, T, F], "feature_lengths": [B]})`` returns logits [B, T', V]
    with ``T' = subsampled_length(T)``; frames past an utterance's length are padding.
    The training loss is ``keras.ops.ctc_loss`` with ``blank_index`` as the blank, over
    each utterance's true label and frame counts: labels come padded with -1 and the
    frame counts from ``feature_lengths``, which is why the loss lives in
    ``compute_loss`` (a Keras loss only sees ``y_true`` and ``y_pred``).

    With ``causal``, no output frame depends on input frames more than ``lookahead``
    frames (per conv layer) past its own, and the RNNs run forward only:
    ``models.ctc_streaming.StreamingRecognizer`` then runs the model chunk by chunk.

    Args:
        legacy_rnn: the recurrent layers of older checkpoints, saved without this field
            (``keras.layers.RNN`` over cells; see ``models.rnn_cells``). Not a config
            field: it changes how weights are stored, not what the model computes.
        **config: the fields of ``CTCRecognizerConfig``.
    """

    def __init__(self, legacy_rnn=False, **kwargs):
        fields = CTCRecognizerConfig.__dataclass_fields__
        model_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
        super().__init__(**kwargs)
        self.config, self.legacy_rnn = CTCRecognizerConfig(**model_kwargs), legacy_rnn
        c = self.config
        # Explicit borders and "valid" convolutions instead of padding="same": TensorFlow's
        # "same" splits its padding by the input length's parity, so the frame alignment
        # (and each output) would depend on how much padding a batch has.
        two_d = c.conv_type == "2d"
        conv, kernel, strides = ((keras.layers.Conv2D, (c.conv_kernel, FREQUENCY_KERNEL),
                                  (c.conv_stride, 2)) if two_d
                                 else (keras.layers.Conv1D, c.conv_kernel, c.conv_stride))
        self.convs = [conv(c.conv_channels, kernel, strides=strides, padding="valid",
                           name=f"conv_{i}")
                      for i in range(c.conv_layers)]
        # Layer (not batch) normalization of each frame: batch statistics would include
        # padding. A 2-D frame's bins and channels are normalized together; normalizing
        # each bin's channels alone would erase how loud the bins are against each other.
        axis = (-2, -1) if two_d else -1
        self.conv_norms = [keras.layers.LayerNormalization(axis=axis, name=f"conv_norm_{i}")
                           for i in range(c.conv_layers)]
        if c.causal:
            # return_state: a stream carries each layer's state from chunk to chunk.
            self.rnns = [recurrent_layer(c.cell, c.rnn_units, i, legacy_rnn,
                                         return_sequences=True, return_state=True,
                                         name=f"rnn_{i}")
                         for i in range(c.rnn_layers)]
        else:
            self.rnns = [bidirectional_rnn(c.cell, c.rnn_units, i, legacy_rnn,
                                           return_sequences=True)
                         for i in range(c.rnn_layers)]
        self.drop = keras.layers.Dropout(c.dropout)
        self.output_layer = keras.layers.Dense(c.vocab_size, name="logits")
        self.intermediate_output = (keras.layers.Dense(c.vocab_size, name="intermediate_logits")
                                    if c.intermediate_ctc_layer else None)

    def build(self, input_shape=None):
        # Create every weight by running a tiny batch, so a freshly constructed (or
        # deserialized) model has all its variables before weights are loaded.
        # One encoder pass feeds both output layers (the intermediate one is not on call's
        # path).
        encoded, intermediate = self._encode(tiny_batch(self.config.num_features))
        self.output_layer(encoded)
        if intermediate is not None:
            self.intermediate_output(intermediate)
        self.built = True

    def output_lengths(self, feature_lengths):
        """Logit frames of each utterance, from its feature frame count."""
        return subsampled_length(ops.cast(feature_lengths, "int32"), self.config.conv_layers,
                                 self.config.conv_stride)

    def call(self, inputs, training=False):
        return self.output_layer(self.drop(self.encode(inputs, training), training=training))

    def encode(self, inputs, training=False):
        """The top RNN layer's outputs [B, T', D] (before dropout and the output layer):
        what the CTC output layer reads, and an attention decoder's memory."""
        return self._encode(inputs, training)[0]

    def _encode(self, inputs, training=False):
        """``encode``'s outputs and those of RNN layer ``intermediate_ctc_layer`` (None
        when 0)."""
        c = self.config
        x = inputs["features"]
        lengths = ops.cast(inputs["feature_lengths"], "int32")
        x = self.front_end_input(x)
        border = ((0, 0), conv_border(c), *[(0, 0)] * (len(x.shape) - 2))
        for conv, norm in zip(self.convs, self.conv_norms, strict=True):
            # Zero every frame past an utterance's end so the next window sees the same
            # zeros as it would without batch padding.
            x = x * per_frame(_frame_mask(x, lengths), x)
            x = self.conv_block(conv, norm, ops.pad(x, border))
            lengths = subsampled_length(lengths, 1, c.conv_stride)
        x = self.front_end_output(x)
        # Keras RNNs carry their state across masked steps, so the backward direction
        # starts at each utterance's last real frame and padding never leaks in.
        mask = _frame_mask(x, lengths)
        intermediate = None
        for number, layer in enumerate(self.rnns, 1):
            x = layer(self.drop(x, training=training), mask=mask, training=training)
            if c.causal:
                x = x[0]  # without the final states
            if number == c.intermediate_ctc_layer:
                intermediate = x
        return x, intermediate

    def front_end_input(self, features):
        """Features [B, T, F] as the first conv layer's input ([B, T, F, 1] for 2-D)."""
        return ops.expand_dims(features, -1) if self.config.conv_type == "2d" else features

    def conv_block(self, conv, norm, x):
        """One conv layer over frames ``x`` already bordered in time (2-D: zero-padded
        here by one frequency bin each side, so F bins give ceil(F / 2))."""
        if self.config.conv_type == "2d":
            x = ops.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
        return ops.relu(norm(conv(x)))

    def front_end_output(self, x):
        """The last conv layer's frames as the RNN's input [B, T', D] (2-D: D = bins x
        channels)."""
        if self.config.conv_type == "2d":
            x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], x.shape[2] * x.shape[3]))
        return x

    @property
    def loss_needs_own_pass(self) -> bool:
        """Whether the training loss needs more than ``call``'s logits (here: the
        intermediate CTC layer's), so ``compute_loss`` runs its own forward pass."""
        return self.intermediate_output is not None

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total, count = (self.loss_sum_and_count(x, y, training=training)
                        if self.loss_needs_own_pass else self._ctc_sum_and_count(x, y, y_pred))
        total = total / ops.maximum(count, 1.0)
        if self.losses:  # layer-added losses, as keras.Model.compute_loss would add them
            total = total + ops.sum(self.losses)
        return total

    def loss_sum_and_count(self, x, y, training=False):
        """The CTC loss summed over the utterances of a batch, and their number (float32),
        for the trainer: the loss is a mean per utterance, also over a batch split across
        replicas."""
        return self.encoded_ctc_sum_and_count(x, y, training)[1:]

    def encoded_ctc_sum_and_count(self, x, y, training=False):
        """The top RNN layer's outputs, and ``loss_sum_and_count``'s CTC loss (with the
        intermediate CTC loss mixed in when configured) and utterance count."""
        encoded, intermediate = self._encode(x, training)
        total, count = self._ctc_sum_and_count(
            x, y, self.output_layer(self.drop(encoded, training=training)))
        if intermediate is not None:
            weight = self.config.intermediate_ctc_weight
            extra, _ = self._ctc_sum_and_count(
                x, y, self.intermediate_output(self.drop(intermediate, training=training)))
            total = (1.0 - weight) * total + weight * extra
        return encoded, total, count

    def _ctc_sum_and_count(self, x, y, y_pred):
        labels = ops.cast(y, "int32")
        # Labels are padded with -1; ctc_loss reads only the first label_length of each row.
        label_lengths = ops.sum(ops.cast(labels >= 0, "int32"), axis=-1)
        loss = ops.ctc_loss(labels, ops.cast(y_pred, "float32"), label_lengths,
                            self.output_lengths(x["feature_lengths"]),
                            mask_index=self.config.blank_index)
        return ops.sum(loss), ops.cast(ops.shape(labels)[0], "float32")

    def compute_mask(self, inputs, mask=None):
        return None

    @classmethod
    def from_config(cls, config):
        # Checkpoints saved before legacy_rnn existed load with the structure they have.
        return cls(**{**SAVED_BEFORE_FUSED_LAYERS, **config})

    def get_config(self):
        return {**super().get_config(), **asdict(self.config), "legacy_rnn": self.legacy_rnn}
