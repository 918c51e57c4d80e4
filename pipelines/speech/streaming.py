"""Streaming transcription: PCM in chunks, CTC greedy prefix carried between chunks.

``StreamStep`` is one step of the stream as TensorFlow ops: a chunk of PCM plus the
state (the samples the next frames overlap, each conv layer's kept frames, each RNN
layer's state) -> CTC log-probabilities plus the new state. ``stream_utterance`` drives
any implementation of it (the Keras model in a ``tf.function``, or the TFLite model)
over one utterance and decodes greedily as the frames arrive. The step computes the
offline features and logits, chunk by chunk (see ``models.ctc_streaming``), so the final
transcript is the offline greedy one of the same model, or with ``streaming.final: lm``
the offline search with the word language model over the streamed log-probabilities
(``final_search``), run once the utterance has ended.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from data_prep.audio_features import AudioError, load_audio
from data_prep.graph_features import GraphFeatures
from data_prep.piece_vocabulary import Vocabulary
from data_prep.speech_config import FeatureConfig
from models.ctc_frames import subsampled_length
from models.ctc_recognizer import CTCRecognizer
from models.ctc_streaming import NO_END, StreamingRecognizer
from pipelines.config import ConfigError
from pipelines.quiet import native_stderr_silenced
from pipelines.speech.config import SpeechConfig
from pipelines.speech.data import load_stats, vocabulary
from pipelines.speech.inference import load_checkpoint
from pipelines.speech.language_model import language_model_decoder


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
        if cfg.trim_db is not None:
            raise ValueError("features.trim_db: a stream cannot trim the silence at its end "
                             "before it has arrived; train the streaming model with trim_db: null")
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
        # No matrix product for the filterbank: the int8 TFLite step keeps it in float32.
        feats = self.features.normalize_frames(self.features.log_mel(frames, matmul=False))
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
    the best label of each frame; repeats merged, then blanks dropped). ``ids`` are the
    labels so far, ``frames`` the output frame each was emitted at."""

    def __init__(self, blank_index: int):
        self.blank_index, self.previous, self.ids, self.frames = blank_index, None, [], []

    def add(self, log_probs: np.ndarray, frames=None) -> bool:
        """Consume ``[n, V]`` log-probabilities of output frames ``frames`` (their
        indices in the utterance; default ``0..n-1``); whether the prefix changed."""
        before = len(self.ids)
        frames = range(len(log_probs)) if frames is None else frames
        for label, frame in zip(np.argmax(log_probs, axis=-1), frames, strict=True):
            if label != self.blank_index and label != self.previous:
                self.ids.append(int(label))
                self.frames.append(int(frame))
            self.previous = label
        return len(self.ids) != before

    def text(self, vocab: Vocabulary) -> str:
        """The transcript of the labels so far."""
        return " ".join(vocab.decode(self.ids).split())


def stream_utterance(step: StreamStep, run_step: Callable, blocks: Iterable[np.ndarray],
                     vocab: Vocabulary, on_partial: Callable[[str], None] | None = None,
                     decoder: GreedyPrefix | None = None,
                     final: Callable[[np.ndarray], str] | None = None) -> str:
    """The transcript of one utterance whose float32 samples arrive in ``blocks`` (any
    sizes), calling ``on_partial(text)`` whenever the greedy prefix changes.

    A last partial chunk is padded with zeros and finished, as are the chunks that
    bring the model's look-ahead past the end. ``decoder``: a fresh ``GreedyPrefix`` to
    use, for a caller that wants to see when each label was emitted. ``final``: the
    search giving the final transcript from the utterance's ``[frames, V]``
    log-probabilities (``final_search``); default: the last greedy prefix.
    """
    states, pending, total, chunk = step.initial_states(), np.zeros(0, np.float32), 0, 0
    decoder = decoder or GreedyPrefix(step.blank_index)
    size = step.chunk_samples
    kept = []  # the utterance's log-probabilities, for the final search

    def run(samples, end_frame, top_end):
        nonlocal states, chunk
        log_probs, states = run_step(samples[None, :], chunk, end_frame, states)
        first = chunk * step.top_frames - step.top_lag  # index of log_probs[0, 0]
        frames = np.arange(first, first + step.top_frames)
        inside = (frames >= 0) & (frames < top_end)
        chunk += 1
        if final is not None:
            kept.append(log_probs[0][inside])
        if decoder.add(log_probs[0][inside], frames[inside]) and on_partial:
            on_partial(decoder.text(vocab))

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
    if final is not None:
        return final(np.concatenate(kept))
    return decoder.text(vocab)


def final_search(cfg: SpeechConfig, run, step: StreamStep
                 ) -> Callable[[np.ndarray], str] | None:
    """The search of ``streaming.final`` (``stream_utterance``'s ``final``): with ``lm``,
    the run's word language model search (built and tuned first if need be, as
    ``evaluate`` does, with ``step``'s model), which is ``evaluate``'s over the same
    log-probabilities; with ``greedy``, None."""
    if cfg.streaming.final == "greedy":
        return None
    decoder = language_model_decoder(cfg, run, step.recognizer.model)[0]
    vocab = vocabulary(cfg, run)
    # Through the label ids, as evaluate's transcripts are made.
    return lambda log_probs: " ".join(vocab.decode(vocab.encode(decoder.search(log_probs)))
                                      .split())


def file_blocks(path, cfg: FeatureConfig, block: int) -> Iterator[np.ndarray]:
    """An audio file's samples (read and resampled as ``transcribe`` reads them), in
    blocks of ``block`` samples, as if they arrived one by one."""
    audio = load_audio(path, cfg.sample_rate)
    for start in range(0, len(audio), block):
        yield audio[start:start + block]


