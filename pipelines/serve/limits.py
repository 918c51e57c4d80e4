"""The server's limits and batching settings (no TensorFlow: the command line reads their
defaults before it imports anything heavy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one request may ask (the ``--max-...`` and ``--idle-seconds`` flags)."""

    body_bytes: int = 10 * 2**20
    sentences: int = 64
    chars: int = 1000
    audio_seconds: float = 120.0
    streams: int = 32
    idle_seconds: float = 30.0


@dataclass(frozen=True)
class Batching:
    max_batch: int = 64       # sentences per model call
    max_wait_ms: float = 2.0  # how long a lone request waits for others
