"""Character vocabulary for CTC: transcript normalization, encoding and decoding.

Id ``blank_index`` is the CTC blank (0 by default); the characters take the other ids in
the order given, so ``CharVocabulary("ab ")`` maps blank->0, a->1, b->2, space->3.
"""

from __future__ import annotations

import re
import string

# Lowercase English letters, apostrophe (LibriSpeech "don't") and the word separator.
ENGLISH_CHARACTERS = "abcdefghijklmnopqrstuvwxyz' "

# Punctuation removed by ``remove_punctuation``; the apostrophe is kept because it is
# part of words. Removed marks become spaces so "end.Next" does not fuse two words.
_PUNCTUATION = re.compile("[" + re.escape(string.punctuation.replace("'", "")) + "]")


class VocabularyError(ValueError):
    """A transcript has a character outside the vocabulary; the message says where."""


def normalize_transcript(text: str, lowercase: bool = True,
                         remove_punctuation: bool = False) -> str:
    """The text normalization applied to every transcript (training and references).

    Optionally lowercases and replaces ASCII punctuation other than the apostrophe with a
    space; always collapses runs of whitespace to one space and strips the ends.
    """
    if lowercase:
        text = text.lower()
    if remove_punctuation:
        text = _PUNCTUATION.sub(" ", text)
    return " ".join(text.split())


class CharVocabulary:
    """Maps transcripts to CTC label ids and back.

    Args:
        characters: the output characters, each once (a space if words are separated).
        blank_index: the id reserved for the CTC blank; characters take the other ids.
    """

    def __init__(self, characters: str = ENGLISH_CHARACTERS, blank_index: int = 0):
        if len(set(characters)) != len(characters) or not characters:
            raise ValueError(f"vocabulary characters must be non-empty and unique: {characters!r}")
        if not 0 <= blank_index <= len(characters):
            raise ValueError(f"blank_index must be in [0, {len(characters)}], got {blank_index}")
        self.characters, self.blank_index = characters, blank_index
        ids = [i for i in range(len(characters) + 1) if i != blank_index]
        self._ids = dict(zip(characters, ids, strict=True))
        self._chars = dict(zip(ids, characters, strict=True))

    @property
    def size(self) -> int:
        """Number of model outputs: the characters plus the blank."""
        return len(self.characters) + 1

    def encode(self, text: str, where: str = "transcript") -> list[int]:
        """Label ids of ``text``; raises VocabularyError naming ``where`` on unknown characters."""
        unknown = sorted({c for c in text if c not in self._ids})
        if unknown:
            raise VocabularyError(
                f"{where}: characters {''.join(unknown)!r} are not in the vocabulary "
                f"{self.characters!r} (text {text!r}); add them to data.vocabulary or set "
                "data.remove_punctuation"
            )
        return [self._ids[c] for c in text]

    def decode(self, ids) -> str:
        """Text of label ids; the blank and negative (padding) ids are skipped."""
        return "".join(self._chars[i] for i in ids if i in self._chars)

    def labels(self) -> list[str]:
        """Every label id's character (``""`` for the blank), as pyctcdecode reads them."""
        return [self._chars.get(i, "") for i in range(self.size)]

    def label_texts(self) -> list[str]:
        """Every label id's text: joined, they read as the transcript."""
        return self.labels()
