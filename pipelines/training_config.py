"""The ``training:`` config section, free of TensorFlow (``pipelines.trainer`` uses it)."""

from __future__ import annotations

from dataclasses import dataclass

from data_prep.config_checks import ConfigError, at_least, choice, positive

# training.distribution: pipelines.distribute; training.mixed_precision: Keras dtype policies.
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
# training.lr_schedule: pipelines.epoch_policy.
LR_SCHEDULES = ("plateau", "constant", "cosine")


@dataclass
class TrainingConfig:
    """The ``training:`` fields shared by all pipelines; each pipeline's config adds its
    own (batch sizing, the loss) in a subclass."""

    epochs: int = 30  # upper bound on epochs
    max_minutes: float | None = None  # stop before an epoch that would exceed this budget
    learning_rate: float = 0.001
    # plateau: halve on a validation stall | constant | cosine: from learning_rate at the
    # first epoch down to min_learning_rate at the last (epochs), whatever validation says
    lr_schedule: str = "plateau"
    lr_decay_factor: float = 0.5
    lr_patience: int = 1  # validations without improvement before the LR decays
    min_learning_rate: float = 1e-5
    clip_norm: float = 1.0  # global gradient-norm clipping
    # Adam's epsilon: 1e-7 (Keras' default); a model with tiny gradients (~1e-7) may need
    # 1e-9 with clip_norm 5 (docs/benchmarks.md, "How fast the translator learns").
    adam_epsilon: float = 1e-7
    patience: int = 5  # early stopping: validations without improvement
    # Average the weights of the last N epochs when training stops; the average replaces
    # best.keras if it validates at least as well (0: off). pipelines/checkpoint_average.py
    average_last: int = 0
    seed: int = 1234
    # Batch sizes (the pipelines' own fields) are global (per step), split over the replicas.
    distribution: str = "none"  # none | mirrored (local GPUs) | multi_worker (TF_CONFIG)
    mixed_precision: str = "none"  # none | mixed_float16 (with loss scaling) | mixed_bfloat16
    cluster_timeout_seconds: float = 600.0  # multi_worker: wait this long for all workers

    def validate(self, where):
        choice(self.lr_schedule, LR_SCHEDULES, f"{where}.lr_schedule")
        choice(self.distribution, DISTRIBUTIONS, f"{where}.distribution")
        choice(self.mixed_precision, MIXED_PRECISION, f"{where}.mixed_precision")
        at_least(self, where, 1, "epochs", "patience", "lr_patience")
        at_least(self, where, 0, "min_learning_rate", "average_last")
        positive(self, where, "max_minutes", "learning_rate", "clip_norm", "adam_epsilon",
                 "cluster_timeout_seconds")
        if not 0.0 < self.lr_decay_factor <= 1.0:
            raise ConfigError(f"{where}.lr_decay_factor: must be in (0, 1], "
                              f"got {self.lr_decay_factor!r}")
