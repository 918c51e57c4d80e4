"""Free Spoken Digit Dataset (FSDD): finding or downloading it, and its splits.

Recordings are ``fsdd/recordings/{digit}_{speaker}_{index}.wav`` (8 kHz mono) in the data
directory, as in the upstream repository. Speakers and take counts are read from the
file names, never assumed: copies differ (upstream v1.0.10 has 6 speakers x 50 takes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data_prep.download import fetch_folder

RECORDINGS = "fsdd/recordings"
VERSION = "1.0.10"
ARCHIVE_URL = (f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/"
               f"v{VERSION}.tar.gz")
ARCHIVE = f"fsdd/free-spoken-digit-dataset-{VERSION}.tar.gz"
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME = re.compile(r"^(\d)_([^_]+)_(\d+)\.wav$")


class FSDDError(ValueError):
    """The FSDD folder is missing, empty, or a split asks for unknown speakers."""


@dataclass(frozen=True)
class Recording:
    """One FSDD file: ``{digit}_{speaker}_{index}.wav``."""

    path: Path
    digit: int
    speaker: str
    index: int

    @property
    def text(self) -> str:
        return DIGIT_WORDS[self.digit]


def recordings_dir(data_dir_arg=None) -> Path:
    """The ``recordings/`` folder: in the data directory, in the cache, or downloaded."""
    # Upstream publishes no checksum for its release archives, and GitHub's generated
    # archives are not guaranteed byte-stable, so there is no sha256 to verify against.
    return fetch_folder(RECORDINGS, ARCHIVE, ARCHIVE_URL, _recording_name,
                        "recordings/*.wav files", data_dir_arg)


def _recording_name(parts: list[str]) -> str | None:
    """``*/recordings/{digit}_{speaker}_{index}.wav`` members, by their base names."""
    ok = len(parts) >= 2 and parts[-2] == "recordings" and _NAME.match(parts[-1])
    return parts[-1] if ok else None


def list_recordings(folder: Path) -> list[Recording]:
    """All recordings in ``folder``, sorted by (index, speaker, digit): the first N of a
    split then cover every speaker and digit (``data.limit_*``)."""
    recordings = []
    for path in Path(folder).iterdir():
        match = _NAME.match(path.name)
        if match:
            digit, speaker, index = match.groups()
            recordings.append(Recording(path, int(digit), speaker, int(index)))
    if not recordings:
        raise FSDDError(f"{folder}: no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav)")
    return sorted(recordings, key=lambda r: (r.index, r.speaker, r.digit))


def split_recordings(recordings: list[Recording], test_takes: int = 5, val_takes: int = 5,
                     test_speakers: list[str] | None = None) -> dict[str, list[Recording]]:
    """Train/val/test splits of FSDD.

    Standard split (the dataset's README): takes ``0 .. test_takes-1`` of every speaker
    are test, the rest train; of those, takes ``test_takes .. test_takes+val_takes-1``
    are held out for validation.

    Leave-speakers-out (``test_speakers``): all takes of those speakers are test; the
    other speakers' takes ``0 .. val_takes-1`` are validation and the rest train.
    """
    speakers = sorted({r.speaker for r in recordings})
    if test_speakers:
        unknown = sorted(set(test_speakers) - set(speakers))
        if unknown:
            raise FSDDError(f"data.test_speakers: unknown speakers {unknown}; the recordings "
                            f"have {speakers}")
        if set(test_speakers) == set(speakers):
            raise FSDDError("data.test_speakers: leaves no speaker to train on")

        def split_of(r):
            if r.speaker in test_speakers:
                return "test"
            return "val" if r.index < val_takes else "train"
    else:
        def split_of(r):
            if r.index < test_takes:
                return "test"
            return "val" if r.index < test_takes + val_takes else "train"

    splits = {"train": [], "val": [], "test": []}
    for r in recordings:
        splits[split_of(r)].append(r)
    for name, items in splits.items():
        if not items:
            raise FSDDError(f"FSDD split '{name}' is empty (test_takes={test_takes}, "
                            f"val_takes={val_takes}, test_speakers={test_speakers})")
    return splits
