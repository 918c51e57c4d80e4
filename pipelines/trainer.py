"""The training loop shared by the translation and speech pipelines.

Training runs one epoch at a time (compiled steps under a ``tf.distribute`` strategy,
``pipelines.train_steps``) so that, between epochs, we can validate with a task metric
(BLEU, WER), keep the best checkpoint, adapt the learning rate, stop early or on a time
budget, and save everything needed to resume after an interrupt:
``checkpoints/last.keras`` (weights and optimizer state) plus ``train_state.json``.
Each epoch's shuffle seed is ``seed + epoch``, so a resumed run sees the same batches as
an uninterrupted one.

On several devices or machines (``training.distribution``, ``pipelines.distribute``)
every process runs this same loop; the chief validates and its scores, training state
and weights are shared with the other workers, which so take the same decisions and
write only to their temporary run directories.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from data_prep.file_io import atomic_write_json
from models.fused_adam import FusedAdam
from pipelines import checkpoint_average, distribute
from pipelines.checkpoints import (
    STATE_FILE,
    average_as_best,
    check_resumable,
    discard_checkpoints,
    load_state,
    restore,
    undo_average,
)
from pipelines.config import ConfigError
from pipelines.epoch_policy import (
    ValidationMetric,
    after_validation,
    scheduled_learning_rate,
    stop_reason,
)
from pipelines.run_dir import RunDir, fingerprint
from pipelines.train_steps import Steps, run_epoch
from pipelines.training_config import TrainingConfig

# Fields that only decide when to stop: changing them lets a run continue from its
# checkpoints instead of starting over.
STOPPING_FIELDS = ("epochs", "max_minutes", "patience", "average_last")
# Where training runs: one device and N replicas compute the same steps, so a run may be
# resumed on another set of devices.
PLACEMENT_FIELDS = ("distribution", "cluster_timeout_seconds")

# Runs trained before each pipeline had its own training section: their fingerprints
# counted both pipelines' fields, the other pipeline's at these defaults.
RETIRED_TRAINING_DEFAULTS = {"batch_tokens": 4000, "batch_size": 32, "label_smoothing": 0.1}


def resumable_config(config: TrainingConfig | dict) -> dict:
    """The training settings (a config or its fields) that checkpoints depend on: all
    but the stopping criteria and the placement. ``mixed_precision`` counts only when on,
    so the runs made before it existed keep their fingerprints."""
    fields = config if isinstance(config, dict) else dataclasses.asdict(config)
    skip = STOPPING_FIELDS + PLACEMENT_FIELDS
    if fields["mixed_precision"] == "none":
        skip += ("mixed_precision",)
    return {k: v for k, v in fields.items() if k not in skip}


def stage_fingerprints(made_of: tuple, training: dict) -> tuple[str, str]:
    """The fingerprints of a train stage's checkpoints and of the stage itself."""
    checkpoint_fp = fingerprint("train", *made_of, resumable_config(training))
    return checkpoint_fp, fingerprint(checkpoint_fp, training)


def start_stage(ctx, *made_of) -> str | None:
    """Begin the train stage of ``ctx`` (a ``cli.Context``) for a model ``made_of`` these
    parts and ``ctx.config.training``: returns the fingerprint its checkpoints are bound
    to, or None when the stage is up to date. Checkpoints depend on everything but the
    stopping criteria and the placement, so raising training.epochs continues a finished
    run instead of restarting it; other changes need --force, which discards them."""
    training = dataclasses.asdict(ctx.config.training)
    checkpoint_fp, fp = stage_fingerprints(made_of, training)
    state = load_state(ctx.run.path(STATE_FILE))
    retired = stage_fingerprints(made_of, {**RETIRED_TRAINING_DEFAULTS, **training})
    if state and state["fingerprint"] == retired[0]:
        checkpoint_fp, fp = retired  # a run of an earlier version, resumed or up to date
    if not ctx.force:
        check_resumable(ctx.run, checkpoint_fp)
    if not ctx.start(fp, ctx.run.path("checkpoints", "best.keras")):
        return None
    if ctx.force:
        discard_checkpoints(ctx.run)
    return checkpoint_fp


