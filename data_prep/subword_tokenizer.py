"""SentencePiece subword tokenization: trained with ``sentencepiece``, applied in-graph.

Training uses the reference ``sentencepiece`` trainer. Applying it uses
tensorflow-text's ``SentencepieceTokenizer`` so the same model runs inside ``tf.data``
pipelines and exported graphs, with no Python in the loop.
"""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text

from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID, UNK_ID

__all__ = ["BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "SubwordTokenizer", "TokenizerError",
           "train_sentencepiece"]


class TokenizerError(ValueError):
    """The tokenizer cannot be trained with these settings on this text."""


def reservoir_sample(items, k: int, seed: int = 0) -> list:
    """A uniform random sample of at most ``k`` of ``items`` in one streamed pass
    (Vitter's algorithm R), holding only the sample; every item, in order, if there are
    at most ``k``.

    Not SentencePiece's own ``input_sentence_size`` sampling: it reorders even a corpus
    smaller than the sample, which changes the trained model (measured on Multi30k), so
    every small-corpus result would change with it.
    """
    rng = random.Random(seed)
    sample = []
    for seen, item in enumerate(items):
        if seen < k:
            sample.append(item)
        else:
            slot = rng.randrange(seen + 1)
            if slot < k:
                sample[slot] = item
    return sample


def train_sentencepiece(
    sentences: list[str],
    vocab_size: int,
    model_type: str = "unigram",
    character_coverage: float = 1.0,
) -> bytes:
    """Train a SentencePiece model on ``sentences`` and return its serialized proto."""
    if model_type not in ("unigram", "bpe"):
        raise ValueError(f"tokenizer.model_type must be 'unigram' or 'bpe', got {model_type!r}")
    if not any(s.strip() for s in sentences):
        raise TokenizerError("no text to train the tokenizer on")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            # A soft limit: tiny corpora (tests, toy data) cannot fill a large vocabulary.
            hard_vocab_limit=False,
            # One thread and a fixed input order make training deterministic.
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        # SentencePiece needs a piece for every kept character besides the special ids.
        needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(e))
        if needed is None:
            raise
        raise TokenizerError(
            f"tokenizer.vocab_size={vocab_size} is too small: the training text needs at "
            f"least {needed.group(1)} pieces (its characters and 4 special ids); raise it or "
            "lower tokenizer.character_coverage") from None
    return model.getvalue()


class SubwordTokenizer:
    """A SentencePiece model usable from Python and inside TensorFlow graphs.

    Args:
        model_proto: serialized SentencePiece model (the bytes of a ``.model`` file).
    """

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self._eager_tf = None

    @classmethod
    def load(cls, path: str | Path) -> SubwordTokenizer:
        return cls(Path(path).read_bytes())

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def id_to_piece(self, ids) -> list[str]:
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def _tf_tokenizer(self) -> tf_text.SentencepieceTokenizer:
        # A tokenizer made eagerly holds a resource that tf.data pipelines run by
        # Keras' distribution-aware fit() cannot see ("Resource ... does not exist");
        # one made while tracing a graph function lives inside that graph.
        if not tf.executing_eagerly():
            return tf_text.SentencepieceTokenizer(model=self.model_proto, out_type=tf.int32)
        if self._eager_tf is None:
            self._eager_tf = tf_text.SentencepieceTokenizer(model=self.model_proto,
                                                            out_type=tf.int32)
        return self._eager_tf

    def tokenize(self, texts) -> tf.RaggedTensor:
        """In-graph: strings of shape [N] -> ragged int32 ids [N, None] (no BOS/EOS)."""
        return self._tf_tokenizer().tokenize(texts)

    def detokenize(self, ids) -> tf.Tensor:
        """In-graph: int ids [N, T] (dense, 0-padded, or ragged) -> strings [N]."""
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids, padding=PAD_ID)
        return self._tf_tokenizer().detokenize(ids)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Python-side encoding, used for length statistics and filtering."""
        return self._sp.encode(texts)

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Python-side decoding of id lists; stops each sequence at the first EOS."""
        out = []
        for seq in ids:
            seq = [int(i) for i in seq]
            if EOS_ID in seq:
                seq = seq[: seq.index(EOS_ID)]
            out.append(self._sp.decode([i for i in seq if i not in (PAD_ID, BOS_ID)]))
        return out
