"""The speech experiment config: one dataclass per YAML section.

Imports no TensorFlow, Keras or librosa: a config is loaded and validated before they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from data_prep.char_vocabulary import ENGLISH_CHARACTERS, CharVocabulary
from data_prep.config_checks import (
    ConfigError,
    at_least,
    choice,
    positive,
    run_name,
    signature_without,
)
from data_prep.speech_config import (
    LIBRISPEECH_SUBSETS,
    DigitStringConfig,
    FeatureConfig,
    ShardConfig,
    SpecAugmentConfig,
    SyntheticVoicesConfig,
)
from models.config import STRATEGIES, AttentionDecoderConfig, CTCRecognizerConfig
from models.ctc_frames import frames_per_output
from pipelines.training_config import TrainingConfig

SPLITS = ("train", "val", "test")
CORPORA = ("fsdd_digits", "fsdd_strings", "librispeech", "an4", "manifest")
# Fields added after runs were made with the others: left out of prepare's fingerprint
# while they have their default values, so those runs keep their fingerprints.
LATER_FIELDS = ("val_speaker_fraction", "split_seed", "units", "unit_vocab_size", "unit_type")
UNITS = ("characters", "sentencepiece")
STREAM_FINALS = ("greedy", "lm")
LIBRISPEECH_SPLITS = {"train": "train-clean-100", "val": "dev-clean", "test": "test-clean"}
# CTC N-best lists rescored by the attention decoder (models.attention_rescoring).
RESCORING = "attention_rescoring"
# Decoding fields added after runs were made: left out of the evaluate and export
# fingerprints while they have their default values (as LATER_FIELDS for prepare).
LATER_DECODING_FIELDS = ("ctc_weight",)


@dataclass
class DataConfig:
    corpus: str = "fsdd_digits"  # fsdd_digits | fsdd_strings | librispeech | an4 | manifest
    test_takes: int = 5  # FSDD standard split: takes 0..4 of every speaker are test
    val_takes: int = 5  # the next takes are held out of training for validation
    test_speakers: list[str] | None = None  # FSDD leave-speakers-out split instead
    # corpus=an4: validation is this fraction of the training speakers, held out whole and
    # drawn with split_seed (AN4 has no validation set; test is its own 10 speakers).
    val_speaker_fraction: float = 0.1
    split_seed: int = 0
    manifests: dict | None = None  # corpus=manifest: {train: path, val: path, test: path}
    # corpus=librispeech: the LibriSpeech subset of each split
    subsets: dict = field(default_factory=lambda: dict(LIBRISPEECH_SPLITS))
    # The CTC labels: characters (data.vocabulary), or SentencePiece units trained by
    # prepare on the training transcripts (unit_vocab_size of them, 4 special ids included).
    units: str = "characters"  # characters | sentencepiece
    unit_vocab_size: int = 128
    # bpe merges frequent words into whole units: of the 97 distinct words of AN4's
    # training transcripts, 124 BPE pieces keep 52 whole, unigram's 112 pieces 46.
    unit_type: str = "bpe"  # bpe | unigram
    vocabulary: str = ENGLISH_CHARACTERS  # output characters
    blank_index: int = 0  # CTC blank id; the characters take the other ids
    lowercase: bool = True
    remove_punctuation: bool = False
    # Speed perturbation of the training set: prepare caches the features of one copy of
    # every training utterance per factor (Kaldi and ESPnet use [0.9, 1.0, 1.1]); null
    # (or [1.0]) is off.
    speed_perturbation: list[float] | None = field(default_factory=lambda: [1.0])
    limit_train: int | None = None  # use only the first N utterances (quick experiments)
    limit_val: int | None = None
    limit_test: int | None = None

    def signature(self) -> dict:
        """The fields, for prepare's fingerprint (``LATER_FIELDS`` only when changed)."""
        return signature_without(self, LATER_FIELDS)

    def validate(self, where):
        choice(self.corpus, CORPORA, f"{where}.corpus")
        if self.corpus in ("manifest", "librispeech", "an4") and self.test_speakers is not None:
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
        elif self.corpus == "an4":
            if not 0 < self.val_speaker_fraction < 1:
                raise ConfigError(f"{where}.val_speaker_fraction: must be in (0, 1), got "
                                  f"{self.val_speaker_fraction!r}")
        elif self.test_speakers is None and self.test_takes < 1:
            raise ConfigError(f"{where}.test_takes: must be at least 1")
        at_least(self, where, 1, "val_takes", "limit_train", "limit_val", "limit_test")
        choice(self.units, UNITS, f"{where}.units")
        choice(self.unit_type, ("bpe", "unigram"), f"{where}.unit_type")
        at_least(self, where, 8, "unit_vocab_size")
        if self.speed_perturbation is None:  # off, as null is for augment.time_stretch
            self.speed_perturbation = [1.0]
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
class LanguageModelConfig:
    """The ``decoding.lm:`` section: a word n-gram model of the training transcripts
    (interpolated Kneser-Ney, ``data_prep/ngram_lm.py``) in a CTC prefix beam search
    (pyctcdecode over KenLM). Its weight and word bonus are chosen on validation: every
    pair of the two lists is tried, and the lowest validation WER wins."""

    order: int = 3  # n-gram order (KenLM reads bigram models and longer)
    weights: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7, 1.0])
    word_bonuses: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0])
    beam_width: int = 64  # prefixes kept

    def validate(self, where):
        at_least(self, where, 2, "order")
        at_least(self, where, 1, "beam_width")
        for name in ("weights", "word_bonuses"):
            if not getattr(self, name):
                raise ConfigError(f"{where}.{name}: expected at least one value to try")
        if min(self.weights) < 0:
            raise ConfigError(f"{where}.weights: must not be negative")


