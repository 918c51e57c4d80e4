"""Streaming transcription: PCM in chunks, CTC greedy prefix carried between chunks.

``StreamStep`` is one step of the stream as TensorFlow ops: a chunk of PCM plus the
state (the samples the next frames overlap, each conv layer's kept frames, each RNN
layer's state) -> CTC log-probabilities plus the new state. ``stream_utterance`` drives
any implementation of it (the Keras model in a ``tf.function``, or the TFLite model)
over one utterance and decodes greedily as the frames arrive. The final transcript is
the offline greedy transcript of the same model: the step computes the offline
features and logits, chunk by chunk (see ``models.ctc_streaming``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from data_prep.char_vocabulary import CharVocabulary
from data_prep.graph_features import GraphFeatures
from models.ctc_recognizer import CTCRecognizer, subsampled_length
from models.ctc_streaming import NO_END, StreamingRecognizer


class StreamStep:
    """One streaming step of a causal model, PCM to CTC log-probabilities.

    Args:
        model: a trained ``CTCRecognizer`` with ``causal: true``.
        features: the in-graph features (global or no normalization: a stream cannot
            wait for the utterance's statistics).
        frames_per_chunk: feature frames per chunk (``SpeechConfig.streaming_frames``).
    """

    def __init__(self, model: CTCRecognizer, features: GraphFeatures, frames_per_chunk: int):
        cfg = features.cfg
        if cfg.kind != "log_mel":
            # librosa's MFCC floors the dB at 80 below the utterance's loudest bin.
            raise ValueError("features.kind: a stream needs log_mel (MFCC's dB floor depends "
                             "on the whole utterance)")
        features.normalize_frames(tf.zeros([1, cfg.num_features]))  # raises unless streamable
        self.features, self.hop, self.n_fft = features, cfg.hop_length, cfg.n_fft
        # A frame needs n_fft // 2 samples past its centre: the newest frame of a chunk
        # lags its end by ceil(n_fft / 2 / hop) - 1 frames at least.
        min_lag = max(0, -(-(self.n_fft // 2) // self.hop) - 1)
        self.recognizer = StreamingRecognizer(model, frames_per_chunk, min_lag)
        self.frames = frames_per_chunk
        self.chunk_samples = frames_per_chunk * self.hop
        # Chunk c's first frame is frame c * m - lag_0, which starts n_fft // 2 samples
        # before its centre: the samples kept from earlier chunks.
        self.kept_samples = self.recognizer.lags[0] * self.hop + self.n_fft // 2
        self.blank_index = model.config.blank_index

    @property
    def top_frames(self) -> int:
        """Output (log-prob) frames per chunk."""
        return self.recognizer.top_frames

    @property
    def top_lag(self) -> int:
        return self.recognizer.lags[-1]

    def initial_states(self) -> list[np.ndarray]:
        return [np.zeros((1, self.kept_samples), np.float32), *self.recognizer.initial_states()]

    def input_signature(self) -> list[tf.TensorSpec]:
        """Batch size 1 throughout: TFLite converts the RNN loop to builtin ops only for a
        fixed batch size."""
        states = [tf.TensorSpec(s.shape, tf.float32, name=f"state_{i}")
                  for i, s in enumerate(self.initial_states())]
        return [tf.TensorSpec([1, self.chunk_samples], tf.float32, name="pcm"),
                tf.TensorSpec([1], tf.int32, name="chunk_index"),
                tf.TensorSpec([1], tf.int32, name="end_frame"), *states]

    def __call__(self, pcm, chunk_index, end_frame, *states):
        """``(log_probs [1, top_frames, V], *new_states)`` of one chunk.

        ``end_frame``: the utterance's feature frame count once it has ended, else NO_END.
        """
        samples = tf.concat([states[0], pcm], axis=1)
        frames = tf.signal.frame(samples, self.n_fft, self.hop)[:, :self.frames]
        feats = self.features.normalize_frames(self.features.log_mel(frames))
        logits, new_states = self.recognizer.step(feats, chunk_index, end_frame, states[1:])
        return (tf.nn.log_softmax(logits), samples[:, -self.kept_samples:], *new_states)

    def keras_runner(self) -> Callable:
        """The step as a compiled function of NumPy arrays -> NumPy arrays."""
        compiled = tf.function(self.__call__, input_signature=self.input_signature())

        def run(pcm, chunk_index, end_frame, states):
            outputs = compiled(pcm, np.array([chunk_index], np.int32),
                               np.array([end_frame], np.int32), *states)
            return outputs[0].numpy(), [o.numpy() for o in outputs[1:]]

        return run


class GreedyPrefix:
    """CTC greedy decoding of frames as they arrive (``tf.nn.ctc_greedy_decoder``'s rule:
    the best label of each frame; repeats merged, then blanks dropped)."""

    def __init__(self, blank_index: int):
        self.blank_index, self.previous, self.ids = blank_index, None, []

    def add(self, log_probs: np.ndarray) -> bool:
        """Consume ``[frames, V]`` log-probabilities; whether the prefix changed."""
        before = len(self.ids)
        for label in np.argmax(log_probs, axis=-1):
            if label != self.blank_index and label != self.previous:
                self.ids.append(int(label))
            self.previous = label
        return len(self.ids) != before


def stream_utterance(step: StreamStep, run_step: Callable, blocks: Iterable[np.ndarray],
                     vocab: CharVocabulary, on_partial: Callable[[str], None] | None = None
                     ) -> str:
    """The transcript of one utterance whose float32 samples arrive in ``blocks`` (any
    sizes), calling ``on_partial(text)`` whenever the greedy prefix changes.

    A last partial chunk is padded with zeros and finished, as are the chunks that
    bring the model's look-ahead past the end.
    """
    states, pending, total, chunk = step.initial_states(), np.zeros(0, np.float32), 0, 0
    decoder, size = GreedyPrefix(step.blank_index), step.chunk_samples

    def run(samples, end_frame, top_end):
        nonlocal states, chunk
        log_probs, states = run_step(samples[None, :], chunk, end_frame, states)
        first = chunk * step.top_frames - step.top_lag  # index of log_probs[0, 0]
        keep = np.arange(first, first + step.top_frames)
        chunk += 1
        if decoder.add(log_probs[0][(keep >= 0) & (keep < top_end)]) and on_partial:
            on_partial(text())

    def text():
        return " ".join(vocab.decode(decoder.ids).split())

    for block in blocks:
        pending = np.concatenate([pending, np.asarray(block, np.float32)])
        total += len(block)
        while len(pending) >= size:
            run(pending[:size], NO_END, NO_END)
            pending = pending[size:]
    end_frame = step.features.num_frames(total)
    c = step.recognizer.config
    top_end = subsampled_length(end_frame, c.conv_layers, c.conv_stride)
    pending = np.pad(pending, (0, size - len(pending)))
    while chunk * step.top_frames - step.top_lag < top_end:  # frames still to come
        run(pending, end_frame, top_end)
        pending = np.zeros(size, np.float32)
    return text()
