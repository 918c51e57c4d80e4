"""Speech manifests (JSON lines) and converters from standard corpus layouts.

One utterance per line, the format NeMo and others use::

    {"audio_filepath": "clips/a.wav", "duration": 1.52, "text": "seven three", "speaker": "x"}

``audio_filepath``, ``duration`` (seconds) and ``text`` are required; other keys are kept
(the pipeline reports per-speaker results when ``speaker`` is present). Relative audio
paths are relative to the manifest's folder. Converters (texts are kept verbatim; the
pipeline normalizes them)::

    python -m data_prep.manifest librispeech LibriSpeech/dev-clean dev.jsonl
    python -m data_prep.manifest ljspeech LJSpeech-1.1 ljs.jsonl
    python -m data_prep.manifest commonvoice cv-corpus/en test.jsonl --split test
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from data_prep.audio_features import audio_duration
from data_prep.file_io import write_lines

REQUIRED = ("audio_filepath", "duration", "text")


class ManifestError(ValueError):
    """A malformed manifest or corpus layout; the message names the file (and line)."""


def entry(audio_path, text: str, **extra) -> dict:
    """A manifest entry for an existing audio file, with its measured duration.

    The path is made absolute so the manifest can be written anywhere.
    """
    return {"audio_filepath": str(Path(audio_path).resolve()),
            "duration": round(audio_duration(audio_path), 4), "text": text, **extra}


def write_manifest(path, entries: list[dict]) -> Path:
    return write_lines(path, [json.dumps(e, ensure_ascii=False) for e in entries])


def read_manifest(path) -> list[dict]:
    """Entries of a JSONL manifest, with ``audio_filepath`` made absolute."""
    path = Path(path)
    if path.is_dir():
        raise ManifestError(f"{path}: is a directory, not a manifest file")
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path}:{number}: invalid JSON ({e.msg})") from e
        missing = [k for k in REQUIRED if not isinstance(item, dict) or k not in item]
        if missing:
            raise ManifestError(f"{path}:{number}: missing {', '.join(missing)}")
        problem = _field_problem(item)
        if problem:
            raise ManifestError(f"{path}:{number}: {problem}")
        item["audio_filepath"] = str(path.parent / item["audio_filepath"])
        entries.append(item)
    if not entries:
        raise ManifestError(f"{path}: manifest has no entries")
    return entries


def _field_problem(item: dict) -> str | None:
    """What is wrong with the fields of a manifest entry, if anything."""
    duration = item["duration"]
    if not isinstance(item["audio_filepath"], str) or not item["audio_filepath"].strip():
        return f"audio_filepath must be a non-empty path, got {item['audio_filepath']!r}"
    if not isinstance(item["text"], str):
        return "text must be a string"
    if (isinstance(duration, bool) or not isinstance(duration, (int, float))
            or not 0 < duration < math.inf):
        return f"duration must be a positive number of seconds, got {duration!r}"
    if not isinstance(item.get("speaker", ""), (str, int)):
        return f"speaker must be a string or an integer, got {item['speaker']!r}"
    return None


def correct_durations(entries: list[dict], tolerance: float = 0.1) -> list[tuple[dict, float]]:
    """Set each entry's duration to its audio's where they differ by more than
    ``tolerance`` seconds (reported hours and duration buckets rely on them); returns the
    corrected entries with the durations their manifest gave."""
    corrected = []
    for item in entries:
        measured = round(audio_duration(item["audio_filepath"]), 4)
        if abs(measured - item["duration"]) > tolerance:
            corrected.append((item, item["duration"]))
            item["duration"] = measured
    return corrected


def librispeech_manifest(root) -> list[dict]:
    """LibriSpeech layout: ``{speaker}/{chapter}/{speaker}-{chapter}.trans.txt`` lines
    ``{utterance_id} {TEXT}`` next to ``{utterance_id}.flac``."""
    root = Path(root)
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise ManifestError(f"{root}: no *.trans.txt files (LibriSpeech layout)")
    entries = []
    for trans in transcripts:
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            utterance, _, text = line.strip().partition(" ")
            audio = trans.parent / f"{utterance}.flac"
            if not audio.is_file():
                raise ManifestError(f"{trans}:{number}: audio {audio.name} not found")
            entries.append(entry(audio, text, speaker=utterance.split("-")[0]))
    return entries


def ljspeech_manifest(root) -> list[dict]:
    """LJSpeech layout: ``metadata.csv`` lines ``id|text|normalized text`` and
    ``wavs/{id}.wav``; the normalized text (numbers spelled out) is used when present."""
    root = Path(root)
    metadata = root / "metadata.csv"
    if not metadata.is_file():
        raise ManifestError(f"{metadata}: not found (LJSpeech layout)")
    entries = []
    with open(metadata, encoding="utf-8", newline="") as f:
        # Texts contain quotes, so no CSV quoting: fields are split on "|" only.
        for number, row in enumerate(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if len(row) < 2:
                raise ManifestError(f"{metadata}:{number}: expected id|text|normalized text")
            text = row[2] if len(row) > 2 and row[2].strip() else row[1]
            audio = root / "wavs" / f"{row[0]}.wav"
            if not audio.is_file():
                raise ManifestError(f"{metadata}:{number}: audio wavs/{row[0]}.wav not found")
            entries.append(entry(audio, text, speaker="LJ"))
    return entries


def commonvoice_manifest(root, split: str = "train") -> list[dict]:
    """Common Voice layout: ``{split}.tsv`` (columns include ``client_id``, ``path``,
    ``sentence``) and ``clips/{path}`` (mp3)."""
    root = Path(root)
    table = root / f"{split}.tsv"
    if not table.is_file():
        raise ManifestError(f"{table}: not found (Common Voice layout)")
    entries = []
    with open(table, encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = {"client_id", "path", "sentence"} - set(rows.fieldnames or [])
        if missing:
            raise ManifestError(f"{table}: missing columns {sorted(missing)}")
        for number, row in enumerate(rows, start=2):  # line 1 is the header
            audio = root / "clips" / row["path"]
            if not audio.is_file():
                raise ManifestError(f"{table}:{number}: audio clips/{row['path']} not found")
            entries.append(entry(audio, row["sentence"], speaker=row["client_id"]))
    return entries


CONVERTERS = {"librispeech": librispeech_manifest, "ljspeech": ljspeech_manifest,
              "commonvoice": commonvoice_manifest}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Write a JSONL manifest for a corpus folder.")
    p.add_argument("layout", choices=sorted(CONVERTERS))
    p.add_argument("root", help="corpus folder (for LibriSpeech: one subset, e.g. dev-clean)")
    p.add_argument("output", help="manifest to write (.jsonl)")
    p.add_argument("--split", default="train", help="commonvoice: which .tsv (train, dev, test)")
    args = p.parse_args(argv)
    kwargs = {"split": args.split} if args.layout == "commonvoice" else {}
    entries = CONVERTERS[args.layout](args.root, **kwargs)
    write_manifest(args.output, entries)
    print(f"{args.output}: {len(entries)} utterances, "
          f"{sum(e['duration'] for e in entries) / 3600:.2f} hours")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