def _read_exactly(stream, size: int) -> bytes:
    data = b""
    while len(data) < size and (more := stream.read1(size - len(data))):
        data += more
    return data


def _skip_wav_header(stream, sample_rate: int) -> None:
    """Read a wav header (after its first 12 bytes) up to the samples; AudioError unless
    they are 16-bit mono PCM at ``sample_rate``."""
    expected = f"expected 16-bit mono PCM at {sample_rate} Hz (raw, or as a wav)"
    seen_format = False
    while len(chunk := _read_exactly(stream, 8)) == 8:
        size = int.from_bytes(chunk[4:], "little")
        if chunk[:4] == b"data" and seen_format:
            return
        body = _read_exactly(stream, size + size % 2)  # chunks are padded to even sizes
        if chunk[:4] == b"fmt ":
            fmt, channels, rate = (int.from_bytes(body[a:b], "little")
                                   for a, b in ((0, 2), (2, 4), (4, 8)))
            bits = int.from_bytes(body[14:16], "little")
            if (fmt, channels, rate, bits) != (1, 1, sample_rate, 16):
                kind = "PCM" if fmt == 1 else f"format-{fmt}"
                raise AudioError(f"stdin: a wav of {bits}-bit {kind} audio, {channels} "
                                 f"channel(s) at {rate} Hz; {expected}")
            seen_format = True
    raise AudioError(f"stdin: a wav header without a format chunk before its data; {expected}")


def pcm16_samples(data: bytes) -> np.ndarray:
    """Float32 samples in [-1, 1) of 16-bit little-endian PCM (an even number of bytes)."""
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


def stdin_blocks(stream, sample_rate: int, block_bytes: int = 4096) -> Iterator[np.ndarray]:
    """Float32 samples of raw 16-bit little-endian mono PCM on ``stream`` (a binary
    stdin), as they arrive. A wav stream is accepted too if it holds that format (its
    header is checked, so a wrong rate or channel count is an error, not noise). A last
    odd byte is ignored, with a warning."""
    head = _read_exactly(stream, 12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        _skip_wav_header(stream, sample_rate)
        head = b""
    carry = head
    while True:
        whole = len(carry) // 2 * 2
        if whole:
            yield pcm16_samples(carry[:whole])
        carry = carry[whole:]
        data = stream.read1(block_bytes)
        if not data:
            break
        carry += data
    if carry:  # the utterance before it is still transcribed
        print("[stream] warning: stdin ends with half a sample (an odd number of bytes), "
              f"ignored; expected raw 16-bit mono PCM at {sample_rate} Hz", file=sys.stderr)


class PartialDisplay:
    """Shows partial hypotheses: on a terminal one line rewritten in place, otherwise one
    line per change."""

    def __init__(self, stream):
        self.stream, self.tty, self.shown = stream, stream.isatty(), False

    def __call__(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text)  # back to the line's start, erase it
            self.shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        """Erase the partial line before the final transcript is printed."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def export_step(step: StreamStep, path) -> None:
    """A SavedModel whose ``step`` signature is ``StreamStep`` (batch size 1)."""
    archive = keras.export.ExportArchive()
    archive.add_endpoint("step", step.__call__, input_signature=step.input_signature())
    archive.write_out(str(path), verbose=False)


# The TFLite step models export writes: float32; int8 (post-training dynamic-range
# quantization: int8 weights, symmetric with one scale per output channel, for the
# convolutions, the GRU input and recurrent kernels and the output layer, float32
# activations that each of those kernels quantizes to int8 on the fly, asymmetrically
# per row; the features, the mel filterbank included, stay float32); float16 weights.
TFLITE_VARIANTS = ("float32", "int8", "float16")


def convert_to_tflite(saved_model, variant: str) -> bytes:
    """The ``step`` signature of ``export_step``'s SavedModel as a TFLite flatbuffer, with
    builtin ops only and ``variant`` (one of ``TFLITE_VARIANTS``) weights."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["step"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant != "float32":  # without a representative dataset: weights only
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def tflite_runner(path, step: StreamStep) -> Callable:
    """``StreamStep.keras_runner``'s interface over a TFLite step model, run by LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no TFLite step model; run the export stage first")
    try:
        with native_stderr_silenced():  # LiteRT announces its XNNPACK delegate on stderr
            runner = Interpreter(model_path=str(path)).get_signature_runner("step")
    except (ValueError, RuntimeError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{path}: truncated or damaged TFLite step model ({first_line}); "
                          "run export --force to make it again") from None
    with native_stderr_silenced():
        runner(**{spec.name: np.zeros(spec.shape, spec.dtype.as_numpy_dtype)
                  for spec in step.input_signature()})
    states = len(step.initial_states())

    def run(pcm, chunk_index, end_frame, state):
        outputs = runner(pcm=pcm, chunk_index=np.array([chunk_index], np.int32),
                         end_frame=np.array([end_frame], np.int32),
                         **{f"state_{i}": s for i, s in enumerate(state)})
        # The endpoint's tuple of outputs comes back as output_0, output_1, ...
        return outputs["output_0"], [outputs[f"output_{i + 1}"] for i in range(states)]

    return run


def stream_step(cfg: SpeechConfig, run) -> StreamStep:
    """The streaming step of the run's (causal) model; ConfigError if it cannot stream."""
    try:
        return StreamStep(load_checkpoint(run),
                          GraphFeatures(cfg.features, load_stats(run, cfg.features)),
                          cfg.streaming_frames())
    except ValueError as e:  # features a stream cannot compute
        raise ConfigError(str(e)) from e
