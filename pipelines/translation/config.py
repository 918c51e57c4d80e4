"""The translation experiment config: one dataclass per YAML section.

Imports no TensorFlow or Keras: a config is loaded and validated before they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from data_prep.config_checks import ConfigError, at_least, choice, fraction, positive, run_name
from data_prep.iwslt14 import LANGUAGES as IWSLT14_LANGUAGES
from data_prep.multi30k import LANGUAGES as MULTI30K_LANGUAGES
from models.config import Seq2SeqConfig
from pipelines.training_config import TrainingConfig

SPLITS = ("train", "val", "test")
CORPORA = ("multi30k", "iwslt14", "files", "tsv")
LANGUAGES = {"multi30k": MULTI30K_LANGUAGES, "iwslt14": IWSLT14_LANGUAGES}  # standard corpora


@dataclass
class DataConfig:
    # multi30k | iwslt14 (de-en) | files (two aligned files per split) | tsv
    corpus: str = "multi30k"
    source_lang: str = "de"
    target_lang: str = "en"
    # For corpus=files: {split: [source_path, target_path]}; for corpus=tsv: {split: path}.
    paths: dict | None = None
    max_length: int = 80  # training pairs with more subwords on either side are dropped
    shard_pairs: int = 100_000  # prepare writes the tokenized training pairs in shards of this many
    shuffle_buffer: int = 200_000  # train shuffles pairs within a buffer of this many
    limit_train: int | None = None  # use only the first N pairs (quick experiments)
    limit_val: int | None = None
    limit_test: int | None = None

    def validate(self, where):
        choice(self.corpus, CORPORA, f"{where}.corpus")
        at_least(self, where, 1, "max_length", "limit_train", "limit_val", "limit_test",
                 "shard_pairs", "shuffle_buffer")
        if self.corpus in LANGUAGES:
            choice(self.source_lang, LANGUAGES[self.corpus], f"{where}.source_lang")
            choice(self.target_lang, LANGUAGES[self.corpus], f"{where}.target_lang")
            if self.source_lang == self.target_lang:
                raise ConfigError(f"{where}.target_lang: must differ from source_lang "
                                  f"({self.source_lang!r})")
        else:
            paths = self.paths or {}
            for split in SPLITS:
                value = paths.get(split)
                ok = (isinstance(value, list) and len(value) == 2) if self.corpus == "files" \
                    else isinstance(value, str)
                if not ok:
                    want = "[source_path, target_path]" if self.corpus == "files" else "a path"
                    raise ConfigError(f"{where}.paths.{split}: expected {want} for "
                                      f"corpus={self.corpus}, got {value!r}")


@dataclass
class TokenizerConfig:
    model_type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000
    joint: bool = True  # one vocabulary for both languages
    character_coverage: float = 1.0
    # SentencePiece trains on a uniform random sample of at most this many training pairs
    # (drawn in one streamed pass; all of them if fewer).
    sample_pairs: int = 300_000

    def validate(self, where):
        choice(self.model_type, ("unigram", "bpe"), f"{where}.model_type")
        # SentencePiece reserves 4 ids (pad, unk, bos, eos) and needs room for pieces.
        at_least(self, where, 8, "vocab_size")
        at_least(self, where, 1, "sample_pairs")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(f"{where}.character_coverage: must be in (0, 1], "
                              f"got {self.character_coverage!r}")


@dataclass
class DecodingConfig:
    beam_size: int = 5
    length_penalty: float = 0.6  # GNMT alpha
    batch_tokens: int = 6000  # source tokens per decoding batch
    max_length_ratio: float = 1.5  # output budget: ratio * source length + offset
    max_length_offset: int = 10

    def validate(self, where):
        at_least(self, where, 1, "beam_size", "batch_tokens")
        at_least(self, where, 0, "length_penalty", "max_length_offset")
        positive(self, where, "max_length_ratio")


@dataclass
class TranslationTrainingConfig(TrainingConfig):
    """The ``training:`` section: the shared fields and translation's own."""

    batch_tokens: int = 4000  # padded target tokens per batch (batches are bucketed by length)
    label_smoothing: float = 0.1  # of the cross-entropy loss

    def validate(self, where):
        super().validate(where)
        at_least(self, where, 1, "batch_tokens")
        fraction(self.label_smoothing, f"{where}.label_smoothing")


@dataclass
class TranslationConfig:
    name: str = "translation"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    training: TranslationTrainingConfig = field(default_factory=TranslationTrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    SET_BY_PIPELINE = ("model.source_vocab_size", "model.target_vocab_size")

    def validate(self, where):
        run_name(self.name, "name")
        for name in self.SET_BY_PIPELINE:
            if getattr(self.model, name.split(".")[1]):
                raise ConfigError(f"{name}: set from the trained tokenizer; configure "
                                  "tokenizer.vocab_size instead")
