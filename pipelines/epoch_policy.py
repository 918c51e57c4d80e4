"""When training changes course: the best score so far, the learning rate halved on a
plateau or set by the epoch's place in a cosine schedule, early stopping and the time
budget, read from and written to the training state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.training_config import TrainingConfig


@dataclass
class ValidationMetric:
    """The metric that selects checkpoints: its name, and whether higher is better."""

    name: str
    higher_is_better: bool
    # The score of a model that has learned nothing yet (a validation WER of 1.0: a CTC
    # model's first epochs emit only blanks). Epochs at it are not stalls: the plateau
    # schedule and early stopping wait until learning has begun.
    nothing_learned: float | None = None

    def improved(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


def after_validation(state: dict, value: float, lr: float, metric: ValidationMetric,
                     config: TrainingConfig) -> tuple[bool, float | None]:
    """Record an epoch's validation ``value`` in ``state`` (best score, epochs without
    improvement): whether it is the best so far, and the learning rate to continue with
    when the plateau schedule lowers it (else None)."""
    if metric.improved(value, state["best"]):
        state.update(best=value, best_epoch=state["epoch"], bad_epochs=0, lr_bad_epochs=0)
        return True, None
    if value == metric.nothing_learned:
        return False, None
    state["bad_epochs"] += 1
    state["lr_bad_epochs"] += 1
    if (config.lr_schedule == "plateau" and state["lr_bad_epochs"] >= config.lr_patience
            and lr > config.min_learning_rate):
        state["lr_bad_epochs"] = 0
        return False, max(lr * config.lr_decay_factor, config.min_learning_rate)
    return False, None


def scheduled_learning_rate(config: TrainingConfig, epoch: int) -> float | None:
    """The learning rate of (0-based) ``epoch`` under a schedule fixed in advance (cosine),
    else None. Set per epoch, not per step, so that it is a function of the epoch alone:
    a resumed run continues on the same curve."""
    if config.lr_schedule != "cosine":
        return None
    done = epoch / max(config.epochs - 1, 1)
    low, high = config.min_learning_rate, config.learning_rate
    return low + 0.5 * (high - low) * (1.0 + math.cos(math.pi * min(done, 1.0)))


def stop_reason(state, config: TrainingConfig, budget: float | None) -> str | None:
    if state["epoch"] >= config.epochs:
        return f"reached training.epochs={config.epochs}"
    if state["bad_epochs"] >= config.patience:
        return f"no improvement for {config.patience} validations (early stopping)"
    if budget is not None and state["history"]:
        # Stop before an epoch that would run past the budget, judged by the last one.
        last = state["history"][-1]["epoch_seconds"]
        if state["train_seconds"] + last > budget:
            return f"time budget training.max_minutes={config.max_minutes} reached"
    return None
