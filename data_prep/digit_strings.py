"""Connected digit strings built from FSDD recordings, in the manner of TIDIGITS.

Each string is 1-7 (configurable) recordings of one speaker joined by random gaps of
silence, with optional low-level white noise over the whole signal so the gaps are not
digital silence. The transcript is the digit words ("seven three zero"). Everything is
drawn from one seeded generator, so the same recordings, config and seed give the same
strings, sample for sample.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from data_prep.audio_features import load_audio
from data_prep.fsdd import Recording
from data_prep.speech_config import DigitStringConfig


def make_digit_strings(recordings: list[Recording], count: int, cfg: DigitStringConfig,
                       sample_rate: int, out_dir: Path, seed) -> list[dict]:
    """Build ``count`` strings from ``recordings`` into ``out_dir``; manifest entries.

    ``seed`` is anything ``numpy.random.default_rng`` takes (an int or a tuple of ints).

    Speakers take turns, so each has the same number of strings (give or take one);
    each string uses one speaker's recordings only (drawn with replacement). Entries
    carry ``speaker``, ``digits`` (e.g. "730") and ``sources`` (the recordings' file
    names, so a split can be audited) besides the manifest fields.
    """
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[Recording]] = {}
    for r in recordings:
        by_speaker.setdefault(r.speaker, []).append(r)
    speakers = sorted(by_speaker)
    audio_cache: dict[Path, np.ndarray] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    noise_rms = None if cfg.noise_dbfs is None else 10.0 ** (cfg.noise_dbfs / 20.0)
    entries = []
    for i in tqdm(range(count), desc=f"strings {out_dir.name}", unit="string", file=sys.stderr,
                  disable=True if count < 100 else None):  # None: on a terminal only
        speaker = speakers[i % len(speakers)]  # every speaker gets the same share
        pool = by_speaker[speaker]
        picks = [pool[j] for j in rng.integers(len(pool), size=rng.integers(
            cfg.min_digits, cfg.max_digits + 1))]
        pieces = [_silence(rng.uniform(0, cfg.max_edge), sample_rate)]
        for k, r in enumerate(picks):
            if k:
                pieces.append(_silence(rng.uniform(cfg.min_gap, cfg.max_gap), sample_rate))
            if r.path not in audio_cache:
                audio_cache[r.path] = load_audio(r.path, sample_rate)
            pieces.append(audio_cache[r.path])
        pieces.append(_silence(rng.uniform(0, cfg.max_edge), sample_rate))
        audio = np.concatenate(pieces)
        if noise_rms is not None:
            audio = audio + rng.normal(0.0, noise_rms, audio.shape).astype(np.float32)
        path = out_dir / f"{i:05d}_{speaker}.wav"
        sf.write(path, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
        entries.append({
            "audio_filepath": str(path.resolve()), "duration": round(len(audio) / sample_rate, 4),
            "text": " ".join(r.text for r in picks), "speaker": speaker,
            "digits": "".join(str(r.digit) for r in picks),
            "sources": [r.path.name for r in picks],
        })
    return entries


def _silence(seconds: float, sample_rate: int) -> np.ndarray:
    return np.zeros(round(seconds * sample_rate), dtype=np.float32)