@dataclass
class DecodingConfig:
    # closed_set: the likeliest of the training set's distinct transcripts (isolated words);
    # attention_rescoring: the beam's prefixes (the N-best list) rescored by the attention
    # decoder (a model with an attention_decoder section only)
    strategy: str = "beam_search"  # greedy | beam_search | closed_set | attention_rescoring
    beam_width: int = 16  # prefixes kept; attention_rescoring rescores them all
    batch_size: int = 64  # utterances per decoding batch
    # A word language model (beam_search; with attention_rescoring, its search's
    # beam_width best transcripts are rescored)
    lm: LanguageModelConfig | None = None
    # attention_rescoring: ctc_weight * the search's score (the CTC log probability, plus
    # the LM's with lm) + (1 - ctc_weight) * the decoder's log-likelihood of each
    # hypothesis (ESPnet and WeNet use 0.3 to 0.5)
    ctc_weight: float = 0.3

    def signature(self) -> dict:
        """The fields, for the evaluate and export fingerprints (``LATER_DECODING_FIELDS``
        only when changed or used)."""
        if self.strategy == RESCORING:
            return asdict(self)
        return signature_without(self, LATER_DECODING_FIELDS)

    def validate(self, where):
        choice(self.strategy, (*STRATEGIES, RESCORING), f"{where}.strategy")
        at_least(self, where, 1, "beam_width", "batch_size")
        if self.lm is not None and self.strategy not in ("beam_search", RESCORING):
            raise ConfigError(f"{where}.lm: a language model needs strategy beam_search or "
                              f"{RESCORING}, got {self.strategy}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ConfigError(f"{where}.ctc_weight: must be in [0, 1], got {self.ctc_weight!r}")


@dataclass
class StreamingConfig:
    """The ``streaming:`` section: how ``stream`` (and the TFLite step) cut the audio."""

    chunk_ms: float = 160.0  # audio per step: a multiple of hop_ms * conv_stride ** conv_layers
    # The final transcript of an utterance: greedy (the last partial), or lm: decoding.lm's
    # search over the utterance's streamed log-probabilities once it has ended (the
    # partials stay greedy, as they arrive).
    final: str = "greedy"  # greedy | lm

    def step_signature(self) -> dict:
        """What the streaming step (the TFLite export) is made from: not ``final``, which
        only the driver of the step uses."""
        return {k: v for k, v in asdict(self).items() if k != "final"}

    def validate(self, where):
        positive(self, where, "chunk_ms")
        choice(self.final, STREAM_FINALS, f"{where}.final")


@dataclass
class SpeechTrainingConfig(TrainingConfig):
    """The ``training:`` section: the shared fields and speech's own."""

    batch_size: int = 32  # utterances per batch (the CTC loss has no label smoothing)

    def validate(self, where):
        super().validate(where)
        at_least(self, where, 1, "batch_size")


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
    # An attention decoder over the encoder, trained with the CTC head (a hybrid
    # CTC/attention model, models.ctc_attention_recognizer); null: pure CTC.
    attention_decoder: AttentionDecoderConfig | None = None
    training: SpeechTrainingConfig = field(default_factory=SpeechTrainingConfig)
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
        if self.streaming.final == "lm" and self.decoding.lm is None:
            raise ConfigError("streaming.final: lm needs a word language model (a "
                              "decoding.lm section); use greedy")
        self._check_attention_decoder()

    def _check_attention_decoder(self):
        decoder = self.attention_decoder
        if decoder is not None and self.model.causal:
            raise ConfigError("attention_decoder: a causal (streaming) model is pure CTC; "
                              "the decoder attends over the whole utterance")
        if decoder is None and self.decoding.strategy == RESCORING:
            raise ConfigError(f"decoding.strategy: {RESCORING} needs a model with an "
                              "attention decoder (an attention_decoder section)")
        memory = 2 * self.model.rnn_units  # the bidirectional encoder's outputs
        if decoder is not None and decoder.attention == "dot" and decoder.units != memory:
            raise ConfigError(f"attention_decoder.units: dot attention needs the encoder's "
                              f"output size (2 x model.rnn_units = {memory}), got "
                              f"{decoder.units}; use scaled_dot, additive or general")

    def streaming_frames(self) -> int:
        """Feature frames per streaming chunk; ConfigError unless the chunk holds a whole
        number of the model's output frames."""
        step = self.features.hop_ms * frames_per_output(self.model.conv_layers,
                                                        self.model.conv_stride)
        frames = self.streaming.chunk_ms / self.features.hop_ms
        if abs(self.streaming.chunk_ms / step - round(self.streaming.chunk_ms / step)) > 1e-6:
            raise ConfigError(f"streaming.chunk_ms: must be a multiple of {step:g} ms (one "
                              f"output frame: features.hop_ms x model.conv_stride ** "
                              f"model.conv_layers), got {self.streaming.chunk_ms:g}")
        return round(frames)
