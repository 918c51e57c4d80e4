import dataclasses
import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import trainer
from pipelines.config import ConfigError
from pipelines.epoch_policy import after_validation
from pipelines.run_dir import RunDir
from pipelines.trainer import NonFiniteLossError, TrainingConfig, ValidationMetric, train
from pipelines.translation.config import TranslationTrainingConfig

# Every test here trains a (tiny) model.
pytestmark = pytest.mark.slow

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 4)).astype("float32")
Y = (X @ np.array([1.0, -2.0, 0.5, 3.0], "float32"))[:, None]


def build():
    # Dropout: a resumed run must also draw the same dropout masks as an uninterrupted one.
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dropout(0.3), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def dataset(epoch, x=X):
    return tf.data.Dataset.from_tensor_slices((x, Y)).shuffle(64, seed=epoch).batch(16)


def val_mse(model):
    return {"val_mse": float(np.mean((model.predict(X, verbose=0) - Y) ** 2))}


def run_train(root, epochs, validate=val_mse, fp="fp", x=X, higher_is_better=False, **kw):
    kw = {"patience": 10, "lr_schedule": "constant", **kw}
    config = TrainingConfig(epochs=epochs, **{"seed": 7, **kw})
    return train(RunDir(root), build, lambda e: dataset(e, x), None, validate,
                 ValidationMetric("val_mse", higher_is_better), config, fp,
                 log=lambda s: None)


