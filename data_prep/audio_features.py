"""Audio loading and log-mel / MFCC features.

Audio is read with librosa (soundfile for wav/flac/ogg/mp3, audioread as a fallback),
mixed down to mono and resampled to the configured rate. Features are
``[frames, features]`` float32 arrays; normalization is per utterance (each feature
dimension to zero mean and unit variance over the utterance, which also removes channel
and loudness differences), per utterance over its speech frames only (``speech``: the
frames within ``speech_db`` of the loudest, so leading and trailing silence do not shift
the statistics), per speaker over the speech frames of all their utterances (``speaker``:
the statistics then describe the voice and the channel rather than the word), global
(statistics of the training set), or none.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.sparse
from tqdm import tqdm

from data_prep.speech_config import FeatureConfig

EPSILON = 1e-6  # floor inside the log, and added to standard deviations


class AudioError(ValueError):
    """Unreadable, corrupt or empty audio; the message names the file."""


# What the decoders' message-less exceptions mean when librosa reads a file.
SILENT_ERRORS = {"NoBackendError": "not an audio format soundfile or audioread can decode",
                 "EOFError": "the file ends before its audio does"}


def _read(path, reader):
    """``reader(path)`` with any failure of the audio libraries as an AudioError."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not os.path.isfile(path):
        raise AudioError(f"{path}: audio file not found")
    if os.path.getsize(path) == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    shortfall = _wav_shortfall(path)
    if shortfall:
        # libsndfile silently reads what is there; a cut-off file is a broken copy.
        raise AudioError(f"{path}: truncated wav: its header announces {shortfall[0]} bytes "
                         f"of audio, the file holds {shortfall[1]}")
    try:
        with warnings.catch_warnings():
            # librosa warns before falling back to audioread; a failure still raises below.
            warnings.simplefilter("ignore")
            return reader(path)
    except Exception as e:  # soundfile, audioread and decoders raise many unrelated types
        detail = str(e) or SILENT_ERRORS.get(type(e).__name__, "no details")
        raise AudioError(f"{path}: cannot read audio ({type(e).__name__}: {detail})") from e


def _wav_shortfall(path) -> tuple[int, int] | None:
    """(announced, present) bytes of a RIFF/WAVE file's audio when the file is cut short
    before the end its ``data`` chunk announces; None otherwise (or not a wav)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while len(chunk := f.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                present = os.fstat(f.fileno()).st_size - f.tell()
                # 0 and 0xFFFFFFFF: a streaming writer that never filled the size in.
                if size in (0, 0xFFFFFFFF) or present >= size:
                    return None
                return size, present
            f.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to even sizes
    return None


def audio_duration(path) -> float:
    """Duration in seconds, from the file header where the format has one."""
    return float(_read(path, lambda p: librosa.get_duration(path=p)))


def load_audio(path, sample_rate: int, speed: float = 1.0) -> np.ndarray:
    """Mono float32 samples of ``path`` at ``sample_rate``; AudioError names bad files.

    ``speed`` != 1 applies speed perturbation (Ko et al., 2015; sox ``speed``, as in
    Kaldi and ESPnet recipes): the audio plays ``speed`` times faster, so its duration
    scales by ``1/speed`` and every frequency by ``speed``, which imitates other speaking
    rates and vocal tract lengths.
    """
    audio, _ = _read(path, lambda p: librosa.load(p, sr=sample_rate, mono=True))
    if audio.size == 0:
        raise AudioError(f"{path}: empty audio (no samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    if speed != 1.0:
        # Reading the samples as if recorded at speed * rate, then resampling to the rate.
        audio = librosa.resample(audio, orig_sr=sample_rate * speed, target_sr=sample_rate)
    return audio


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate, n_fft, n_mels, fmin, fmax) -> scipy.sparse.csr_matrix:
    return scipy.sparse.csr_matrix(librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))


def compute_features(audio: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Unnormalized features ``[frames, cfg.num_features]`` of mono samples, after
    trimming silent edges if ``cfg.trim_db`` is set.

    The same log-mel spectrogram as ``librosa.feature.melspectrogram`` (centered Hann
    windows), but the mel filterbank, which is about 95% zeros, is applied as a sparse
    matrix: librosa's dense product goes through multi-threaded BLAS, which takes
    milliseconds instead of microseconds per utterance when the cores are busy.
    """
    if cfg.trim_db is not None:
        trimmed, _ = librosa.effects.trim(audio, top_db=cfg.trim_db, frame_length=cfg.win_length,
                                          hop_length=cfg.hop_length)
        # All-silent audio trims to nothing; it is kept whole rather than lost.
        audio = trimmed if trimmed.size else audio
    # The FFT size is the next power of two that holds the window.
    n_fft = 1 << (cfg.win_length - 1).bit_length()
    power = np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=cfg.hop_length,
                                win_length=cfg.win_length)) ** 2
    mel = np.asarray(_mel_basis(cfg.sample_rate, n_fft, cfg.n_mels, cfg.fmin, cfg.fmax) @ power)
    features = np.log(mel + EPSILON)
    if cfg.kind == "mfcc":
        # librosa's MFCC expects a dB-scaled mel spectrogram.
        features = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=cfg.n_mfcc)
    return np.ascontiguousarray(features.T, dtype=np.float32)


