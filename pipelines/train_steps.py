"""The compiled training and evaluation steps of the trainer, for any ``tf.distribute``
strategy (the default one-device strategy included).

One loop serves every strategy because ``model.fit`` cannot: with
``MultiWorkerMirroredStrategy`` it fails in Keras 3 (keras-team/keras#20585), and under
any strategy Keras clips each replica's gradients before summing them over replicas, so
``global_clipnorm`` would see a replica's share of the gradient. Here each replica sums
the gradients over all replicas itself, and the optimizer clips and applies the global
gradient.

Loss: a model may compute the loss of a batch itself as a sum over its units (real
target tokens, utterances) and their count, ``model.loss_sum_and_count(x, y, training)``
-> ``(sum, count)``; any other model's compiled loss is taken as a mean over the batch
rows. Each replica weights the mean loss
(and gradient) of its share of the global batch by its share of the global batch's units,
so the replicas' gradients add up to the gradient one device computes for the whole
batch, the loss averaged over its real tokens or utterances.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf
from keras import ops

from pipelines import distribute

SUM = tf.distribute.ReduceOp.SUM


def _rows(x):
    return tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)


class Steps:
    """``train_step`` and ``test_step`` of ``model`` under ``strategy``: each takes a
    distributed iterator and returns the global batch's loss and number of rows.

    Args:
        model: a compiled model whose optimizer is built (in ``strategy.scope()``).
        strategy: the strategy the model's variables were created under.
    """

    def __init__(self, model: keras.Model, strategy: tf.distribute.Strategy):
        self.model, self.strategy = model, strategy
        self.replicas = strategy.num_replicas_in_sync
        optimizer = model.optimizer
        # The replica step sums the gradients over replicas; the optimizer (Keras' TF
        # backend would sum them again in _backend_update_step) must apply them as given.
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        inner._all_reduce_sum_gradients = lambda grads_and_vars: grads_and_vars
        # reduce_retracing: batches of many shapes share one trace, as in model.fit.
        self.train_step = tf.function(self._train_step, reduce_retracing=True)
        self.test_step = tf.function(self._test_step, reduce_retracing=True)

    def _all_replicas(self, values):
        """Sum of ``values`` (a tensor or a list, None kept) over all replicas."""
        if self.replicas == 1:
            return values
        context = tf.distribute.get_replica_context()
        if not isinstance(values, list):
            return context.all_reduce(SUM, values)
        present = [v for v in values if v is not None]
        reduced = iter(context.all_reduce(SUM, present))
        return [None if v is None else next(reduced) for v in values]

    def _local_loss(self, x, y, training):
        """``(mean, count)``: the loss of this replica's share of the batch, averaged over
        its units (real tokens, utterances, rows), and their number."""
        model = self.model
        if hasattr(model, "loss_sum_and_count"):
            total, count = model.loss_sum_and_count(x, y, training=training)
        else:
            # A mean over rows (layer losses included), which Keras divides by the
            # number of replicas under a strategy.
            y_pred = model(x, training=training)
            return model.compute_loss(x, y, y_pred, training=training) * self.replicas, _rows(x)
        mean = total / tf.maximum(tf.cast(count, tf.float32), 1.0)
        if model.losses:  # layer losses (regularizers): once per batch
            mean += ops.sum(model.losses)
        return mean, tf.cast(count, tf.float32)

    def _weight(self, count, rows):
        """This replica's share of the global batch's units (0 for a stand-in row, see
        ``distribute.replica_slice``): its mean loss and gradient times this add up, over
        replicas, to the global batch's."""
        count = tf.where(rows > 0, count, 0.0)
        return count / tf.maximum(self._all_replicas(count), 1.0)

    def _replica_train(self, x, y, rows=None):
        model, variables = self.model, self.model.trainable_variables
        with tf.GradientTape() as tape:
            mean, count = self._local_loss(x, y, training=True)
            if self.replicas > 1:
                # Weighted before the backward pass, so each replica's gradients are as
                # small as one device's for the whole batch: a float16 backward pass
                # (mixed_float16, loss scaled) overflows no sooner than on one device.
                mean = mean * tf.stop_gradient(self._weight(count, rows))
            scaled = model.optimizer.scale_loss(mean)  # loss scaling (mixed_float16)
        grads = tape.gradient(scaled, variables)
        if self.replicas > 1:
            grads = self._all_replicas(grads)
        model.optimizer.apply(grads, variables)
        return mean, _rows(x) if rows is None else tf.cast(rows, tf.float32)

    def _replica_test(self, x, y, rows=None):
        mean, count = self._local_loss(x, y, training=False)
        if self.replicas > 1:
            mean = mean * self._weight(count, rows)
        return mean, _rows(x) if rows is None else tf.cast(rows, tf.float32)

    def _run(self, replica_fn, iterator):
        loss, rows = self.strategy.run(replica_fn, args=next(iterator))
        return (self.strategy.reduce(SUM, loss, axis=None),
                self.strategy.reduce(SUM, rows, axis=None))

    def _train_step(self, iterator):
        return self._run(self._replica_train, iterator)

    def _test_step(self, iterator):
        return self._run(self._replica_test, iterator)


def run_epoch(steps: Steps, make_dataset: Callable[[], tf.data.Dataset], callbacks,
              training: bool, stop: Callable[[], bool]) -> dict:
    """One pass over ``make_dataset()``'s global batches: training steps (``training``)
    or evaluation steps, with the callbacks' batch hooks. Returns ``{"loss": ...}``, the
    loss averaged over batches weighted by their rows (as ``model.fit`` reports it),
    or ``{}`` if there was no batch. ``stop()`` is asked after every step."""
    step_fn = steps.train_step if training else steps.test_step
    begin = callbacks.on_train_batch_begin if training else callbacks.on_test_batch_begin
    end = callbacks.on_train_batch_end if training else callbacks.on_test_batch_end
    iterator = iter(distribute.distributed_batches(steps.strategy, make_dataset))
    total = rows = 0.0
    step = 0
    while True:
        begin(step)
        try:
            loss, n = step_fn(iterator)
        except (StopIteration, tf.errors.OutOfRangeError):
            break
        loss, n = float(loss), float(n)
        total, rows = total + loss * n, rows + n
        end(step, {"loss": total / rows if rows else math.nan})
        step += 1
        if stop():
            break
    return {"loss": total / rows} if rows else {}
