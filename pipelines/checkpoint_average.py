"""Checkpoint averaging: the element-wise mean of the weights of the last epochs, as
OpenNMT's ``average_models`` and fairseq's ``average_checkpoints`` make it.

With ``training.average_last: N`` the trainer keeps the weights of the last N epochs
(``checkpoints/epoch-007.weights.h5``, ...; weights only, a third of a ``.keras``
checkpoint with its optimizer state) and, when training stops, validates their average;
if it scores at least as well as the best single epoch, it becomes ``best.keras``, the
checkpoint every later stage uses.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from pipelines.config import ConfigError
from pipelines.run_dir import RunDir

PATTERN = "epoch-*.weights.h5"


def load_checkpoint(path: Path) -> keras.Model:
    """The model saved at ``path`` (a ``.keras`` file); ConfigError naming it if it is
    missing, truncated or damaged (Keras says "File not found" of any file that is not a
    complete archive)."""
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint missing; run train (--force to start over)")
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path}: truncated or damaged checkpoint (not a complete .keras "
                          "archive); run train --force to make it again")
    try:
        return keras.saving.load_model(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{path}: damaged checkpoint ({first_line}); run train --force "
                          "to make it again") from None


def epoch_weights_path(run: RunDir, epoch: int) -> Path:
    return run.path("checkpoints", f"epoch-{epoch:03d}.weights.h5")


def save_atomically(model: keras.Model, path: Path) -> None:
    """``model.save`` (a ``.keras`` path) or ``model.save_weights`` (``.weights.h5``) to a
    temporary file renamed over ``path``: readers never see a partial checkpoint."""
    # Keras insists on these suffixes, so the temporary name keeps the file's own.
    tmp = path.with_name(f".tmp-{path.name}")
    (model.save_weights if path.name.endswith(".weights.h5") else model.save)(tmp)
    os.replace(tmp, path)


def keep_epoch_weights(model: keras.Model, run: RunDir, epoch: int, keep: int) -> None:
    """Save ``model``'s weights as epoch ``epoch``'s and delete those of epochs before
    the last ``keep``."""
    path = epoch_weights_path(run, epoch)
    save_atomically(model, path)
    for old in sorted(path.parent.glob(PATTERN))[:-keep]:
        old.unlink()


def kept_epochs(run: RunDir) -> list[int]:
    return [int(p.name[len("epoch-"):-len(".weights.h5")])
            for p in sorted(run.path("checkpoints").glob(PATTERN))]


def restructure_epoch_weights(run: RunDir, source: keras.Model, target: keras.Model) -> None:
    """Rewrite the kept epoch weights of ``run``, saved from models built as ``source``,
    as ``target`` stores them: two structures with the same weights in the same order
    under other names (``legacy_rnn``, see ``models.rnn_cells``). Overwrites the weights
    of both models."""
    for epoch in kept_epochs(run):
        path = epoch_weights_path(run, epoch)
        source.load_weights(path)
        target.set_weights(source.get_weights())
        save_atomically(target, path)


def average_into(model: keras.Model, paths: list[Path]) -> None:
    """Set ``model``'s weights to the mean of the weight files ``paths`` (all of them
    saved from models of ``model``'s architecture)."""
    total = None
    for path in paths:
        model.load_weights(path)
        weights = [w.astype(np.float64) for w in model.get_weights()]
        total = weights if total is None else [t + w for t, w in zip(total, weights, strict=True)]
    model.set_weights([(t / len(paths)).astype(w.dtype)
                       for t, w in zip(total, model.get_weights(), strict=True)])


def average_and_validate(model: keras.Model, run: RunDir, last: int,
                         validate: Callable[[keras.Model], dict], metric_name: str) -> dict | None:
    """Average the kept weights of the last ``last`` epochs into ``model`` and validate
    it: ``{"epochs": [first, last], metric_name: value}``, or None if fewer than two
    epochs are kept."""
    epochs = kept_epochs(run)[-last:]
    if len(epochs) < 2:
        return None
    average_into(model, [epoch_weights_path(run, e) for e in epochs])
    return {"epochs": [epochs[0], epochs[-1]], metric_name: float(validate(model)[metric_name])}
