"""Running a causal ``CTCRecognizer`` on a stream, one chunk of feature frames at a time.

The chunked computation is the offline one, reorganized: each conv layer keeps the last
``kernel - stride`` frames of its input between chunks, each RNN layer its state, and
frames before the start or past the end of the utterance are zeroed exactly where the
offline model's borders and masks put zeros. So the logits of a stream equal the
offline logits (up to float rounding), whatever the chunk size.

Frame bookkeeping: chunk ``c`` brings ``m`` feature frames and layer ``l`` (the input of
conv ``l``; ``l = L``: the RNNs) sees ``m_l = m / s**l`` new frames, whose indices in
the utterance are ``c * m_l - lag_l + i``. The lags exist because a conv output needs
``lookahead`` frames past its own (and because features need samples past their frame
centre): an output frame is computed in the chunk where its last input arrives.
Chaining the convolutions gives ``lag_l = s * lag_{l+1} + s - 1 - lookahead``; the top
lag is the smallest that keeps every lag >= 0 and the feature lag >= ``min_feature_lag``.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from models.ctc_frames import frames_per_output, subsampled_length
from models.ctc_recognizer import CTCRecognizer, conv_border, conv_input_shapes, per_frame
from models.rnn_cells import num_states, without_cudnn

NO_END = 2 ** 30  # "the utterance has not ended": larger than any frame index


def frame_lags(config, min_feature_lag: int = 0) -> list[int]:
    """``[lag_0, ..., lag_L]``: how many frames each layer's newest chunk lags behind."""
    s, lookahead = config.conv_stride, config.lookahead
    top = 0
    while True:
        lags = [top]
        for _ in range(config.conv_layers):
            lags.insert(0, s * lags[0] + s - 1 - lookahead)
        if min(lags) >= 0 and lags[0] >= min_feature_lag:
            return lags
        top += 1


class StreamingRecognizer:
    """Chunk-by-chunk logits of a trained causal ``CTCRecognizer``.

    ``step(features, chunk_index, end_frame, states)`` takes the chunk's ``[1, m, F]``
    normalized feature frames (``frames_per_chunk`` of them, feature frame indices
    ``chunk_index * m - lags[0] + i``; those before the utterance or from ``end_frame``
    on are ignored) and returns the ``[1, m_L, V]`` logits of top frames
    ``chunk_index * m_L - lags[-1] + i`` and the new states. Graph-friendly (keras.ops on
    fixed shapes), so it can be traced into a SavedModel or TFLite step.

    Args:
        model: a built ``CTCRecognizer`` with ``causal: true``.
        frames_per_chunk: feature frames per chunk, a multiple of ``stride ** conv_layers``.
        min_feature_lag: the fewest frames the features may lag behind a chunk's end.
    """

    def __init__(self, model: CTCRecognizer, frames_per_chunk: int, min_feature_lag: int = 0):
        c = model.config
        if not c.causal:
            raise ValueError("streaming needs a causal model (model.causal: true)")
        subsampling = frames_per_output(c.conv_layers, c.conv_stride)
        if frames_per_chunk % subsampling:
            raise ValueError(f"a chunk must hold a multiple of {subsampling} feature frames "
                             f"(the conv front end's subsampling), got {frames_per_chunk}")
        self.model, self.config, self.frames_per_chunk = model, c, frames_per_chunk
        self.lags = frame_lags(c, min_feature_lag)
        self.left_border = conv_border(c)[0]
        self.kept = c.conv_kernel - c.conv_stride  # input frames a conv keeps between chunks
        self.top_frames = frames_per_chunk // subsampling

    def initial_states(self) -> list[np.ndarray]:
        """Zeros: conv buffers (the zero border before the utterance), then RNN states."""
        c = self.config
        buffers = [np.zeros((1, self.kept, *shape), np.float32)
                   for shape in conv_input_shapes(c)]
        rnn = [np.zeros((1, c.rnn_units), np.float32)
               for _ in range(c.rnn_layers * num_states(c.cell))]
        return buffers + rnn

    def step(self, features, chunk_index, end_frame, states):
        c, model = self.config, self.model
        buffers, rnn_states = states[:c.conv_layers], list(states[c.conv_layers:])
        new_states, x = [], model.front_end_input(features)
        chunk_index = ops.cast(ops.reshape(chunk_index, ()), "int32")
        length = ops.cast(ops.reshape(end_frame, ()), "int32")  # frames of this layer
        frames = self.frames_per_chunk
        for conv, norm, buffer, lag in zip(model.convs, model.conv_norms, buffers, self.lags,
                                           strict=False):
            x = ops.concatenate([buffer, x], axis=1)
            # Frame indices of x in the utterance: zero those outside it, as the offline
            # model's border (before) and frame mask (after) do.
            first = chunk_index * frames - lag - self.kept
            x = x * per_frame(self._inside(first, ops.shape(x)[1], length), x)
            new_states.append(x[:, -self.kept:] if self.kept else x[:, :0])
            x = model.conv_block(conv, norm, x)
            frames, length = frames // c.conv_stride, subsampled_length(length, 1, c.conv_stride)
        x = model.front_end_output(x)
        first = chunk_index * frames - self.lags[-1]
        mask = self._inside(first, frames, length)
        per_layer = num_states(c.cell)
        # Keras' generic loop, not cuDNN's on a GPU: the first chunks' masks start with
        # frames before the utterance (cuDNN takes only right padding), and the step must
        # export to TFLite builtin ops.
        with without_cudnn(model):
            for i, rnn in enumerate(model.rnns):
                state = rnn_states[i * per_layer:(i + 1) * per_layer]
                x, *state = rnn(x, initial_state=state, mask=mask)
                new_states.extend(state)
        return model.output_layer(x), new_states

    @staticmethod
    def _inside(first, count, length):
        """[1, count] True where ``first + i`` is in [0, length)."""
        index = first + ops.arange(count, dtype="int32")
        return ops.logical_and(index >= 0, index < length)[None, :]
