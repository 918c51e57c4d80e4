"""LibriSpeech (read English audiobooks, 16 kHz FLAC), by subset, in the upstream layout.

Each subset is ``LibriSpeech/<subset>/<speaker>/<chapter>/`` in the data directory, as
OpenSLR's ``<subset>.tar.gz`` unpacks (``<speaker>-<chapter>.trans.txt`` beside the
``.flac`` files); a subset found neither there nor in the download cache is downloaded
from OpenSLR (resource 12) and unpacked into the cache. ``data_prep.manifest`` turns a
subset into manifest entries.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.download import fetch_folder
from data_prep.manifest import librispeech_manifest

URL = "https://www.openslr.org/resources/12/{subset}.tar.gz"


def subset_dir(subset: str, data_dir_arg=None) -> Path:
    """The folder of one subset: in the data directory, in the cache, or downloaded."""
    def name_of(parts):
        # LibriSpeech/<subset>/<speaker>/<chapter>/<file>, kept below the subset folder.
        keep = len(parts) == 5 and parts[:2] == ["LibriSpeech", subset]
        return "/".join(parts[2:]) if keep else None

    # OpenSLR publishes MD5 sums only; fetch verifies SHA-256, so nothing is verified.
    return fetch_folder(f"LibriSpeech/{subset}", f"LibriSpeech/{subset}.tar.gz",
                        URL.format(subset=subset), name_of,
                        f"LibriSpeech/{subset}/*/*/ files", data_dir_arg)


def subset_entries(subset: str, data_dir_arg=None) -> list[dict]:
    """Manifest entries (audio path, text, duration, speaker) of one subset."""
    return librispeech_manifest(subset_dir(subset, data_dir_arg))


def subset_signature(subset: str, data_dir_arg=None) -> list:
    """Names and sizes of a subset's files, for a stage fingerprint."""
    folder = subset_dir(subset, data_dir_arg)
    return sorted((str(p.relative_to(folder)), p.stat().st_size)
                  for p in folder.rglob("*") if p.is_file())
