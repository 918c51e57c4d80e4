"""The speech experiment config: one dataclass per YAML section.

Imports no TensorFlow, Keras or librosa: a config is loaded and validated before they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.char_vocabulary import ENGLISH_CHARACTERS, CharVocabulary
from data_prep.config_checks import ConfigError, at_least, choice, positive, run_name
from data_prep.speech_config import (
    LIBRISPEECH_SUBSETS,
    DigitStringConfig,
    FeatureConfig,
    ShardConfig,
    SpecAugmentConfig,
    SyntheticVoicesConfig,
)
from models.config import STRATEGIES, CTCRecognizerConfig
from pipelines.training_config import TrainingConfig

SPLITS = ("train", "val", "test")
CORPORA = ("fsdd_digits", "fsdd_strings", "librispeech", "manifest")
LIBRISPEECH_SPLITS = {"train": "train-clean-100", "val": "dev-clean", "test": "test-clean"}


@dataclass
class DataConfig:
    corpus: str = "fsdd_digits"  # fsdd_digits | fsdd_strings | librispeech | manifest
    test_takes: int = 5  # FSDD standard split: takes 0..4 of every speaker are test
    val_takes: int = 5  # the next takes are held out of training for validation
    test_speakers: list[str] | None = None  # FSDD leave-speakers-out split instead
    manifests: dict | None = None  # corpus=manifest: {train: path, val: path, test: path}
    # corpus=librispeech: the LibriSpeech subset of each split
    subsets: dict = field(default_factory=lambda: dict(LIBRISPEECH_SPLITS))
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
        choice(self.corpus, CORPORA, f"{where}.corpus")
        if self.corpus in ("manifest", "librispeech") and self.test_speakers is not None:
            raise ConfigError(f"{where}.test_speakers: FSDD only; corpus={self.corpus} "
                              "has its own test set")
        if self.corpus == "librispeech":
            for split in SPLITS:
                choice((self.subsets or {}).get(split), LIBRISPEECH_SUBSETS,
                       f"{where}.subsets.{split}")
        elif self.corpus == "manifest":
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
        at_least(self, where, 1, "beam_width", "batch_size")


@dataclass
class StreamingConfig:
    """The ``streaming:`` section: how ``stream`` (and the TFLite step) cut the audio."""

    chunk_ms: float = 160.0  # audio per step: a multiple of hop_ms * conv_stride ** conv_layers

    def validate(self, where):
        positive(self, where, "chunk_ms")


@dataclass
class SpeechConfig:
    name: str = "speech"
    data: DataConfig = field(default_factory=DataConfig)
    strings: DigitStringConfig = field(default_factory=DigitStringConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    synthetic: SyntheticVoicesConfig = field(default_factory=SyntheticVoicesConfig)
    model: CTCRecognizerConfig = field(default_factory=CTCRecognizerConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)

    SET_BY_PIPELINE = ("model.num_features", "model.vocab_size", "model.blank_index")

    def validate(self, where):
        run_name(self.name, "name")
        for name in self.SET_BY_PIPELINE:
            if getattr(self.model, name.split(".")[1]):
                raise ConfigError(f"{name}: set by the pipeline from the features and "
                                  "data sections; do not set it")
        if self.synthetic.voices and self.data.corpus == "fsdd_strings":
            # Voices say each distinct training transcript: a handful of words, not
            # thousands of random digit strings.
            raise ConfigError("synthetic.voices: for isolated words (fsdd_digits, or a "
                              "manifest corpus with few distinct transcripts), not fsdd_strings")
        if self.model.causal:
            self.streaming_frames()  # a causal model is for streaming: check the chunk now

    def streaming_frames(self) -> int:
        """Feature frames per streaming chunk; ConfigError unless the chunk holds a whole
        number of the model's output frames."""
        step = self.features.hop_ms * self.model.conv_stride ** self.model.conv_layers
        frames = self.streaming.chunk_ms / self.features.hop_ms
        if abs(self.streaming.chunk_ms / step - round(self.streaming.chunk_ms / step)) > 1e-6:
            raise ConfigError(f"streaming.chunk_ms: must be a multiple of {step:g} ms (one "
                              f"output frame: features.hop_ms x model.conv_stride ** "
                              f"model.conv_layers), got {self.streaming.chunk_ms:g}")
        return round(frames)
