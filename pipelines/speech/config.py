"""The speech experiment config: one dataclass per YAML section.

Imports no TensorFlow, Keras or librosa: a config is loaded and validated before they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.char_vocabulary import ENGLISH_CHARACTERS, CharVocabulary
from data_prep.speech_config import DigitStringConfig, FeatureConfig, SpecAugmentConfig
from models.config import CELL_TYPES, STRATEGIES, CTCRecognizerConfig
from pipelines.config import ConfigError, at_least, choice, fraction, positive
from pipelines.training_config import TrainingConfig

SPLITS = ("train", "val", "test")


@dataclass
class DataConfig:
    corpus: str = "fsdd_digits"  # fsdd_digits | fsdd_strings | manifest
    test_takes: int = 5  # FSDD standard split: takes 0..4 of every speaker are test
    val_takes: int = 5  # the next takes are held out of training for validation
    test_speakers: list[str] | None = None  # FSDD leave-speakers-out split instead
    manifests: dict | None = None  # corpus=manifest: {train: path, val: path, test: path}
    vocabulary: str = ENGLISH_CHARACTERS  # output characters
    blank_index: int = 0  # CTC blank id; the characters take the other ids
    lowercase: bool = True
    remove_punctuation: bool = False
    # Speed perturbation of the training set: prepare caches the features of one copy of
    # every training utterance per factor (Kaldi and ESPnet use [0.9, 1.0, 1.1]).
    speed_perturbation: list[float] = field(default_factory=lambda: [1.0])
    limit_train: int | None = None  # use only the first N utterances (quick experiments)
    limit_val: int | None = None
    limit_test: int | None = None

    def validate(self, where):
        choice(self.corpus, ("fsdd_digits", "fsdd_strings", "manifest"), f"{where}.corpus")
        if self.corpus == "manifest":
            if self.test_speakers is not None:
                raise ConfigError(f"{where}.test_speakers: FSDD only; a manifest corpus "
                                  "has its own test manifest")
            for split in SPLITS:
                if not isinstance((self.manifests or {}).get(split), str):
                    raise ConfigError(f"{where}.manifests.{split}: expected a manifest path "
                                      "for corpus=manifest")
        elif self.test_speakers is None and self.test_takes < 1:
            raise ConfigError(f"{where}.test_takes: must be at least 1")
        at_least(self, where, 1, "val_takes", "limit_train", "limit_val", "limit_test")
        speeds = self.speed_perturbation
        if (not isinstance(speeds, list) or not speeds or len(set(speeds)) != len(speeds)
                or not all(isinstance(x, (int, float)) and 0.5 <= x <= 2.0 for x in speeds)):
            raise ConfigError(f"{where}.speed_perturbation: expected a list of distinct "
                              f"factors in [0.5, 2], got {speeds!r}")
        try:
            CharVocabulary(self.vocabulary, self.blank_index)
        except ValueError as e:
            raise ConfigError(f"{where}.vocabulary: {e}") from e


@dataclass
class DecodingConfig:
    # closed_set: the likeliest of the training set's distinct transcripts (isolated words)
    strategy: str = "beam_search"  # greedy | beam_search | closed_set
    beam_width: int = 16
    batch_size: int = 64  # utterances per decoding batch

    def validate(self, where):
        choice(self.strategy, STRATEGIES, f"{where}.strategy")
        for name in ("beam_width", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be at least 1")


@dataclass
class SpeechConfig:
    name: str = "speech"
    data: DataConfig = field(default_factory=DataConfig)
    strings: DigitStringConfig = field(default_factory=DigitStringConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: CTCRecognizerConfig = field(default_factory=CTCRecognizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    SET_BY_PIPELINE = ("model.num_features", "model.vocab_size", "model.blank_index")

    def validate(self, where):
        # The data_prep and models dataclasses stay free of pipeline code; their
        # values are checked here.
        for name in self.SET_BY_PIPELINE:
            if getattr(self.model, name.split(".")[1]):
                raise ConfigError(f"{name}: set by the pipeline from the features and "
                                  "data sections; do not set it")
        choice(self.model.cell, CELL_TYPES, "model.cell")
        at_least(self.model, "model", 1, "conv_channels", "conv_kernel", "conv_stride",
                 "rnn_layers", "rnn_units")
        at_least(self.model, "model", 0, "conv_layers")
        fraction(self.model.dropout, "model.dropout")
        f = self.features
        choice(f.kind, ("log_mel", "mfcc"), "features.kind")
        choice(f.normalization, ("utterance", "speech", "global", "none"),
               "features.normalization")
        if not f.speech_db > 0:
            raise ConfigError("features.speech_db: must be positive (dB below the loudest frame)")
        at_least(f, "features", 1, "n_mels")
        at_least(f, "features", 0, "fmin")
        positive(f, "features", "window_ms")
        if f.fmax is not None and not f.fmin < f.fmax <= f.sample_rate / 2:
            raise ConfigError("features.fmax: must be above fmin and at most half the "
                              "sample rate, or null")
        if f.sample_rate < 1000:
            raise ConfigError("features.sample_rate: must be at least 1000 Hz")
        if not 0 < f.hop_ms <= f.window_ms:
            raise ConfigError("features.hop_ms: must be positive and at most window_ms")
        if f.trim_db is not None and not f.trim_db > 0:
            raise ConfigError("features.trim_db: must be positive (dB below the peak), or null")
        if f.kind == "mfcc" and not 0 < f.n_mfcc <= f.n_mels:
            raise ConfigError("features.n_mfcc: must be in [1, n_mels]")
        s = self.strings
        at_least(s, "strings", 1, "train_count", "val_count", "test_count", "min_digits")
        if s.max_digits < s.min_digits:
            raise ConfigError("strings.max_digits: must be at least min_digits")
        if not 0.0 <= s.min_gap <= s.max_gap or s.max_edge < 0:
            raise ConfigError("strings: need 0 <= min_gap <= max_gap and max_edge >= 0")
        if s.noise_dbfs is not None and not s.noise_dbfs < 0:
            raise ConfigError("strings.noise_dbfs: must be negative (dB below full scale), "
                              "or null for no noise")
        at_least(self.augment, "augment", 0, "freq_masks", "freq_mask_width", "time_masks",
                 "time_mask_width")
        if not 0.0 <= self.augment.time_mask_fraction <= 1.0:
            raise ConfigError("augment.time_mask_fraction: must be in [0, 1]")
        stretch = self.augment.time_stretch
        if stretch is not None and not (
                isinstance(stretch, list) and len(stretch) == 2
                and all(isinstance(x, (int, float)) for x in stretch)
                and 0.5 <= stretch[0] <= stretch[1] <= 2.0):
            raise ConfigError(f"augment.time_stretch: expected [low, high] with "
                              f"0.5 <= low <= high <= 2, or null; got {stretch!r}")
