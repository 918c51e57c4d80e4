"""SentencePiece units as CTC labels: the alternative to characters (``data.units``).

With a small unit set trained on the training transcripts, frequent words become single
units and rare ones split into pieces or letters, so the model cannot misspell a word it
knows ("thre" for "three"), and its outputs are fewer, longer labels.
"""

from __future__ import annotations

import sentencepiece as spm

from data_prep.char_vocabulary import CharVocabulary, VocabularyError
from data_prep.subword_tokenizer import UNK_ID, TokenizerError, train_sentencepiece

WORD_START = "▁"  # SentencePiece's mark of a piece that begins a word
FIRST_PIECE = 4  # ids below are SentencePiece's special ids (pad, unk, bos, eos)


def train_units(texts: list[str], size: int, model_type: str = "bpe") -> bytes:
    """A SentencePiece model (``bpe`` or ``unigram``) of ``size`` pieces (special ids
    included) over ``texts``, covering every character they hold."""
    try:
        return train_sentencepiece(texts, size, model_type, 1.0)
    except TokenizerError as e:
        raise TokenizerError(str(e).replace("tokenizer.vocab_size", "data.unit_vocab_size")
                             .replace("tokenizer.character_coverage", "the characters")) from None


class PieceVocabulary:
    """Maps transcripts to CTC label ids over SentencePiece pieces, and back.

    Args:
        model_proto: a serialized SentencePiece model (``train_units``).
        blank_index: the id reserved for the CTC blank; the pieces take the other ids.
    """

    def __init__(self, model_proto: bytes, blank_index: int = 0):
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        pieces = range(FIRST_PIECE, self._sp.get_piece_size())
        if not 0 <= blank_index <= len(pieces):
            raise ValueError(f"blank_index must be in [0, {len(pieces)}], got {blank_index}")
        self.blank_index = blank_index
        labels = [i for i in range(len(pieces) + 1) if i != blank_index]
        self._piece_of = dict(zip(labels, pieces, strict=True))
        self._label_of = {p: i for i, p in self._piece_of.items()}

    @property
    def size(self) -> int:
        """Number of model outputs: the pieces plus the blank."""
        return len(self._piece_of) + 1

    def encode(self, text: str, where: str = "transcript") -> list[int]:
        """Label ids of ``text``; raises VocabularyError naming ``where`` on characters
        the units cannot spell (absent from the training transcripts)."""
        pieces = self._sp.encode(text)
        if UNK_ID in pieces:
            unknown = sorted({c for c in text if UNK_ID in self._sp.encode(c)})
            raise VocabularyError(f"{where}: characters {''.join(unknown)!r} are in no "
                                  f"SentencePiece unit (text {text!r})")
        return [self._label_of[p] for p in pieces]

    def decode(self, ids) -> str:
        """Text of label ids; the blank and negative (padding) ids are skipped."""
        return self._sp.decode([self._piece_of[i] for i in ids if i in self._piece_of])

    def labels(self) -> list[str]:
        """Every label id's piece as pyctcdecode reads it (``▁`` starts a word; ``""``
        for the blank)."""
        return [self._sp.id_to_piece(self._piece_of[i]) if i in self._piece_of else ""
                for i in range(self.size)]

    def label_texts(self) -> list[str]:
        """Every label id's text, a space where a word starts: joined, they read as the
        transcript (with surplus spaces to collapse)."""
        return [label.replace(WORD_START, " ") for label in self.labels()]


# Either kind of CTC labels: both have size, blank_index, encode, decode, labels and
# label_texts.
Vocabulary = CharVocabulary | PieceVocabulary
