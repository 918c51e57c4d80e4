"""Timing for the benchmarks: the machine's matmul peak and steady-state training steps.

Used by ``benchmarks.harness`` and the other benchmarks (``train_loop``, ``large_corpus``,
``speech_reference``): warm-up steps are excluded, tracing included in them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from data_prep.special_ids import PAD_ID
from pipelines.train_steps import Steps, run_epoch


def write_results(path, results: dict, who: str) -> None:
    """Write a benchmark's ``results`` as JSON to ``path`` (folders made), saying so."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"[{who}] wrote {path}", file=sys.stderr)


def matmul_peak(n: int = 4096, seconds: float = 3.0, min_repeats: int = 3) -> dict:
    """Float32 GFLOP/s of an [n, n] x [n, n] ``tf.linalg.matmul`` (2 n^3 FLOPs each).

    Two warm-up products, then products until ``seconds`` have passed (at least
    ``min_repeats``); ``gflops`` is the best product, ``gflops_median`` the median.
    """
    a = tf.random.normal((n, n), dtype=tf.float32, seed=1)
    b = tf.random.normal((n, n), dtype=tf.float32, seed=2)
    for _ in range(2):
        tf.linalg.matmul(a, b)[0, 0].numpy()
    rates, start = [], time.perf_counter()
    while len(rates) < min_repeats or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        tf.linalg.matmul(a, b)[0, 0].numpy()  # .numpy() waits for the result
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {"n": n, "repeats": len(rates), "gflops": round(max(rates), 1),
            "gflops_median": round(statistics.median(rates), 1),
            "threads": {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "cpu_count": os.cpu_count()}}


class StepTimer(keras.callbacks.Callback):
    """Records the wall-clock time at the end of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def trainer_pass(model, make_dataset, limit: int | None = None) -> list[float]:
    """Train ``model`` with the trainer's own compiled loop (``pipelines.train_steps``, as
    ``train`` runs it on one device) over ``make_dataset()``, or its first ``limit``
    steps; the wall-clock time at the end of every step."""
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    timer = StepTimer()
    run_epoch(Steps(model, strategy), make_dataset,
              keras.callbacks.CallbackList([timer], model=model), training=True,
              stop=lambda: limit is not None and len(timer.times) >= limit)
    return timer.times


def timed_loop(model, make_dataset, warmup: int, steps: int) -> float:
    """Train ``warmup + steps`` steps with the trainer's loop; seconds taken by the last
    ``steps``."""
    times = trainer_pass(model, make_dataset, warmup + steps)
    if len(times) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} training steps, got {len(times)}")
    return times[-1] - times[warmup - 1]


def timed_fit(model, x, warmup: int, steps: int, y=None, **fit_kwargs) -> float:
    """Train ``warmup + steps`` steps with ``model.fit``; seconds taken by the last ``steps``."""
    timer = StepTimer()
    model.fit(x, y, epochs=1, steps_per_epoch=warmup + steps if y is None else None,
              callbacks=[timer], verbose=0, **fit_kwargs)
    if len(timer.times) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} training steps, got {len(timer.times)}")
    return timer.times[-1] - timer.times[warmup - 1]


def throughput(tokens: int, padded: int, sentences: int, seconds: float, steps: int) -> dict:
    return {"steps": steps, "seconds": round(seconds, 3), "target_tokens": int(tokens),
            "padded_target_tokens": int(padded), "sentences": int(sentences),
            "target_tokens_per_second": round(tokens / seconds, 1),
            "padded_target_tokens_per_second": round(padded / seconds, 1),
            "sentences_per_second": round(sentences / seconds, 2),
            "padding_fraction": round(1 - tokens / max(padded, 1), 4)}


def batch_tokens(labels) -> tuple[int, int, int]:
    """Real (non-padding) tokens, all tokens and rows of a batch of labels."""
    labels = np.asarray(labels)
    return int((labels != PAD_ID).sum()), labels.size, labels.shape[0]