@dataclass
class FrameStats:
    """Running per-dimension statistics of feature frames: the count, the mean and the
    sum of squared deviations from it (float64), combinable across blocks of frames, so
    training-set statistics accumulate shard by shard (``feature_shards``)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, frames: np.ndarray) -> FrameStats:
        """The statistics of ``frames`` [N, F] (two passes, as ``numpy.std`` computes)."""
        frames = frames.astype(np.float64)
        mean = frames.mean(axis=0)
        return cls(len(frames), mean, ((frames - mean) ** 2).sum(axis=0))

    def __add__(self, other: FrameStats) -> FrameStats:
        """The statistics of both blocks (Chan et al.'s pairwise update)."""
        count = self.count + other.count
        delta = other.mean - self.mean
        return FrameStats(count, self.mean + delta * (other.count / count),
                          self.m2 + other.m2 + delta ** 2 * (self.count * other.count / count))

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """float32 (mean, standard deviation), as ``normalize`` takes them."""
        return self.mean.astype(np.float32), np.sqrt(self.m2 / self.count).astype(np.float32)

    def to_json(self) -> dict:
        # Python floats print as the shortest text that reads back as the same double.
        return {"count": self.count, "mean": self.mean.tolist(), "m2": self.m2.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> FrameStats:
        return cls(data["count"], np.array(data["mean"]), np.array(data["m2"]))


def global_stats(features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over all frames of ``features``."""
    return FrameStats.of(np.concatenate(features)).mean_std()


def speech_frames(features: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Boolean [frames]: the frames at most ``cfg.speech_db`` below the loudest one.

    A frame's level is the mean of its mel bands in dB: the log-mel features scaled to
    dB, or for MFCC the 0th coefficient, which the orthonormal DCT makes sqrt(n_mels)
    times that mean. Everything is kept when fewer than two frames would be.
    """
    if cfg.kind == "mfcc":
        level = features[:, 0] / np.sqrt(cfg.n_mels)
    else:
        level = features.mean(axis=1) * (10.0 / np.log(10.0))
    loud = level >= level.max() - cfg.speech_db
    return loud if loud.sum() >= 2 else np.ones_like(loud)


def speech_stats(features: list[np.ndarray], cfg: FeatureConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over the speech frames
    (``speech_frames``) of all the utterances ``features``."""
    return global_stats([f[speech_frames(f, cfg)] for f in features])


def normalize(features: np.ndarray, cfg: FeatureConfig, stats=None) -> np.ndarray:
    """Apply ``cfg.normalization``; ``stats`` is the (mean, std) pair for ``global`` and
    ``speaker`` (see ``normalize_by_speaker``)."""
    if cfg.normalization == "utterance":
        mean, std = features.mean(axis=0), features.std(axis=0)
    elif cfg.normalization == "speech":
        mean, std = speech_stats([features], cfg)
    elif cfg.normalization in ("global", "speaker"):
        mean, std = stats
    else:
        return features
    return ((features - mean) / (std + EPSILON)).astype(np.float32)


def normalize_by_speaker(features: list[np.ndarray], speakers: list, cfg: FeatureConfig
                         ) -> list[np.ndarray]:
    """``normalization: speaker``: every utterance with the ``speech_stats`` of all the
    utterances of its speaker in ``features`` (per-speaker CMVN). A speaker's statistics
    carry their voice and channel, not the words, once they span several words; a speaker
    of None is an utterance of its own, normalized like ``speech``.
    """
    groups: dict = {}
    for i, speaker in enumerate(speakers):
        groups.setdefault(("utterance", i) if speaker is None else speaker, []).append(i)
    result = [None] * len(features)
    for members in groups.values():
        stats = speech_stats([features[i] for i in members], cfg)
        for i in members:
            result[i] = normalize(features[i], cfg, stats)
    return result


def extract_features(paths: list, cfg: FeatureConfig, workers: int | None = None,
                     desc: str = "features", speed: float = 1.0) -> list[np.ndarray]:
    """Unnormalized features of many files, computed in parallel, in input order
    (``speed``: see ``load_audio``).

    Threads rather than processes: decoding, resampling (soxr), the FFT and the mel
    matrix product all release the GIL, and threads do not fork a process that has
    TensorFlow's thread pools running.
    """
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: compute_features(load_audio(p, cfg.sample_rate, speed), cfg),
                           paths)
        return list(tqdm(results, total=len(paths), desc=desc, unit="file", file=sys.stderr,
                         # None: on a terminal only (a log file gets no bar updates)
                         disable=True if len(paths) < 100 else None))


def normalize_features(features: list[np.ndarray], cfg: FeatureConfig, stats,
                       speakers: list) -> list[np.ndarray]:
    """``cfg.normalization`` of many utterances; ``speakers`` (one per utterance, None for
    unknown) groups them for ``speaker`` normalization."""
    if cfg.normalization == "speaker":
        return normalize_by_speaker(features, speakers, cfg)
    return [normalize(f, cfg, stats) for f in features]


def featurize(paths: list, cfg: FeatureConfig, stats, desc: str,
              speakers: list | None = None) -> list[np.ndarray]:
    """Normalized features of audio files (``stats``: the global (mean, std), or None).

    ``speakers``: each file's speaker, for ``normalization: speaker``; None: all the
    files are one speaker's.
    """
    features = extract_features(paths, cfg, desc=desc)
    return normalize_features(features, cfg, stats, speakers or [""] * len(features))
