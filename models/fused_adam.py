"""Adam whose update is TensorFlow's fused kernel."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable (inside
    ``tf.distribute``'s update calls, the handle of this device's copy)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="rnn_toolkit")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with each variable's update done by TensorFlow's fused
    ``ResourceApplyAdam`` kernel: the same arithmetic, in one pass over the variable
    and its two moments instead of about a dozen element-wise ops, each a pass over
    memory (Keras 3 writes the update in backend-neutral ops; ``tf.keras`` 2 used this
    kernel). Its variables are Adam's, in the same order, so checkpoints trained with
    either resume with the other.
    ``amsgrad=True`` falls back to Keras' update, which the kernel does not do.

    An embedding's gradient (``tf.IndexedSlices``, one slice per token of the batch) is
    summed into a dense tensor first. Keras' own Adam squares each slice before adding
    them up, in ``global_clipnorm``'s norm and (unless clipping densified the gradient)
    in the second moment, so on tokens that occur more than once in a batch it is not
    quite Adam (tested).

    Args: those of ``keras.optimizers.Adam``.
    """

    def apply(self, grads, trainable_variables=None):
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                 for g in grads]
        return super().apply(grads, trainable_variables)

    def _clip_gradients(self, grads):
        if not self.global_clipnorm:
            return super()._clip_gradients(grads)
        # The same clipping as Keras' (NaN gradients when the norm is not finite), but
        # tf.clip_by_global_norm reduces each gradient in one pass (l2_loss); Keras squares
        # it into a new tensor first. 1.5% of a translator training step.
        return tf.clip_by_global_norm(grads, self.global_clipnorm)[0]

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = ops.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable), m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=ops.power(beta_1, step), beta2_power=ops.power(beta_2, step),
            lr=ops.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
            epsilon=ops.cast(self.epsilon, dtype), grad=ops.cast(gradient, dtype))
