"""What training keeps in a run directory, and how: the checkpoints (``last.keras`` every
epoch, ``best.keras`` for the best validation score, the average of the last epochs when
it validates as well) and the training state that points at them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import keras

from pipelines import checkpoint_average
from pipelines.config import ConfigError
from pipelines.run_dir import RunDir

STATE_FILE = "train_state.json"  # in the run directory, beside checkpoints/
BEST_EPOCH_FILE = "best_epoch.keras"  # the best epoch, when best.keras is an average


# What the trainer writes in ``checkpoints/`` (``.tmp-*``: a save an interrupt cut short).
CHECKPOINT_FILES = ("last.keras", "best.keras", BEST_EPOCH_FILE, checkpoint_average.PATTERN,
                    ".tmp-*")


def discard_checkpoints(run: RunDir) -> None:
    """Remove the checkpoints, training state and logs ``train`` writes (``--force``):
    the next training starts from scratch. Only those files: anything else a user put in
    ``checkpoints/`` stays."""
    folder = run.path("checkpoints")
    files = [p for pattern in CHECKPOINT_FILES for p in folder.glob(pattern)]
    for path in files:
        path.unlink()
    if files:
        print(f"[train] --force: removed {len(files)} checkpoint files from {folder}, the "
              "training state and the training logs")
    with contextlib.suppress(OSError):  # not empty: the user's files are in it
        folder.rmdir()
    shutil.rmtree(run.path("logs", "tensorboard"), ignore_errors=True)
    run.path("logs", "history.json").unlink(missing_ok=True)
    run.path(STATE_FILE).unlink(missing_ok=True)


def check_resumable(run: RunDir, fingerprint: str) -> None:
    """ConfigError if ``run`` holds the training state of another ``fingerprint`` (see
    ``train``); a stage calls it before changing the run."""
    state = load_state(run.path(STATE_FILE))
    if state and state["fingerprint"] != fingerprint:
        raise ConfigError(
            f"{run.root}: holds checkpoints of a different data/model/training config; "
            "use --force to discard them and train from scratch, or another --run-dir"
        )


def load_state(path) -> dict | None:
    """The training state in ``path`` (``STATE_FILE``), or None before the first epoch."""
    return json.loads(path.read_text()) if path.is_file() else None


def restore(model: keras.Model, path, run: RunDir) -> None:
    """Set ``model``'s weights and optimizer state to the checkpoint at ``path`` (a model
    of the same architecture, variables in the same order). The checkpoint is loaded
    outside any strategy's scope: loading creates variables, and under
    ``MultiWorkerMirroredStrategy`` creating a variable is a collective that only this
    worker (the chief) would join."""
    saved = checkpoint_average.load_checkpoint(path)
    targets, sources = all_variables(model), all_variables(saved)
    if len(targets) != len(sources):
        raise ConfigError(f"{path}: holds {len(sources)} variables, the model has "
                          f"{len(targets)}; use --force to train from scratch")
    if getattr(saved, "legacy_rnn", False) != getattr(model, "legacy_rnn", False):
        # A run begun with RNN-over-cell layers continues with Keras' GRU/LSTM layers; the
        # epoch weights it kept for averaging are stored under the old names.
        checkpoint_average.restructure_epoch_weights(run, saved, model)
        sources = all_variables(keras.saving.load_model(path))  # restructuring overwrote them
    for target, source in zip(targets, sources, strict=True):
        target.assign(source.value)


def all_variables(model: keras.Model) -> list:
    return model.variables + model.optimizer.variables


def average_as_best(model, run: RunDir, epochs: int, validate, metric, state: dict,
                    log) -> None:
    """Average the last epochs' weights into ``model`` (the training is over), validate
    it and make it ``best.keras`` if it is at least as good as the best epoch."""
    averaged = checkpoint_average.average_and_validate(model, run, epochs,
                                                       validate, metric.name)
    if averaged is None:
        return
    value, best = averaged[metric.name], state["best"]
    averaged["used"] = not metric.improved(best, value)  # ties go to the average
    first, last = averaged["epochs"]
    log(f"[train] average of epochs {first}-{last}: {metric.name} {value} (best epoch "
        f"{state['best_epoch']}: {best}); best.keras is "
        + ("the average" if averaged["used"] else f"epoch {state['best_epoch']}"))
    if averaged["used"]:
        # The best epoch's checkpoint is kept aside: training may be resumed for more
        # epochs, and then the average is made again.
        best_path = run.path("checkpoints", "best.keras")
        os.replace(best_path, run.path("checkpoints", BEST_EPOCH_FILE))
        checkpoint_average.save_atomically(model, best_path)
    state["averaged"] = averaged


def undo_average(run: RunDir, state: dict, is_chief: bool) -> None:
    """Before more epochs: best.keras is the best epoch again, not a past average."""
    if state.pop("averaged", {}).get("used") and is_chief:
        os.replace(run.path("checkpoints", BEST_EPOCH_FILE), run.path("checkpoints", "best.keras"))
