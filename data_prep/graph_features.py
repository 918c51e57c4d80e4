"""Log-mel and MFCC features computed in the TensorFlow graph, from raw PCM.

The same features as ``audio_features.compute_features`` followed by ``normalize``, so a
model trained on the librosa features can run where only TensorFlow (or TFLite) is: in
an exported SavedModel, or chunk by chunk in a stream. What makes them agree:

- the mel filterbank and the window are librosa's own, built once here with librosa and
  embedded as constants (not ``tf.signal.linear_to_mel_weight_matrix``, whose filters
  differ);
- the framing is librosa's centered STFT: ``n_fft // 2`` zeros on each side, frame ``t``
  starting at sample ``t * hop - n_fft // 2``, the ``win_length`` Hann window centered
  in the ``n_fft`` frame (``tf.signal.stft`` puts it at the start);
- MFCC is librosa's: dB with an 80 dB floor below the utterance's loudest bin, then the
  orthonormal DCT-II;
- normalization uses the same statistics (training-set ones for ``global``);
- ``trim_db`` is ``librosa.effects.trim``: frames of ``win_length`` samples every hop
  (centered, zero-padded), silent where their mean power is ``trim_db`` below the
  loudest frame's; the samples from the first loud frame's start to the last one's end.

Features differ from librosa's only by float32 rounding (``tests/test_graph_features.py``
measures the gap). A stream cannot trim: the silence at its end has not arrived yet.
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.fft
import tensorflow as tf

from data_prep.audio_features import EPSILON
from data_prep.config_checks import ConfigError
from data_prep.speech_config import FeatureConfig

TOP_DB = 80.0  # librosa.power_to_db's default floor, which librosa.feature.mfcc gets
AMIN = 1e-10  # librosa.power_to_db's floor on power
# What ``audio_features.normalize`` does that a graph can do from the audio of one call
# (``speaker``: the call's utterances are taken to be one speaker's).
GRAPH_NORMALIZATIONS = ("global", "none", "utterance", "speech", "speaker")


def power_to_db(power):
    """``librosa.power_to_db`` without a reference or floor: 10 log10 of the power,
    floored at ``AMIN``."""
    return 10.0 * tf.math.log(tf.maximum(power, AMIN)) / np.log(10.0)


class GraphFeatures:
    """Features of float32 PCM at ``cfg.sample_rate`` with TensorFlow ops.

    Args:
        cfg: the feature config the model was trained with.
        stats: the training-set ``(mean, std)`` for ``normalization: global``, else None.
    """

    def __init__(self, cfg: FeatureConfig, stats=None):
        if cfg.normalization not in GRAPH_NORMALIZATIONS:
            raise ConfigError(f"features.normalization: {cfg.normalization} has no in-graph "
                              f"version (one of {list(GRAPH_NORMALIZATIONS)})")
        if (cfg.normalization == "global") != (stats is not None):
            raise ValueError("the training-set statistics are needed by, and only by, "
                             "normalization: global")
        self.cfg = cfg
        n_fft = cfg.n_fft
        window = librosa.util.pad_center(
            librosa.filters.get_window("hann", cfg.win_length, fftbins=True), size=n_fft)
        self.window = tf.constant(window, tf.float32)
        mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=n_fft, n_mels=cfg.n_mels,
                                  fmin=cfg.fmin, fmax=cfg.fmax)
        self.mel = tf.constant(mel.T, tf.float32)  # [n_fft // 2 + 1, n_mels]
        # dct(x) = x @ D.T for the orthonormal DCT-II matrix D; keep n_mfcc coefficients.
        dct = scipy.fft.dct(np.eye(cfg.n_mels), type=2, norm="ortho", axis=0)
        self.dct = tf.constant(dct.T[:, :cfg.n_mfcc], tf.float32)
        self.stats = None if stats is None else tuple(
            tf.constant(np.asarray(s, np.float32)) for s in stats)

    def num_frames(self, num_samples):
        """Feature frames of ``num_samples`` samples (librosa's centered STFT)."""
        return 1 + num_samples // self.cfg.hop_length

    def mel_power(self, frames, matmul: bool = True):
        """Mel power spectra ``[..., n_mels]`` of ``[..., n_fft]`` frames of samples.

        ``matmul=False``: apply the filterbank as a broadcast multiply and a sum, not a
        matrix product, so that TFLite's dynamic-range int8 conversion leaves it in
        float32. That conversion turns every product with a constant matrix into a
        hybrid kernel that also quantizes the matrix's input to int8 on the fly, one
        scale per frame; a frame's power spectrum spans many decades, so its quiet bins
        round to zero (in LiteRT a sixth of the log-mel values fell to log(EPSILON): 5
        WER points lost on fsdd_strings). It holds ``[..., n_fft // 2 + 1, n_mels]``
        at once: for a stream's short chunks, not for batches of utterances.
        """
        spectrum = tf.signal.rfft(frames * self.window)
        power = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
        if matmul:
            return tf.tensordot(power, self.mel, axes=1)
        return tf.reduce_sum(power[..., :, None] * self.mel, axis=-2)

    def log_mel(self, frames, matmul: bool = True):
        """Unnormalized log-mel features ``[..., n_mels]`` of ``[..., n_fft]`` frames
        (``matmul``: see ``mel_power``)."""
        return tf.math.log(self.mel_power(frames, matmul) + EPSILON)

    def __call__(self, audio, lengths):
        """Normalized features of a batch of waveforms.

        Args:
            audio: float32 ``[B, N]``, each row zero-padded after its length.
            lengths: int32 ``[B]``, the samples of each row.

        Returns:
            features ``[B, T, F]`` (zero past each utterance's frames) and frame counts ``[B]``.
        """
        cfg = self.cfg
        lengths = tf.cast(lengths, tf.int32)
        # Samples past a row's length must be zeros: librosa pads with zeros.
        inside = tf.range(tf.shape(audio)[1])[None, :] < lengths[:, None]
        audio = tf.where(inside, audio, 0.0)
        if cfg.trim_db is not None:
            audio, lengths = self._trim(audio, lengths)
        half = cfg.n_fft // 2
        padded = tf.pad(audio, [[0, 0], [half, half]])
        frames = tf.signal.frame(padded, cfg.n_fft, cfg.hop_length)  # [B, T, n_fft]
        frame_lengths = self.num_frames(lengths)
        valid = tf.range(tf.shape(frames)[1])[None, :] < frame_lengths[:, None]  # [B, T]
        if cfg.kind == "mfcc":
            features = self._mfcc(self.mel_power(frames), valid)
        else:
            features = self.log_mel(frames)
        features = self._normalize(features, valid)
        return tf.where(valid[..., None], features, 0.0), frame_lengths

    def _trim(self, audio, lengths):
        """``librosa.effects.trim`` of each row (zero past its length): the rows shifted
        to start at their first loud frame, zero past their new lengths, and the lengths."""
        cfg, hop, width = self.cfg, self.cfg.hop_length, self.cfg.win_length
        frames = tf.signal.frame(tf.pad(audio, [[0, 0], [width // 2, width // 2]]), width, hop)
        power = tf.reduce_mean(frames ** 2, axis=-1)  # librosa.feature.rms squared, [B, T]
        valid = tf.range(tf.shape(power)[1])[None, :] < (1 + lengths // hop)[:, None]
        db = power_to_db(tf.where(valid, power, 0.0))  # frames past a row's end: the floor
        # Quieter than trim_db below the loudest frame is silence (power_to_db(ref=np.max)).
        loud = db - tf.reduce_max(db, axis=1, keepdims=True) > -cfg.trim_db
        count = tf.shape(loud)[1]
        first = tf.argmax(tf.cast(loud, tf.int32), axis=1, output_type=tf.int32)
        last = count - 1 - tf.argmax(tf.cast(loud[:, ::-1], tf.int32), axis=1,
                                     output_type=tf.int32)
        start, end = first * hop, tf.minimum(lengths, (last + 1) * hop)
        # Audio that trims to nothing is kept whole, as compute_features keeps it: all
        # silent, or (a hop longer than half the window) loud only in the frame centred on
        # its end.
        keep = tf.logical_and(tf.reduce_any(loud, axis=1), end > start)
        start, end = tf.where(keep, start, 0), tf.where(keep, end, lengths)
        positions = tf.range(tf.shape(audio)[1])[None, :]
        shifted = tf.gather(audio, tf.minimum(start[:, None] + positions, tf.shape(audio)[1] - 1),
                            batch_dims=1)
        lengths = end - start
        return tf.where(positions < lengths[:, None], shifted, 0.0), lengths

    def _mfcc(self, mel, valid):
        db = power_to_db(mel)
        # The floor is relative to each utterance's loudest bin over its own frames.
        loudest = tf.reduce_max(tf.where(valid[..., None], db, -np.inf), axis=[1, 2])
        db = tf.maximum(db, loudest[:, None, None] - TOP_DB)
        return tf.tensordot(db, self.dct, axes=1)

    def normalize_frames(self, features):
        """Global (or no) normalization, frame by frame: what a stream can use."""
        if self.cfg.normalization == "global":
            mean, std = self.stats
            return (features - mean) / (std + EPSILON)
        if self.cfg.normalization == "none":
            return features
        raise ConfigError(f"features.normalization: {self.cfg.normalization} needs the whole "
                         "utterance; a stream needs global (or none)")

    def _normalize(self, features, valid):
        cfg = self.cfg
        if cfg.normalization in ("global", "none"):
            return self.normalize_frames(features)
        if cfg.normalization in ("speech", "speaker"):  # else utterance
            valid = tf.logical_and(valid, self._speech_frames(features, valid))
        weights = tf.cast(valid, tf.float32)[..., None]  # [B, T, 1]
        # Per utterance, or (speaker) pooled over the whole batch: one speaker's statistics.
        axes = [0, 1] if cfg.normalization == "speaker" else [1]
        count = tf.reduce_sum(weights, axis=axes, keepdims=True)
        # Statistics of the deviations from the first frame: a constant feature (digital
        # silence) then has a mean deviation of exactly 0, as in NumPy, rather than a
        # rounding error that the EPSILON-sized std would blow up.
        first = features[:1, :1] if cfg.normalization == "speaker" else features[:, :1]
        centered = features - first
        mean = tf.reduce_sum(centered * weights, axis=axes, keepdims=True) / count
        variance = tf.reduce_sum((centered - mean) ** 2 * weights, axis=axes,
                                 keepdims=True) / count
        return (centered - mean) / (tf.sqrt(variance) + EPSILON)

    def _speech_frames(self, features, valid):
        """``audio_features.speech_frames`` for a batch: [B, T] loud enough frames."""
        cfg = self.cfg
        if cfg.kind == "mfcc":
            level = features[..., 0] / np.sqrt(cfg.n_mels)
        else:
            level = tf.reduce_mean(features, axis=-1) * (10.0 / np.log(10.0))
        loudest = tf.reduce_max(tf.where(valid, level, -np.inf), axis=1, keepdims=True)
        loud = tf.logical_and(valid, level >= loudest - cfg.speech_db)
        enough = tf.reduce_sum(tf.cast(loud, tf.int32), axis=1, keepdims=True) >= 2
        return tf.where(enough, loud, valid)