def made_from(config: TrainingConfig) -> dict:
    """The training settings a trained model is made from, for its run's records: all
    but the placement (a model trained on a cluster is used on one machine)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in PLACEMENT_FIELDS}


def make_optimizer(config: TrainingConfig) -> keras.optimizers.Optimizer:
    """Adam (TensorFlow's fused update) with global-norm gradient clipping, as configured."""
    return FusedAdam(config.learning_rate, epsilon=config.adam_epsilon,
                     global_clipnorm=config.clip_norm)


def build_and_compile(model: keras.Model, config: TrainingConfig, loss=None) -> keras.Model:
    """Build ``model`` and compile it with ``make_optimizer(config)`` and ``loss`` (under
    mixed_float16, Keras wraps the optimizer in a LossScaleOptimizer)."""
    model.build()
    model.compile(
        optimizer=make_optimizer(config),
        loss=loss,
        # Bucketed batches have many shapes; XLA would recompile for each of them.
        jit_compile=False,
    )
    return model


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where, and what is kept."""


# Without a terminal (no progress bar), a line every this many training steps.
LOG_EVERY_STEPS = 200


class _Progress(keras.callbacks.ProgbarLogger):
    """Keras' progress output, with the run's epoch count: each epoch is a training run
    of its own, so Keras alone would print "Epoch 3/3". Without a terminal (``verbose=2``: one
    line per epoch), also a line every ``LOG_EVERY_STEPS`` steps. ``seen``: the steps done
    in the current epoch."""

    def __init__(self, epochs: int, log: Callable[[str], None]):
        super().__init__()
        self.total_epochs, self.log, self.epoch = epochs, log, 0

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.verbose == 2 and self.seen % LOG_EVERY_STEPS == 0:
            self.log(f"[train] epoch {self.epoch + 1} step {self.seen}: " + ", ".join(
                f"{k}={float(v):.4g}" for k, v in (logs or {}).items()))


class _StopOnCtrlC:
    """Ctrl-C during an epoch ends it after the current step instead of raising inside
    it: a KeyboardInterrupt unwinding through TensorFlow while its input threads still
    run crashed the process now and then ("free(): invalid next size"). A second Ctrl-C
    raises at once."""

    def __init__(self):
        self.requested = False

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def watching(self):
        """Ctrl-C sets ``requested`` inside; KeyboardInterrupt on leaving if it did."""
        self.requested = False
        previous = signal.signal(signal.SIGINT, self._handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        if self.requested:
            raise KeyboardInterrupt


def _interruptible(doing: Callable[[], str], epoch: int, call, *args, **kwargs):
    """``call(*args, **kwargs)``, turning Ctrl-C into a TrainingInterrupted saying what was
    interrupted (``doing()``, evaluated then) and what the next run resumes from."""
    try:
        return call(*args, **kwargs)
    except KeyboardInterrupt:
        kept = (f"the last checkpoint is epoch {epoch}; rerun the same command to resume"
                if epoch else "no epoch had finished; rerun the same command to start again")
        raise TrainingInterrupted(f"interrupted {doing()} of epoch {epoch + 1}; {kept}") from None


def train(
    run: RunDir,
    build_model: Callable[[], keras.Model],
    train_dataset: Callable[[int], tf.data.Dataset],
    val_dataset: tf.data.Dataset | None,
    validate: Callable[[keras.Model], dict],
    metric: ValidationMetric,
    config: TrainingConfig,
    fingerprint: str,
    log: Callable[[str], None] = print,
) -> dict:
    """Train (or resume training) and return the final training state.

    Args:
        run: the run directory; checkpoints, logs and the history go under it (on a
            worker other than the chief: a temporary directory).
        build_model: returns a new compiled model (a resumed run loads its checkpoint into it);
            called under the strategy's scope and ``config.mixed_precision``.
        train_dataset: epoch -> global training batches for that epoch (the same on
            every worker of a cluster).
        val_dataset: global batches for the validation loss, or None.
        validate: model -> dict of validation metrics, including ``metric.name``; only
            the chief calls it.
        metric: the metric that selects the best checkpoint and triggers early stopping.
        config: the training section of the experiment config.
        fingerprint: identifies the data, model and ``resumable_config(config)``;
            resuming a run with a different fingerprint is refused so no work is silently
            mixed or lost.
    """
    strategy, role = distribute.current(config.distribution)
    last_path = run.path("checkpoints", "last.keras")
    best_path = run.path("checkpoints", "best.keras")
    state_path = run.path(STATE_FILE)
    check_resumable(run, fingerprint)
    state = load_state(state_path)
    if distribute.broadcast_json(strategy, role, fingerprint) != fingerprint:
        raise ConfigError(f"{role.description}: the chief prepared other data or has "
                          "another model/training config; run the same command and config "
                          "on every worker")
    last_path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    # Every worker creates the same variables in the same order (in a cluster each
    # creation is a collective), resuming or not; then the chief loads its checkpoint.
    with strategy.scope():
        with _dtype_policy(config.mixed_precision):
            model = build_model()
        # The optimizer's variables must be made under the strategy (keras#19246).
        model.optimizer.build(model.trainable_variables)
    if state and last_path.is_file():
        log(f"[train] resuming after epoch {state['epoch']} from {last_path}")
        restore(model, last_path, run)
    else:
            state = {"fingerprint": fingerprint, "epoch": 0, "best": None, "best_epoch": None,
                 "bad_epochs": 0, "lr_bad_epochs": 0, "train_seconds": 0.0,
                 "stop_reason": None, "history": []}
    # In a cluster the chief's state and weights (a resumed run's) are everyone's.
    state = distribute.broadcast_json(strategy, role, state)
    distribute.broadcast_variables(strategy, role, model.variables + model.optimizer.variables)
    steps = Steps(model, strategy)
    progress, ctrl_c = _Progress(config.epochs, log), _StopOnCtrlC()
    verbose = 1 if sys.stdout.isatty() else 2
    tensorboard = keras.callbacks.TensorBoard(log_dir=str(run.path("logs", "tensorboard")))

    def callbacks():
        # A new list per epoch, as per model.fit call: it hands the callbacks the model,
        # which reopens the TensorBoard writers the last epoch's end closed.
        return keras.callbacks.CallbackList([tensorboard, progress], model=model,
                                            verbose=verbose, epochs=config.epochs, steps=None)
    writer = tf.summary.create_file_writer(str(run.path("logs", "tensorboard", "metrics")))
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    try:
        while True:
            epoch = state["epoch"]
            stop = stop_reason(state, config, budget)
            if stop:
                break
            undo_average(run, state, role.is_chief)
            if (scheduled := scheduled_learning_rate(config, epoch)) is not None:
                model.optimizer.learning_rate.assign(scheduled)
            start = time.time()
            _seed_random_layers(model, config.seed, epoch)
            logs = _interruptible(lambda: f"after step {progress.seen}", epoch, _fit_epoch,
                                  steps, callbacks(), ctrl_c, epoch, train_dataset, val_dataset)
            if not all(math.isfinite(v) for v in logs.values()):
                raise NonFiniteLossError(
                    f"epoch {epoch + 1}: non-finite training values {logs}; the last good "
                    f"checkpoint is {last_path}. Lower training.learning_rate or check the "
                    "data."
                )
            scores = (_interruptible(lambda: "during the validation", epoch, validate, model)
                      if role.is_chief else None)
            scores = distribute.broadcast_json(strategy, role, scores)
            seconds = time.time() - start  # the budget counts validation too
            value = float(scores[metric.name])
            lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
            entry = {"epoch": epoch + 1, **logs, **scores, "learning_rate": lr,
                     "epoch_seconds": round(seconds, 1)}
            with writer.as_default():
                for k, v in scores.items():
                    tf.summary.scalar(k, v, step=epoch + 1)
                tf.summary.scalar("learning_rate", lr, step=epoch + 1)
            state["history"].append(entry)
            state["train_seconds"] += seconds
            state["epoch"] = epoch + 1
            improved, new_lr = after_validation(state, value, lr, metric, config)
            if improved:
                checkpoint_average.save_atomically(model, best_path)
            if new_lr is not None:
                model.optimizer.learning_rate.assign(new_lr)
                log(f"[train] {metric.name} stalled: learning rate {lr:.2e} -> {new_lr:.2e}")
            log(f"[train] epoch {epoch + 1}: " + ", ".join(
                f"{k}={v:.4g}" for k, v in entry.items() if k != "epoch"))
            # The checkpoint first, then the state that points at it: an interrupt between
            # the two only repeats one epoch.
            checkpoint_average.save_atomically(model, last_path)
            if config.average_last > 1 and role.is_chief:
                checkpoint_average.keep_epoch_weights(model, run, epoch + 1, config.average_last)
            atomic_write_json(state_path, state)
            atomic_write_json(run.path("logs", "history.json"), state["history"])
    except distribute.PEER_ERRORS as e:
        if role.count == 1:
            raise
        kept = (f"the chief's last checkpoint is epoch {state['epoch']}" if state["epoch"]
                else "no epoch had finished")
        first_line = (e.message or type(e).__name__).strip().splitlines()[0]
        raise distribute.ClusterError(
            f"{role.description}: lost contact with the cluster during epoch "
            f"{state['epoch'] + 1} ({type(e).__name__}: {first_line}); {kept}; rerun the "
            "same command on every worker to resume") from None

    state["stop_reason"] = stop
    atomic_write_json(state_path, state)
    if role.count > 1:
        log(f"[cluster] {role.description}: weights checksum "
            f"{distribute.weights_checksum(model.variables)} (the same on every worker)")
    if config.average_last > 1 and role.is_chief:
        average_as_best(model, run, config.average_last, validate, metric, state, log)
        atomic_write_json(state_path, state)
    log(f"[train] stopped ({stop}) after {state['epoch']} epochs, "
        f"{state['train_seconds'] / 60:.1f} min; best {metric.name} {state['best']} "
        f"at epoch {state['best_epoch']}")
    return state


def _fit_epoch(steps: Steps, callbacks, ctrl_c: _StopOnCtrlC, epoch: int, train_dataset,
               val_dataset) -> dict:
    """Train one epoch and compute the validation loss, calling the callbacks as
    ``model.fit(initial_epoch=epoch, epochs=epoch + 1)`` does; Ctrl-C stops after the
    current step. Returns ``{"loss", "val_loss"}`` (without a validation set: ``loss``)."""
    with ctrl_c.watching():
        callbacks.on_train_begin()
        callbacks.on_epoch_begin(epoch)
        logs = run_epoch(steps, lambda: train_dataset(epoch), callbacks, training=True,
                         stop=lambda: ctrl_c.requested)
        if val_dataset is not None and not ctrl_c.requested:
            callbacks.on_test_begin()
            val_logs = run_epoch(steps, lambda: val_dataset, callbacks, training=False,
                                 stop=lambda: ctrl_c.requested)
            callbacks.on_test_end(val_logs)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        if not ctrl_c.requested:
            callbacks.on_epoch_end(epoch, logs)
        callbacks.on_train_end(logs)
    return logs


@contextlib.contextmanager
def _dtype_policy(name: str):
    """Layers made inside use the Keras dtype policy ``name`` (``none``: float32)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if name == "none" else name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _seed_random_layers(model: keras.Model, seed: int, epoch: int) -> None:
    """Set the state of every random layer (dropout) from (seed, epoch, layer position).

    A ``.keras`` checkpoint does not keep the seed generators' states, so without this a
    resumed run would draw other dropout masks than an uninterrupted one.
    """
    states = [v for v in model.variables if v.name == "seed_generator_state"]
    for position, state in enumerate(states):
        value = np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint32)[0]
        state.assign(np.array([value, 0], dtype=state.dtype))


