"""Synthetic training speech: words spoken by many espeak-ng voices.

A recognizer trained on a handful of speakers learns their voices; adding the same words
in many synthetic voices (accents x voice variants x pitch x speaking rate) makes it rely
less on any one voice. The audio is made by the ``espeak-ng`` program (Debian/Ubuntu
package ``espeak-ng``; ``make voices`` installs it), never by a library this module
imports, so everything else works without it.

Each voice is drawn from a seeded generator, so a config always gives the same voices;
each says every word once. Files are ``{out_dir}/{voice:04d}_{word}.wav`` at espeak-ng's
own rate (22.05 kHz); feature extraction resamples them like any other audio.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.manifest import entry
from data_prep.speech_config import SyntheticVoicesConfig

# espeak-ng's English accents and voice variants (``espeak-ng --voices=en`` and
# ``espeak-ng --voices=variant``), as shipped since version 1.50.
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
           "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak",
            "klatt", "klatt2", "klatt3", "klatt4", "Andy", "Annie", "Denis", "Gene", "Jacky",
            "Lee", "Mike", "Tweaky", "adam", "anika", "belinda", "benjamin", "caleb", "david",
            "edward", "grandma", "grandpa", "iven", "john", "linda", "max", "michel",
            "norbert", "paul", "pedro", "quincy", "rob", "robert", "steph", "travis",
            "victor", "zac")
INSTALL_HINT = "install it with `make voices` (or: apt-get install espeak-ng)"


class SynthesisError(RuntimeError):
    """espeak-ng is missing or failed; the message says what to do."""


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an espeak-ng voice (``accent+variant``), pitch and rate."""

    accent: str
    variant: str
    pitch: int
    rate: int

    @property
    def name(self) -> str:
        return f"espeak:{self.accent}+{self.variant}:p{self.pitch}:s{self.rate}"


def espeak_ng() -> str:
    """Path of the espeak-ng program; SynthesisError (one line) if it is not installed."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise SynthesisError(f"synthetic.voices needs the espeak-ng program, which is not "
                             f"installed: {INSTALL_HINT}")
    return program


def draw_voices(cfg: SyntheticVoicesConfig) -> list[Voice]:
    """``cfg.voices`` voices drawn uniformly (accent, variant, pitch, rate) with ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    return [Voice(str(rng.choice(ACCENTS)), str(rng.choice(VARIANTS)),
                  int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
                  int(rng.integers(cfg.rate[0], cfg.rate[1] + 1)))
            for _ in range(cfg.voices)]


def synthesize(text: str, voice: Voice, path: Path) -> Path:
    """Write ``text`` spoken by ``voice`` to the wav file ``path``."""
    command = [espeak_ng(), "-v", f"{voice.accent}+{voice.variant}", "-p", str(voice.pitch),
               "-s", str(voice.rate), "-w", str(path), text]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode or not path.is_file() or path.stat().st_size <= 44:
        detail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SynthesisError(f"espeak-ng failed for {voice.name} saying {text!r}: {detail[0]}")
    return path


def make_synthetic_speech(words: list[str], cfg: SyntheticVoicesConfig, out_dir: Path
                          ) -> list[dict]:
    """Manifest entries (``speaker``: the voice name) of every word in every voice.

    Existing files are reused, so an interrupted run continues where it stopped;
    ``out_dir`` must be specific to ``cfg`` (the run's data folder is).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, voice in enumerate(draw_voices(cfg)):
        for word in words:
            path = out_dir / f"{number:04d}_{word.replace(' ', '_')}.wav"
            if not path.is_file():
                # Written under a temporary name: a killed run never leaves half a file.
                synthesize(word, voice, tmp := path.with_suffix(".tmp.wav"))
                tmp.replace(path)
            entries.append(entry(path, word, speaker=voice.name))
    return entries
