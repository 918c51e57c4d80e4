import keras
import numpy as np
import pytest
import tensorflow as tf

from models.fused_adam import FusedAdam
from tests.helpers import assert_keras_round_trip


def _model():
    # An embedding (IndexedSlices gradients) and dense layers (dense gradients).
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), dtype="int32")
    x = keras.layers.Embedding(30, 8)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(16, activation="tanh")(x))
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _train(optimizer, densify, steps=6):
    """``steps`` steps on batches of 4 rows whose token ids repeat, as a sentence's do;
    ``densify`` converts the embedding's IndexedSlices gradient to a dense tensor."""
    model = _model()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer, loss)  # so that a saved model keeps the optimizer's state
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x, y = rng.integers(0, 12, size=(4, 5)), rng.integers(0, 3, size=(4,))
        with tf.GradientTape() as tape:
            value = loss(y, model(x))
        grads = tape.gradient(value, model.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        if densify:
            grads = [tf.convert_to_tensor(g) for g in grads]
        optimizer.apply(grads, model.trainable_variables)
    return model


@pytest.mark.parametrize("kwargs", [{}, {"epsilon": 1e-9, "global_clipnorm": 0.05}])
def test_fused_adam_is_keras_adam_on_the_summed_gradient(kwargs):
    # On a dense gradient Keras' Adam is Adam. On an embedding's IndexedSlices with
    # repeated ids it squares each slice rather than their sum, so it is compared on the
    # densified gradient; FusedAdam must give Adam either way.
    expected = _train(keras.optimizers.Adam(0.01, **kwargs), densify=True)
    fused = _train(FusedAdam(0.01, **kwargs), densify=False)
    for a, b in zip(expected.get_weights(), fused.get_weights(), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)  # float rounding
    for a, b in zip(expected.optimizer.variables, fused.optimizer.variables, strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    assert not np.allclose(fused.get_weights()[0], _model().get_weights()[0])


def test_fused_adam_amsgrad_is_keras_adam():
    expected = _train(keras.optimizers.Adam(0.01, amsgrad=True), densify=True)
    fused = _train(FusedAdam(0.01, amsgrad=True), densify=True)
    for a, b in zip(expected.get_weights(), fused.get_weights(), strict=True):
        np.testing.assert_array_equal(b, a)


def test_fused_adam_round_trips_with_its_state(tmp_path):
    model = _train(FusedAdam(0.01, global_clipnorm=1.0), densify=False)
    loaded = assert_keras_round_trip(model, lambda m: m(np.ones((2, 5), "int32")), tmp_path)
    assert type(loaded.optimizer) is FusedAdam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_a_keras_adam_checkpoint_resumes_with_fused_adam(tmp_path):
    # Runs trained before the trainer used FusedAdam keep resuming.
    from pipelines.checkpoints import restore

    old = _train(keras.optimizers.Adam(0.01), densify=True)
    old.save(tmp_path / "last.keras")
    new = _model()
    new.compile(FusedAdam(0.01), "mse")
    new.optimizer.build(new.trainable_variables)
    restore(new, tmp_path / "last.keras", run=None)  # run: only for legacy_rnn models
    for a, b in zip(old.optimizer.variables, new.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    for a, b in zip(old.get_weights(), new.get_weights(), strict=True):
        np.testing.assert_array_equal(b, a)
