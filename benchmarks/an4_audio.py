"""AN4's audio, measured: how much of it is leading and trailing silence (what
``features.trim_db`` would cut) and whether any of it is clipped at full scale.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.an4_audio [--trim-db 30]

Silence is what ``librosa.effects.trim`` removes at ``--trim-db`` below each file's peak
with the features' 25 ms window and 10 ms hop; a clipped sample is one at the 16-bit
limit. Prints JSON per split.
"""

from __future__ import annotations

import argparse
import json

import librosa
import numpy as np
import soundfile as sf

from data_prep import an4


def measure(entries: list[dict], trim_db: float) -> dict:
    seconds = silence = 0.0
    clipped_files = clipped_samples = 0
    peaks = []
    for e in entries:
        pcm, rate = sf.read(e["audio_filepath"], dtype="int16")
        audio = pcm.astype(np.float32) / 32768
        kept, _ = librosa.effects.trim(audio, top_db=trim_db, frame_length=rate // 40,
                                       hop_length=rate // 100)
        seconds += len(audio) / rate
        silence += (len(audio) - len(kept)) / rate
        clipped = int(np.sum(np.abs(pcm.astype(np.int32)) >= 32767))
        clipped_samples += clipped
        clipped_files += clipped > 0
        peaks.append(float(np.abs(audio).max()))
    return {"files": len(entries), "hours": round(seconds / 3600, 3),
            "edge_silence_fraction": round(silence / seconds, 3),
            "clipped_files": clipped_files, "clipped_samples": clipped_samples,
            "median_peak": round(float(np.median(peaks)), 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trim-db", type=float, default=30.0)
    p.add_argument("--data-dir", help="default: $PIPELINES_DATA_DIR")
    args = p.parse_args()
    root = an4.root_dir(args.data_dir)
    print(json.dumps({split: measure(an4.split_entries(root, split), args.trim_db)
                      for split in ("train", "test")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
