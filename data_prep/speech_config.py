"""The speech config sections of data_prep: features, digit strings, augmentation,
synthetic voices, feature shards.

Plain dataclasses, free of librosa and TensorFlow, so that a pipeline can load and
validate a config before importing them; ``audio_features``, ``digit_strings`` and
``speech_dataset`` use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.config_checks import ConfigError, at_least, choice, positive

# The subsets of LibriSpeech (data.corpus: librispeech; data_prep/librispeech.py).
LIBRISPEECH_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean",
                       "dev-other", "test-clean", "test-other")


@dataclass
class FeatureConfig:
    """The ``features:`` section of a speech config.

    Window and hop are given in milliseconds so a config works at any sample rate.
    """

    kind: str = "log_mel"  # log_mel | mfcc
    sample_rate: int = 8000  # audio is resampled to this rate
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_mels: int = 40
    n_mfcc: int = 13  # mfcc only: cepstral coefficients kept
    fmin: float = 20.0
    fmax: float | None = None  # None: half the sample rate
    normalization: str = "utterance"  # utterance | speech | speaker | global | none
    # normalization=speech: per-utterance statistics of the frames at most this many dB
    # below the loudest one, so that the amount of silence around a word does not move them;
    # normalization=speaker: the same frames of all the utterances of each speaker.
    speech_db: float = 30.0
    # Trim leading and trailing audio quieter than this many dB below the utterance's
    # loudest frame (librosa.effects.trim), or None: keep it. Isolated-word recordings
    # are cut inconsistently (FSDD: 0 to 0.5 s of silence around the word).
    trim_db: float | None = None

    def validate(self, where):
        choice(self.kind, ("log_mel", "mfcc"), f"{where}.kind")
        choice(self.normalization, ("utterance", "speech", "speaker", "global", "none"),
               f"{where}.normalization")
        if not self.speech_db > 0:
            raise ConfigError(f"{where}.speech_db: must be positive (dB below the loudest frame)")
        at_least(self, where, 1, "n_mels")
        at_least(self, where, 0, "fmin")
        positive(self, where, "window_ms")
        if self.fmax is not None and not self.fmin < self.fmax <= self.sample_rate / 2:
            raise ConfigError(f"{where}.fmax: must be above fmin and at most half the "
                              "sample rate, or null")
        if self.sample_rate < 1000:
            raise ConfigError(f"{where}.sample_rate: must be at least 1000 Hz")
        if not 0 < self.hop_ms <= self.window_ms:
            raise ConfigError(f"{where}.hop_ms: must be positive and at most window_ms")
        if self.trim_db is not None and not self.trim_db > 0:
            raise ConfigError(f"{where}.trim_db: must be positive (dB below the peak), or null")
        if self.kind == "mfcc" and not 0 < self.n_mfcc <= self.n_mels:
            raise ConfigError(f"{where}.n_mfcc: must be in [1, n_mels]")

    @property
    def num_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def hop_length(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def win_length(self) -> int:
        return round(self.sample_rate * self.window_ms / 1000)

    @property
    def n_fft(self) -> int:
        """FFT size: the next power of two that holds the window."""
        return 1 << (self.win_length - 1).bit_length()


@dataclass
class DigitStringConfig:
    """The ``strings:`` section of a speech config (``data.corpus: fsdd_strings``)."""

    train_count: int = 5000  # strings per split
    val_count: int = 300
    test_count: int = 1000
    min_digits: int = 1
    max_digits: int = 7
    min_gap: float = 0.05  # seconds of silence between two digits
    max_gap: float = 0.4
    max_edge: float = 0.2  # up to this much silence before the first and after the last digit
    noise_dbfs: float | None = -60.0  # RMS of added white noise (dB full scale); null: none
    seed: int = 0

    def validate(self, where):
        at_least(self, where, 1, "train_count", "val_count", "test_count", "min_digits")
        if self.max_digits < self.min_digits:
            raise ConfigError(f"{where}.max_digits: must be at least min_digits")
        if not 0.0 <= self.min_gap <= self.max_gap or self.max_edge < 0:
            raise ConfigError(f"{where}: need 0 <= min_gap <= max_gap and max_edge >= 0")
        if self.noise_dbfs is not None and not self.noise_dbfs < 0:
            raise ConfigError(f"{where}.noise_dbfs: must be negative (dB below full scale), "
                              "or null for no noise")


@dataclass
class SpecAugmentConfig:
    """The ``augment:`` section: training-time augmentation of features.

    SpecAugment masking (Park et al., 2019): masked regions are set to the utterance's
    mean feature value (zero for normalized features). Time stretching, applied before
    the masks, resamples the frames of an utterance to a random multiple of its length
    (linear interpolation), a tempo change that keeps the pitch; an utterance is never
    squeezed below the frames its transcript needs. SpecAugment's time warping is not
    implemented.
    """

    freq_masks: int = 2  # frequency masks per utterance (0: none)
    freq_mask_width: int = 8  # widest frequency mask, in feature bins
    time_masks: int = 2  # time masks per utterance (0: none)
    time_mask_width: int = 10  # widest time mask, in frames
    time_mask_fraction: float = 0.1  # and at most this fraction of the utterance
    time_stretch: list[float] | None = None  # [low, high] range of length factors, or off

    def validate(self, where):
        at_least(self, where, 0, "freq_masks", "freq_mask_width", "time_masks",
                 "time_mask_width")
        if not 0.0 <= self.time_mask_fraction <= 1.0:
            raise ConfigError(f"{where}.time_mask_fraction: must be in [0, 1]")
        stretch = self.time_stretch
        if stretch is not None and not (
                isinstance(stretch, list) and len(stretch) == 2
                and all(isinstance(x, (int, float)) for x in stretch)
                and 0.5 <= stretch[0] <= stretch[1] <= 2.0):
            raise ConfigError(f"{where}.time_stretch: expected [low, high] with "
                              f"0.5 <= low <= high <= 2, or null; got {stretch!r}")

    @property
    def active(self) -> bool:
        return bool(self.freq_masks or self.time_masks or self.time_stretch)


@dataclass
class SyntheticVoicesConfig:
    """The ``synthetic:`` section: training speech from espeak-ng voices
    (``data_prep/synthetic_voices.py``). Each voice (an English accent and a voice
    variant drawn at random, a pitch and a speaking rate drawn from the ranges) says every
    distinct transcript of the training set once; validation and test stay real speech.
    """

    voices: int = 0  # synthetic voices added to the training set (0: none)
    pitch: list[int] = field(default_factory=lambda: [20, 80])  # espeak-ng -p range (0-99)
    rate: list[int] = field(default_factory=lambda: [120, 220])  # words per minute (-s)
    seed: int = 0  # which voices are drawn

    def validate(self, where):
        at_least(self, where, 0, "voices")
        for name, low, high in (("pitch", 0, 99), ("rate", 80, 450)):
            value = getattr(self, name)
            if not (isinstance(value, list) and len(value) == 2
                    and all(isinstance(x, int) for x in value)
                    and low <= value[0] <= value[1] <= high):
                raise ConfigError(f"{where}.{name}: expected [low, high] integers with "
                                  f"{low} <= low <= high <= {high}, got {value!r}")


@dataclass
class ShardConfig:
    """The ``shards:`` section: how ``prepare`` writes the training features (TFRecord
    shards, ``data_prep/feature_shards.py``) and how ``train`` streams them."""

    utterances: int = 1000  # training utterances per shard (the last one may hold fewer)
    workers: int | None = None  # feature extraction processes; null: min(4, CPU count)
    # Memory for train's shuffle buffer, in MB of features. When the whole training set
    # fits, the shards are read in order and shuffled as one (the in-memory pipeline's
    # exact batches); otherwise the shard order is shuffled too, and shards interleaved.
    shuffle_buffer_mb: float = 512.0

    def validate(self, where):
        at_least(self, where, 1, "utterances", "workers")
        positive(self, where, "shuffle_buffer_mb")