def weights(root, name="last.keras"):
    return keras.saving.load_model(root / "checkpoints" / name).get_weights()


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    run_train(tmp_path / "straight", epochs=3)
    run_train(tmp_path / "resumed", epochs=1)  # "interrupted" after one epoch
    state = run_train(tmp_path / "resumed", epochs=3)
    assert state["epoch"] == 3 and len(state["history"]) == 3
    for a, b in zip(weights(tmp_path / "straight"), weights(tmp_path / "resumed")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    history = json.loads((tmp_path / "resumed" / "logs" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["val_mse"] < history[0]["val_mse"]


def test_same_seed_same_model_other_seed_other_model(tmp_path):
    run_train(tmp_path / "a", epochs=2)
    run_train(tmp_path / "b", epochs=2)
    run_train(tmp_path / "c", epochs=2, seed=8)
    a, b, c = (weights(tmp_path / name) for name in "abc")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))


def test_best_checkpoint_and_early_stopping(tmp_path):
    scores = iter([5.0, 3.0, 4.0, 4.0, 4.0, 1.0])
    state = run_train(tmp_path, epochs=10, patience=3, validate=lambda m: {"val_mse": next(scores)})
    assert state["best"] == 3.0 and state["best_epoch"] == 2 and state["epoch"] == 5
    assert "early stopping" in state["stop_reason"]
    assert (tmp_path / "checkpoints" / "best.keras").is_file()


def test_higher_is_better_metric_and_plateau_schedule(tmp_path):
    # A BLEU-like score: epochs 3-4 stall, so with lr_patience=2 the rate halves once.
    scores = iter([10.0, 20.0, 15.0, 20.0, 25.0, 5.0])
    state = run_train(tmp_path, epochs=6, higher_is_better=True, lr_schedule="plateau",
                      lr_patience=2, learning_rate=0.01, validate=lambda m: {"val_mse": next(scores)})
    assert state["best"] == 25.0 and state["best_epoch"] == 5
    rates = [h["learning_rate"] for h in state["history"]]
    assert rates[:4] == pytest.approx([0.01] * 4) and rates[4:] == pytest.approx([0.005] * 2)


def test_cosine_schedule_falls_from_the_rate_to_the_minimum_and_resumes_on_its_curve(tmp_path):
    # Validation stalls throughout: a plateau schedule would halve; the cosine one ignores it.
    kw = dict(lr_schedule="cosine", learning_rate=0.01, min_learning_rate=0.001,
              validate=lambda m: {"val_mse": 1.0})
    straight = run_train(tmp_path / "straight", epochs=5, **kw)
    rates = [h["learning_rate"] for h in straight["history"]]
    assert rates[0] == pytest.approx(0.01) and rates[-1] == pytest.approx(0.001)
    assert rates[2] == pytest.approx(0.0055)  # halfway
    assert all(a > b for a, b in zip(rates, rates[1:]))
    run_train(tmp_path / "resumed", epochs=2, **kw)  # the first two epochs of a 5-epoch run
    # ... are the first two of a 2-epoch run: resuming as 5 epochs moves onto the 5-epoch curve.
    resumed = run_train(tmp_path / "resumed", epochs=5, **kw)
    assert [h["learning_rate"] for h in resumed["history"]][2:] == pytest.approx(rates[2:])


@pytest.mark.parametrize("nothing_learned, halved_at", [(1.0, 7), (None, 3)])
def test_epochs_at_the_nothing_learned_score_are_not_stalls(nothing_learned, halved_at):
    # A CTC model emitting only blanks for 4 epochs (WER 1.0) is not on a plateau.
    metric = ValidationMetric("val_wer", False, nothing_learned=nothing_learned)
    config = TrainingConfig(lr_schedule="plateau", lr_patience=2, patience=30)
    state = {"best": None, "epoch": 0, "bad_epochs": 0, "lr_bad_epochs": 0}
    halved = []
    for epoch, value in enumerate([1.0, 1.0, 1.0, 1.0, 0.8, 0.9, 0.9], 1):
        state["epoch"] = epoch
        if after_validation(state, value, 0.01, metric, config)[1] is not None:
            halved.append(epoch)
    assert halved[0] == halved_at
    assert state["best_epoch"] == 5


def test_other_config_refuses_to_resume(tmp_path):
    run_train(tmp_path, epochs=1)
    with pytest.raises(ConfigError, match="different data/model/training config"):
        run_train(tmp_path, epochs=2, fp="other")


def test_nan_loss_is_an_error(tmp_path):
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        run_train(tmp_path, epochs=2, x=bad)


def test_time_budget(tmp_path):
    state = run_train(tmp_path, epochs=10, max_minutes=1e-6)
    assert state["epoch"] == 1 and "time budget" in state["stop_reason"]


def test_progress_shows_the_run_epoch_count_and_logs_steps(tmp_path, capsys, monkeypatch):
    from pipelines import trainer

    monkeypatch.setattr(trainer, "LOG_EVERY_STEPS", 2)
    lines = []
    config = TrainingConfig(epochs=3, patience=10, lr_schedule="constant")
    train(RunDir(tmp_path), build, dataset, None, val_mse, ValidationMetric("val_mse", False),
          config, "fp", log=lines.append)
    out = capsys.readouterr().out  # not a terminal: Keras' one line per epoch
    assert "Epoch 2/3" in out and "Epoch 3/3" in out and "Epoch 2/2" not in out
    # 64 samples in batches of 16: steps 2 and 4 of each epoch.
    steps = [line.split(":")[0] for line in lines if " step " in line]
    assert steps == [f"[train] epoch {e} step {s}" for e in (1, 2, 3) for s in (2, 4)]


def test_average_of_the_last_epochs_becomes_best_when_it_validates_better(tmp_path):
    run = tmp_path / "run"
    # A "validation" that records the weights it sees and scores every call better than
    # the one before: each epoch improves, and so does the average validated after them.
    kept = {}

    def record(model):
        kept[len(kept) + 1] = model.get_weights()
        return {"val_mse": 1.0 / len(kept)}  # every epoch improves: best is the last

    state = run_train(run, epochs=5, validate=record, average_last=3)
    files = sorted(p.name for p in (run / "checkpoints").glob("epoch-*.weights.h5"))
    assert files == ["epoch-003.weights.h5", "epoch-004.weights.h5", "epoch-005.weights.h5"]
    # The average was validated (the 6th call) with weights = the mean of epochs 3-5.
    mean = [np.mean([kept[e][i] for e in (3, 4, 5)], axis=0) for i in range(len(kept[3]))]
    for a, b in zip(kept[6], mean, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Its score 1/6 beats the best epoch's 1/5: best.keras is the average, the best
    # epoch is kept aside, and the best epoch's score stays in "best".
    assert state["averaged"] == {"epochs": [3, 5], "val_mse": 1 / 6, "used": True}
    assert state["best"] == 1 / 5 and state["best_epoch"] == 5
    for a, b in zip(weights(run, "best.keras"), mean, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(weights(run, "best_epoch.keras"), kept[5], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    # More epochs: best.keras is an epoch again until the new average is validated.
    state = run_train(run, epochs=6, validate=record, average_last=3)
    assert state["averaged"]["epochs"] == [4, 6] and state["averaged"]["used"]
    assert json.loads((run / "train_state.json").read_text())["averaged"]["epochs"] == [4, 6]


def test_an_average_that_validates_worse_leaves_the_best_epoch(tmp_path):
    calls = []

    def worse_average(model):
        calls.append(1)
        return {"val_mse": 1.0 / len(calls) if len(calls) <= 4 else 1.0}

    state = run_train(tmp_path / "run", epochs=4, validate=worse_average, average_last=2)
    assert state["averaged"] == {"epochs": [3, 4], "val_mse": 1.0, "used": False}
    for a, b in zip(weights(tmp_path / "run", "best.keras"), weights(tmp_path / "run")):
        np.testing.assert_allclose(a, b)  # best = last epoch, which improved every time
    assert not (tmp_path / "run" / "checkpoints" / "best_epoch.keras").exists()


def test_a_run_begun_with_rnn_over_cell_layers_resumes_with_keras_gru_layers(tmp_path):
    """A run trained before the switch to Keras' GRU/LSTM layers (its checkpoint and the
    epoch weights kept for averaging store the weights under the old names) resumes
    with the new layers as if it had never stopped, averaging included."""
    from models.losses import MaskedLabelSmoothingLoss
    from models.seq2seq_translator import Seq2SeqTranslator
    from pipelines.trainer import build_and_compile
    from tests.data.legacy_rnn.make import TRANSLATOR

    rng = np.random.default_rng(0)
    source = rng.integers(3, TRANSLATOR["source_vocab_size"], (16, 6)).astype("int32")
    source[::2, 4:] = 0
    target = rng.integers(3, TRANSLATOR["target_vocab_size"], (16, 5)).astype("int32")
    labels = np.concatenate([target[:, 1:], np.zeros((16, 1), "int32")], axis=1)

    def data(epoch):
        return (tf.data.Dataset.from_tensor_slices(({"source": source, "target_in": target},
                                                    labels)).shuffle(16, seed=epoch).batch(8))

    def run(root, epochs, legacy_rnn):
        config = TrainingConfig(epochs=epochs, patience=10, lr_schedule="constant", seed=7,
                                average_last=3)

        def build():
            return build_and_compile(Seq2SeqTranslator(legacy_rnn=legacy_rnn, **TRANSLATOR),
                                     config, loss=MaskedLabelSmoothingLoss(0.1))

        # Every epoch "improves", and the average ties with the last epoch: it is used.
        def validate(model):
            return {"val_mse": -float(model.optimizer.iterations.numpy())}

        return train(RunDir(root), build, data, None, validate,
                     ValidationMetric("val_mse", False), config, "fp", log=lambda s: None)

    run(tmp_path / "straight", 3, legacy_rnn=False)
    run(tmp_path / "resumed", 2, legacy_rnn=True)
    state = run(tmp_path / "resumed", 3, legacy_rnn=False)
    assert state["averaged"]["epochs"] == [1, 3] and state["averaged"]["used"]
    for name in ("last.keras", "best.keras"):
        assert not keras.saving.load_model(tmp_path / "resumed" / "checkpoints" / name).legacy_rnn
        for a, b in zip(weights(tmp_path / "straight", name), weights(tmp_path / "resumed", name),
                        strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_runs_trained_before_the_per_pipeline_training_sections_keep_their_fingerprints(tmp_path):
    # Such a run's fingerprints counted the other pipeline's training fields at their
    # defaults: it must resume (or be up to date), not be refused as another config.
    training = TranslationTrainingConfig(epochs=2)
    fields = dataclasses.asdict(training)
    assert not set(trainer.RETIRED_TRAINING_DEFAULTS) <= set(fields)
    started = []
    ctx = SimpleNamespace(config=SimpleNamespace(training=training), run=RunDir(tmp_path),
                          force=False, start=lambda fp, output: started.append(fp) or True)
    old = trainer.stage_fingerprints(("data",), {**trainer.RETIRED_TRAINING_DEFAULTS, **fields})
    new = trainer.stage_fingerprints(("data",), fields)
    assert old != new
    (tmp_path / "train_state.json").write_text(json.dumps({"fingerprint": old[0]}))
    assert trainer.start_stage(ctx, "data") == old[0] and started == [old[1]]
    (tmp_path / "train_state.json").write_text(json.dumps({"fingerprint": "another"}))
    with pytest.raises(ConfigError, match="different data/model/training config"):
        trainer.start_stage(ctx, "data")
    (tmp_path / "train_state.json").unlink()
    assert trainer.start_stage(ctx, "data") == new[0] and started[-1] == new[1]
