"""A synthetic long-range memory task for comparing SimpleRNN, LSTM and GRU cells.

Delayed recall: one of ``symbols`` symbols appears (one-hot) at some step, every step
carries Gaussian noise on separate channels, and the last step raises a query flag; the
model must name the symbol. The delay is the number of steps between the symbol and the
query. The symbol's position is random, so the model cannot count steps: it has to
store the symbol when it appears and keep it, unchanged by the noise, until the query.

Used by ``notebooks/recurrent_memory.ipynb``: one model per cell type is trained on
sequences of ``max_delay + 2`` steps with delays drawn uniformly, then tested at fixed
delays; ``state_gradient_norms`` measures how much of the loss's gradient reaches the
recurrent state at each earlier step (vanishing gradients).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from models.rnn_cells import make_cell


@dataclass
class RecallTask:
    """Shape and difficulty of the delayed-recall sequences.

    Channels: ``symbols`` one-hot symbol channels, ``noise_channels`` Gaussian noise
    channels (standard deviation ``noise_std``) and one query flag.
    """

    symbols: int = 4
    noise_channels: int = 4
    noise_std: float = 1.0
    max_delay: int = 64

    @property
    def num_inputs(self) -> int:
        return self.symbols + self.noise_channels + 1

    @property
    def length(self) -> int:
        """Steps per sequence: the longest delay, the symbol's own step and the query."""
        return self.max_delay + 2

    def batch(self, rng: np.random.Generator, size: int, delays=None):
        """``(inputs [size, length, num_inputs], labels [size], delays [size])``.

        ``delays``: an int or an array of per-sequence delays in ``[1, max_delay]``;
        None draws them uniformly.
        """
        steps, s = self.length, self.symbols
        if delays is None:
            delays = rng.integers(1, self.max_delay + 1, size=size)
        delays = np.broadcast_to(np.asarray(delays), (size,))
        if delays.min() < 1 or delays.max() > self.max_delay:
            raise ValueError(f"delays must be in [1, {self.max_delay}]")
        x = np.zeros((size, steps, self.num_inputs), np.float32)
        x[:, :-1, s:s + self.noise_channels] = rng.normal(
            0.0, self.noise_std, (size, steps - 1, self.noise_channels))
        labels = rng.integers(s, size=size)
        rows = np.arange(size)
        # The query is the last step, so a delay of d puts the symbol d steps before it.
        positions = steps - 1 - delays
        x[rows, positions, s:s + self.noise_channels] = 0.0
        x[rows, positions, labels] = 1.0
        x[:, -1, -1] = 1.0
        return x, labels, delays


def build_model(cell: str, units: int, task: RecallTask) -> keras.Model:
    """One recurrent layer of the toolkit's ``cell`` type, then a linear classifier."""
    inputs = keras.Input((None, task.num_inputs))
    state = keras.layers.RNN(make_cell(cell, units, f"{cell}_cell"))(inputs)
    return keras.Model(inputs, keras.layers.Dense(task.symbols)(state), name=f"recall_{cell}")


def train(model: keras.Model, task: RecallTask, steps: int, batch_size: int = 64,
          learning_rate: float = 3e-3, seed: int = 0, chunk: int = 100) -> list[dict]:
    """Adam with gradient clipping on fresh random batches; the loss every ``chunk`` steps.

    Returns ``[{"step", "loss", "seconds"}, ...]`` (mean training loss of each chunk).
    """
    model.compile(keras.optimizers.Adam(learning_rate, global_clipnorm=1.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    rng = np.random.default_rng(seed)
    history, done, start = [], 0, time.perf_counter()
    while done < steps:
        n = min(chunk, steps - done)
        # Data is generated chunk by chunk: all steps at once would not fit in memory
        # for long delays.
        x, y, _ = task.batch(rng, n * batch_size)
        result = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        done += n
        history.append({"step": done, "loss": float(result.history["loss"][-1]),
                        "seconds": time.perf_counter() - start})
    return history


def accuracy_by_delay(model: keras.Model, task: RecallTask, delays, size: int = 512,
                      seed: int = 1) -> np.ndarray:
    """Test accuracy at each fixed delay (fresh sequences; chance is ``1 / symbols``)."""
    rng = np.random.default_rng(seed)
    accuracies = []
    for delay in delays:
        x, y, _ = task.batch(rng, size, delay)
        predicted = np.argmax(model.predict(x, batch_size=size, verbose=0), axis=-1)
        accuracies.append(float(np.mean(predicted == y)))
    return np.array(accuracies)


def state_gradient_norms(model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How much of the loss's gradient reaches the recurrent state at every step.

    The model built by ``build_model`` is unrolled step by step with its own cell, so
    the state after every step is a tensor the gradient can be taken for. Returns
    ``||dL/ds_t|| / ||dL/ds_last||`` for every step ``t`` (mean over the batch, ``s``
    the whole state: ``h``, plus ``c`` for an LSTM), so the last step is 1 and a
    value of 1e-6 twenty steps back means a millionth of the error signal arrives there:
    too little to learn what the input at that step should have changed.
    """
    rnn = next(layer for layer in model.layers if isinstance(layer, keras.layers.RNN))
    head = model.layers[-1]
    x = tf.convert_to_tensor(x, tf.float32)
    states = rnn.cell.get_initial_state(int(x.shape[0]))
    trajectory = []
    with tf.GradientTape() as tape:
        for t in range(int(x.shape[1])):
            output, states = rnn.cell(x[:, t], states, training=False)
            trajectory.append(states)
        loss = keras.losses.sparse_categorical_crossentropy(y, head(output), from_logits=True)
        loss = tf.reduce_mean(loss)
    grads = tape.gradient(loss, trajectory)
    norms = np.array([
        tf.reduce_mean(tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g), axis=-1) for g in step])))
        for step in grads
    ])
    return norms / norms[-1]
