"""AN4 (CMU census database): read speech, its splits and transcripts, in the upstream layout.

The archive ``an4_sphere.tar.gz`` unpacks to ``an4/``: ``etc/an4_{train,test}.fileids``
(one ``<folder>/<speaker>/<utterance-id>`` a line), ``etc/an4_{train,test}.transcription``
(``<s> TEXT </s> (utterance-id)``) and ``wav/<fileid>.sph`` (16 kHz NIST SPHERE, which
libsndfile reads). ``an4_clstk`` (74 speakers) is the training set and ``an4test_clstk``
(10 other speakers) the test set. There is no official validation set; ``split_speakers``
holds out whole training speakers.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from data_prep.download import fetch_folder
from data_prep.manifest import ManifestError, entry

FOLDER = "an4"
ARCHIVE = "an4/an4_sphere.tar.gz"
ARCHIVE_URL = "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz"
# ``<s> TEXT </s> (id)``, the tags optional; the id is the last parenthesized word.
_LINE = re.compile(r"^\s*(?:<s>\s*)?(?P<text>.*?)\s*(?:</s>\s*)?\((?P<id>[^()\s]+)\)\s*$")


class AN4Error(ManifestError):
    """A malformed AN4 layout: the message names the file and line."""


def root_dir(data_dir_arg=None) -> Path:
    """The ``an4/`` folder: in the data directory, in the cache, or downloaded."""
    def name_of(parts):
        # an4/etc/* and an4/wav/**/*.sph; the archive's other files (docs) are skipped.
        keep = len(parts) >= 3 and parts[0] == "an4" and (
            parts[1] == "etc" or (parts[1] == "wav" and parts[-1].endswith(".sph")))
        return "/".join(parts[1:]) if keep else None

    # CMU publishes no checksum for the archive, so there is none to verify.
    return fetch_folder(FOLDER, ARCHIVE, ARCHIVE_URL, name_of,
                        "an4/etc and an4/wav/*.sph files", data_dir_arg)


def read_transcription(path: Path) -> dict[str, str]:
    """Utterance id -> transcript (as written, tags removed) of a ``.transcription`` file."""
    if not path.is_file():
        raise AN4Error(f"{path}: transcription file not found (AN4 layout: an4/etc/)")
    texts: dict[str, str] = {}
    # The files are ASCII; latin-1 decodes any byte, so a stray one reaches the vocabulary
    # check, which names the utterance, instead of failing here without a line number.
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if not match:
            raise AN4Error(f"{path}:{number}: expected '<s> TEXT </s> (utterance-id)', "
                           f"got {line.strip()!r}")
        utterance = match["id"]
        if utterance in texts:
            raise AN4Error(f"{path}:{number}: utterance {utterance} appears twice")
        texts[utterance] = match["text"]
    if not texts:
        raise AN4Error(f"{path}: no transcripts")
    return texts


def read_fileids(path: Path) -> dict[str, str]:
    """Utterance id -> file id (``<folder>/<speaker>/<utterance-id>``) of a ``.fileids`` file."""
    if not path.is_file():
        raise AN4Error(f"{path}: file-id list not found (AN4 layout: an4/etc/)")
    ids: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        fileid = line.strip()
        if not fileid:
            continue
        if len(fileid.split("/")) != 3 or fileid.split("/")[-1] in ids:
            raise AN4Error(f"{path}:{number}: expected a unique <folder>/<speaker>/<utterance> "
                           f"file id, got {fileid!r}")
        ids[fileid.split("/")[-1]] = fileid
    return ids


def split_entries(root: Path, split: str) -> list[dict]:
    """Manifest entries (absolute audio path, duration, text, speaker) of ``train`` or
    ``test``, in the order of the file-id list; every id must have audio and a transcript."""
    etc = root / "etc"
    fileids = read_fileids(etc / f"an4_{split}.fileids")
    transcription = etc / f"an4_{split}.transcription"
    texts = read_transcription(transcription)
    missing = sorted(set(fileids) - set(texts))
    if missing:
        raise AN4Error(f"{transcription}: no transcript for {len(missing)} utterances of "
                       f"an4_{split}.fileids (first: {missing[0]})")
    unlisted = sorted(set(texts) - set(fileids))
    if unlisted:
        raise AN4Error(f"{transcription}: {len(unlisted)} transcripts of utterances not in "
                       f"an4_{split}.fileids (first: {unlisted[0]})")
    entries = []
    for utterance, fileid in fileids.items():
        audio = root / "wav" / f"{fileid}.sph"
        if not audio.is_file():
            raise AN4Error(f"{etc / f'an4_{split}.fileids'}: audio of {utterance} not found "
                           f"({audio})")
        entries.append(entry(audio, texts[utterance], speaker=fileid.split("/")[1],
                             utterance=utterance))
    return entries


def split_speakers(entries: list[dict], fraction: float, seed: int
                   ) -> tuple[list[dict], list[dict]]:
    """(train, val): ``fraction`` of the speakers (at least one), drawn with ``seed``, held
    out whole for validation, so validation measures unseen voices as test does."""
    speakers = sorted({e["speaker"] for e in entries})
    count = max(1, round(fraction * len(speakers)))
    if count >= len(speakers):
        raise AN4Error(f"data.val_speaker_fraction={fraction}: holds out all {len(speakers)} "
                       "training speakers")
    held_out = set(random.Random(seed).sample(speakers, count))
    return ([e for e in entries if e["speaker"] not in held_out],
            [e for e in entries if e["speaker"] in held_out])


def signature(data_dir_arg=None) -> list:
    """Names and sizes of the corpus files, for a stage fingerprint."""
    root = root_dir(data_dir_arg)
    return sorted((str(p.relative_to(root)), p.stat().st_size)
                  for sub in ("etc", "wav") for p in (root / sub).rglob("*") if p.is_file())
