"""IWSLT'14 German-English (TED talk transcripts), split as fairseq's
``examples/translation/prepare-iwslt14.sh`` splits it.

Upstream layout: the WIT3 release archive ``de-en.tgz`` unpacked as ``iwslt14/de-en/`` in
the data directory:

- ``train.tags.de-en.{de,en}``: one sentence a line, aligned, interleaved with talk
  metadata lines (``<url>``, ``<keywords>``, ``<speaker>``, ...) and ``<title>`` /
  ``<description>`` lines whose text is kept;
- ``IWSLT14.TED.dev2010.de-en.{de,en}.xml`` and the other dev/test sets: sentences as
  ``<seg id="N"> ... </seg>`` lines.

Splits: ``val`` is every 23rd training sentence and ``train`` the rest; ``test`` is
dev2010, TEDX dev2012 and tst2010-2012 concatenated. Unlike fairseq's script the text
is neither Moses-tokenized nor lowercased (BLEU here is sacreBLEU on cased, detokenized
text) and long pairs are dropped by ``data.max_length`` later, so the counts differ
slightly from fairseq's.
"""

from __future__ import annotations

import re
from pathlib import Path

from data_prep.download import fetch_folder
from data_prep.file_io import CorpusError
from data_prep.parallel_corpus import iter_parallel

RELATIVE_DIR = "iwslt14/de-en"
ARCHIVE = "iwslt14/de-en.tgz"
# WIT3 (https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz) is offline; this is
# the copy fairseq's recipe has used since.
ARCHIVE_URL = "https://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
LANGUAGES = ("de", "en")
TEST_SETS = ("IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
             "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012")
VAL_EVERY = 23  # every 23rd training sentence is held out for validation
_METADATA = ("<url>", "<talkid>", "<keywords>", "<speaker>", "<reviewer", "<translator",
             "<doc", "</doc>")
_KEPT_TAGS = re.compile(r"</?(title|description)>")
_SEGMENT = re.compile(r'^\s*<seg id="?\d+"?>(.*)</seg>\s*$')


def iwslt14_dir(data_dir_arg=None) -> Path:
    """The ``de-en/`` folder: in the data directory, in the cache, or downloaded."""
    def name_of(parts):
        keep = len(parts) >= 2 and parts[-2] == "de-en" and (
            parts[-1].startswith("train.tags.de-en.") or parts[-1].endswith(".xml"))
        return parts[-1] if keep else None

    return fetch_folder(RELATIVE_DIR, ARCHIVE, ARCHIVE_URL, name_of,
                        "de-en/train.tags.* or de-en/*.xml files", data_dir_arg)


def split_files(split: str, source_lang: str, target_lang: str, data_dir_arg=None
                ) -> list[Path]:
    """The files a split is read from: the two training files (train and val), or the
    test sets' source and target files in turn."""
    _check_languages(source_lang, target_lang)
    folder = iwslt14_dir(data_dir_arg)
    if split in ("train", "val"):
        return [folder / f"train.tags.de-en.{lang}" for lang in (source_lang, target_lang)]
    if split != "test":
        raise CorpusError(f"unknown IWSLT'14 split {split!r}; choose from train, val, test")
    return [folder / f"{name}.de-en.{lang}.xml" for name in TEST_SETS
            for lang in (source_lang, target_lang)]


def iter_pairs(split: str, files: list[Path]):
    """``(source, target)`` pairs of a split from ``split_files``' files, streamed."""
    if split == "test":
        for source, target in zip(files[::2], files[1::2], strict=True):
            yield from _aligned(source, target, _segment)
        return
    sentences = _aligned(files[0], files[1], _training_line)
    for number, pair in enumerate(sentences, start=1):
        if (number % VAL_EVERY == 0) == (split == "val"):
            yield pair


def _check_languages(source_lang, target_lang):
    if {source_lang, target_lang} != set(LANGUAGES):
        raise CorpusError(f"IWSLT'14 de-en has German and English only; got source_lang="
                          f"{source_lang!r}, target_lang={target_lang!r}")


def _training_line(line: str) -> str | None:
    """A training file line's sentence, or None for a metadata line."""
    return None if line.startswith(_METADATA) else _KEPT_TAGS.sub("", line).strip()


def _segment(line: str) -> str | None:
    """An XML line's ``<seg>`` text, or None for any other line."""
    match = _SEGMENT.match(line)
    return match.group(1).strip() if match else None


def _aligned(source: Path, target: Path, sentence_of):
    """The sentence pairs of two aligned files (equal line counts): at each line both
    must be sentences or neither (metadata), or the files are misaligned."""
    for number, (s, t) in enumerate(iter_parallel(source, target), start=1):
        s, t = sentence_of(s), sentence_of(t)
        if (s is None) != (t is None):
            sentence, other = (target, source) if s is None else (source, target)
            raise CorpusError(f"{other}:{number}: not a sentence, but line {number} of "
                              f"{sentence} is: the files are misaligned")
        if s is not None:
            yield s, t
