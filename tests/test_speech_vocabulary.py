import pytest

from data_prep.char_vocabulary import (
    ENGLISH_CHARACTERS,
    CharVocabulary,
    VocabularyError,
    normalize_transcript,
)


def test_blank_is_zero_and_characters_follow():
    vocab = CharVocabulary()
    assert vocab.size == len(ENGLISH_CHARACTERS) + 1 == 29
    assert vocab.encode("ab c") == [1, 2, 28, 3]
    assert vocab.decode([1, 0, 2, 28, 3]) == "ab c"


def test_blank_index_can_be_anywhere():
    vocab = CharVocabulary("abc", blank_index=3)
    assert vocab.encode("abc") == [0, 1, 2]
    # The blank and the -1 padding of decoder outputs are skipped.
    assert vocab.decode([0, 3, 1, -1, 2]) == "abc"
    vocab = CharVocabulary("abc", blank_index=1)
    assert vocab.encode("abc") == [0, 2, 3]


def test_unknown_character_names_the_utterance():
    with pytest.raises(VocabularyError, match=r"clip_7\.wav: characters '7é'"):
        CharVocabulary().encode("café 7", where="clip_7.wav")


@pytest.mark.parametrize("bad", [dict(characters="aa"), dict(characters=""),
                                 dict(characters="ab", blank_index=3)])
def test_invalid_vocabularies(bad):
    with pytest.raises(ValueError):
        CharVocabulary(**bad)


def test_normalization():
    assert normalize_transcript("  Hello,  World!\n") == "hello, world!"
    assert normalize_transcript("Don't STOP.Now", remove_punctuation=True) == "don't stop now"
    assert normalize_transcript("Keep Case", lowercase=False) == "Keep Case"
