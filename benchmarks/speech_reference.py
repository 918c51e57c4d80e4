"""Our speech recognizer against the Keras example a user would start from, side by side.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python benchmarks/speech_reference.py \
        --run-dir runs/an4 --minutes 30 --out runs/speech_reference.json

The reference is keras-io's "Automatic Speech Recognition using CTC"
(``examples/audio/ctc_asr.py``), a DeepSpeech2-like model: two 2-D convolutions over the
spectrogram (32 filters, kernels 11x41 and 11x21 (time x frequency), strides 2x2 and 1x2,
no bias, batch normalization, ReLU), five bidirectional GRUs (512 units in the example,
dropout 0.5 between them), a dense ReLU layer of twice the GRU width (dropout 0.5) and a
character CTC output; Adam at 1e-4, batches of 32 padded to their longest utterance
(no bucketing), ``model.fit``, greedy decoding. As the translation reference of
``pipelines.benchmark``, it keeps its recipe but not its size: its GRU width is chosen so
that it has as many parameters as our model (``reference_units``).

Both train on the same inputs, the features ``prepare`` wrote into ``--run-dir`` (a
prepared speech run, read and never written): the training shards with every speed
perturbation copy (the same utterances for both), and its validation and test split.
Ours adds the SpecAugment of its config; the reference has none, as in the example.
Differences from the example, all in the reference's favour or needed to share inputs:
our log-mel features and normalization instead of its square-root STFT magnitudes
normalized per frame, our vocabulary with the blank at index 0 (the example's blank is
last), logits with a softmax inside the loss (its model ends with a softmax), and a CTC
loss over each utterance's true frame and label counts (the example passes the padded
lengths, so it also learns to emit its padding label over the padding frames).

The command, in one process: (a) steady-state training throughput, input feature
frames per second, of ours (``pipelines.speech.stages.build_model``, the trainer's
compiled loop on the ``train`` stage's streamed batches) and of the reference
(``model.fit``), warm-up steps excluded; (b) each trained from scratch for ``--minutes``
of wall time, validation included (ours: the ``train`` stage with
``training.max_minutes``, in a run directory of its own under ``--work-dir`` whose
inputs are links to ``--run-dir``'s files; the reference: epochs until the budget is
spent, validation WER after each as the example prints it), then test WER/CER on the
test split: greedy for both, and ours also with its configured beam search (no
language model). ``--set KEY=VALUE`` overrides our config (the reference follows its
parameter count). Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from data_prep.manifest import read_manifest  # noqa: E402
from data_prep.speech_dataset import LABEL_PAD, _inputs, _ragged  # noqa: E402
from models.ctc_decoding import CTCDecoder  # noqa: E402
from pipelines import speech  # noqa: E402
from pipelines.benchmark import timed_fit, timed_loop  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.metrics import wer_cer  # noqa: E402
from pipelines.run_dir import RunDir  # noqa: E402
from pipelines.speech.config import SpeechConfig  # noqa: E402
from pipelines.speech.data import load_labelled, load_stats, vocabulary  # noqa: E402
from pipelines.speech.inference import transcribe_features, transcribe_files  # noqa: E402
from pipelines.speech.shards import (  # noqa: E402
    load_train_features,
    streaming_dataset,
    train_shards,
)
from pipelines.speech.stages import build_model  # noqa: E402

# The example's recipe. Convolutions: (filters, kernel, strides), (time, frequency).
CONVOLUTIONS = ((32, (11, 41), (2, 2)), (32, (11, 21), (1, 2)))
RNN_LAYERS = 5
EXAMPLE_UNITS = 512  # its GRU width, before scaling to our parameter count
DROPOUT = 0.5
LEARNING_RATE = 1e-4
BATCH_SIZE = 32
PARAMETER_TOLERANCE = 0.01  # the widest relative gap between the two parameter counts


# -- the reference model --------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceConfig:
    """The fields ``CTCDecoder`` reads (``num_features``, ``blank_index``) and the width."""

    num_features: int
    vocab_size: int
    rnn_units: int
    blank_index: int = 0


def frequency_bins(num_features: int) -> int:
    """Frequency bins left by the convolutions ("same" padding: ceil(n / stride) each)."""
    for _, _, (_, stride) in CONVOLUTIONS:
        num_features = -(-num_features // stride)
    return num_features


class DeepSpeech2Reference(keras.Model):
    """keras-io's CTC ASR model (DeepSpeech2-like), on our batches.

    ``call({"features": [B, T, F], "feature_lengths": [B]})`` returns logits
    [B, ceil(T / 2), V]. As in the example, nothing is masked: the convolutions, batch
    normalization and the backward GRUs see each batch's padding.

    Args:
        num_features: F, the feature bins per frame.
        vocab_size: V, output classes, the CTC blank included.
        rnn_units: GRU units per direction (the example's 512, or a scaled width).
        blank_index: the CTC blank's class.
    """

    def __init__(self, num_features, vocab_size, rnn_units, blank_index=0, **kwargs):
        super().__init__(**kwargs)
        self.config = ReferenceConfig(num_features, vocab_size, rnn_units, blank_index)
        L = keras.layers
        self.convs = [L.Conv2D(filters, kernel, strides=strides, padding="same",
                               use_bias=False, name=f"conv_{i + 1}")
                      for i, (filters, kernel, strides) in enumerate(CONVOLUTIONS)]
        self.norms = [L.BatchNormalization(name=f"conv_{i + 1}_bn")
                      for i in range(len(CONVOLUTIONS))]
        self.rnn_inputs = frequency_bins(num_features) * CONVOLUTIONS[-1][0]
        self.rnns = [L.Bidirectional(L.GRU(rnn_units, return_sequences=True),
                                     merge_mode="concat", name=f"bidirectional_{i + 1}")
                     for i in range(RNN_LAYERS)]
        self.dropout = L.Dropout(DROPOUT)
        self.dense = L.Dense(2 * rnn_units, activation="relu", name="dense_1")
        self.output_layer = L.Dense(vocab_size, name="logits")

    def build(self, input_shape=None):
        # Every weight now, so the parameter count is known before training.
        self.call({"features": ops.zeros((1, 8, self.config.num_features)),
                   "feature_lengths": ops.array([8], "int32")})
        self.built = True

    def output_lengths(self, feature_lengths):
        """Logit frames of each utterance: the first convolution halves time."""
        return (ops.cast(feature_lengths, "int32") + 1) // 2

    def call(self, inputs, training=False):
        x = ops.expand_dims(inputs["features"], -1)  # the spectrogram as a 1-channel image
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = ops.relu(norm(conv(x), training=training))
        # [B, T', bins, filters] -> [B, T', bins * filters]: one vector per frame.
        x = ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1], self.rnn_inputs))
        for i, rnn in enumerate(self.rnns):
            x = rnn(x, training=training)
            if i < len(self.rnns) - 1:
                x = self.dropout(x, training=training)
        return self.output_layer(self.dropout(self.dense(x), training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # The mean CTC loss per utterance, as the example's ctc_batch_cost under fit, but
        # over true lengths: labels come padded with -1, frames per feature_lengths.
        labels = ops.cast(y, "int32")
        label_lengths = ops.sum(ops.cast(labels >= 0, "int32"), axis=-1)
        loss = ops.ctc_loss(labels, ops.cast(y_pred, "float32"), label_lengths,
                            self.output_lengths(x["feature_lengths"]),
                            mask_index=self.config.blank_index)
        return ops.mean(loss)

    def get_config(self):
        return {**super().get_config(), "num_features": self.config.num_features,
                "vocab_size": self.config.vocab_size, "rnn_units": self.config.rnn_units,
                "blank_index": self.config.blank_index}


def reference_parameters(num_features: int, vocab_size: int, units: int) -> int:
    """Parameter count of ``DeepSpeech2Reference`` (``count_params``: batch normalization's
    moving statistics included; Keras GRUs have two bias vectors)."""
    total, channels = 0, 1
    for filters, (kt, kf), _ in CONVOLUTIONS:
        total += kt * kf * channels * filters + 4 * filters
        channels = filters
    inputs = frequency_bins(num_features) * channels
    for _ in range(RNN_LAYERS):
        total += 2 * (3 * units * (inputs + units) + 6 * units)
        inputs = 2 * units
    return total + (inputs * inputs + inputs) + (inputs * vocab_size + vocab_size)


def reference_units(target_params: int, num_features: int, vocab_size: int) -> int:
    """The GRU width that brings ``DeepSpeech2Reference`` closest to ``target_params``."""
    return min(range(1, 4097), key=lambda u: abs(
        reference_parameters(num_features, vocab_size, u) - target_params))


def build_reference(num_features: int, vocab_size: int, units: int, blank_index: int = 0
                    ) -> DeepSpeech2Reference:
    model = DeepSpeech2Reference(num_features, vocab_size, units, blank_index)
    model.build()
    # The example's optimizer; compile's defaults otherwise (jit_compile="auto": no XLA on
    # a CPU-only machine), and the model computes its own loss.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE))
    return model


def reference_batches(features: list[np.ndarray], labels: list[list[int]], seed: int
                      ) -> tf.data.Dataset:
    """The example's input pipeline on our features: one fixed random order (it shuffles
    its file list once), batches of ``BATCH_SIZE`` padded to their longest utterance."""
    order = np.random.default_rng(seed).permutation(len(features))
    dataset = tf.data.Dataset.from_tensor_slices(
        (_ragged([features[i] for i in order], np.float32),
         _ragged([np.asarray(labels[i]) for i in order], np.int32)))
    dataset = dataset.map(lambda f, y: (_inputs(f), y))
    return dataset.padded_batch(
        BATCH_SIZE, padding_values=({"features": 0.0, "feature_lengths": 0}, LABEL_PAD)
    ).prefetch(tf.data.AUTOTUNE)


# -- the data: one prepared run ---------------------------------------------------------------


@dataclass
class SpeechData:
    """What both models train and are scored on, from one prepared run."""

    cfg: SpeechConfig
    run: RunDir
    vocab: object
    shards: object  # pipelines.speech.shards.TrainShards
    train_x: list[np.ndarray]  # every kept training utterance, all speed copies
    train_y: list[list[int]]
    val_x: list[np.ndarray]
    val_text: list[str]


def load_data(cfg: SpeechConfig, run: RunDir) -> SpeechData:
    vocab = vocabulary(cfg)
    shards = train_shards(cfg, run, vocab, run.require("prepare", "the benchmark"))
    features, labels = load_train_features(cfg, run)
    # The utterances ours trains on (CTC can fit their transcript at its 4x subsampling;
    # the reference's 2x fits more): identical training sets.
    kept = np.flatnonzero(shards.keep)
    val_x, val_y, _ = load_labelled(run, "val", vocab, cfg)
    return SpeechData(cfg, run, vocab, shards, [features[i] for i in kept],
                      [labels[i] for i in kept], val_x, [vocab.decode(y) for y in val_y])


# -- (a) steady-state throughput ------------------------------------------------------------


def batch_frames(dataset: tf.data.Dataset, warmup: int, steps: int) -> dict:
    """Real and padded feature frames and utterances in batches ``warmup..warmup+steps``."""
    counts = [(int(np.sum(x["feature_lengths"])), int(np.prod(x["features"].shape[:2])),
               int(x["features"].shape[0])) for x, _ in dataset.take(warmup + steps)][warmup:]
    return dict(zip(("frames", "padded_frames", "utterances"),
                    (sum(c[i] for c in counts) for i in range(3)), strict=True))


def rates(counts: dict, seconds: float, steps: int, model: keras.Model) -> dict:
    return {**counts, "steps": steps, "seconds": round(seconds, 3),
            "frames_per_second": round(counts["frames"] / seconds, 1),
            "padded_frames_per_second": round(counts["padded_frames"] / seconds, 1),
            "utterances_per_second": round(counts["utterances"] / seconds, 2),
            "parameters": model.count_params()}


def throughput(data: SpeechData, units: int, warmup: int, steps: int) -> dict:
    t = data.cfg.training
    keras.utils.set_random_seed(t.seed)
    ours = build_model(data.cfg, data.vocab)

    def our_batches():  # the train stage's batches (its epoch 0)
        return streaming_dataset(data.shards, data.cfg, seed=t.seed).repeat()

    counts = batch_frames(our_batches(), warmup, steps)
    result = {"warmup_steps": warmup, "timed_steps": steps,
              "ours": {**rates(counts, timed_loop(ours, our_batches, warmup, steps), steps,
                               ours), "batch_size": t.batch_size, "loop": "trainer"}}
    keras.utils.set_random_seed(t.seed)
    reference = build_reference(data.cfg.features.num_features, data.vocab.size, units,
                                data.vocab.blank_index)
    batches = reference_batches(data.train_x, data.train_y, t.seed).repeat()
    seconds = timed_fit(reference, batches, warmup, steps)
    result["reference"] = {**rates(batch_frames(batches, warmup, steps), seconds, steps,
                                   reference), "batch_size": BATCH_SIZE, "loop": "model.fit"}
    result["speedup"] = round(result["ours"]["frames_per_second"]
                              / result["reference"]["frames_per_second"], 2)
    return result


# -- (b) the same wall time from scratch, then test WER -------------------------------------


def overlay_run(source: RunDir, target: Path) -> RunDir:
    """A new run directory that reads ``source``'s prepared data without writing to it:
    its prepare record, and a link to each file of its ``data/`` and ``features/`` (an
    atomic write in the new run replaces a link, never the file it points to)."""
    target.mkdir(parents=True)
    for name in ("run.json", "stages/prepare.json"):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(source.path(name).read_bytes())
    for folder in ("data", "features"):
        (target / folder).mkdir()
        for path in source.path(folder).iterdir():
            (target / folder / path.name).symlink_to(path.resolve())
    return RunDir(target)


def train_ours(data: SpeechData, config: Path, overrides: list[str], minutes: float,
               work: Path, data_dir: str | None) -> dict:
    """The train and evaluate stages for ``minutes`` of training (validation included)."""
    run = overlay_run(data.run, work / "ours")
    # A budget, not an epoch count, stops it; evaluate without the language model.
    sets = [*overrides, f"training.max_minutes={minutes}", "training.epochs=1000000",
            "decoding.lm=null"]
    args = ["--config", str(config), "--run-dir", str(run.root),
            *(["--data-dir", data_dir] if data_dir else []),
            *(a for s in sets for a in ("--set", s))]
    for stage in ("train", "evaluate"):
        if speech.main([stage, *args]) != 0:
            raise SystemExit(f"ours: the {stage} stage failed (run {run.root})")
    state = json.loads(run.path("train_state.json").read_text())
    metrics = json.loads(run.path("metrics.json").read_text())

    def scores(m):
        return {k: m[k] for k in ("wer", "cer", "utterance_accuracy")}

    return {"train_seconds": round(state["train_seconds"], 1), "epochs": state["epoch"],
            "stop_reason": state["stop_reason"], "best_val_wer": state["best"],
            "best_epoch": state["best_epoch"], "run": str(run.root),
            "test": {"greedy": scores(metrics["greedy"]),
                     metrics["strategy"]: scores(metrics)}}


class TimeBudget(keras.callbacks.Callback):
    """Stops ``fit`` at the first step that ends past ``seconds`` since it began."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.start = seconds, None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def on_train_batch_end(self, batch, logs=None):
        if self.elapsed() >= self.seconds:
            self.model.stop_training = True


class ValidationWER(keras.callbacks.Callback):
    """The example's end-of-epoch evaluation: greedy WER on the validation split."""

    def __init__(self, data: SpeechData, budget: TimeBudget):
        super().__init__()
        self.data, self.budget, self.decoder, self.history = data, budget, None, []

    def on_epoch_end(self, epoch, logs=None):
        self.decoder = self.decoder or CTCDecoder(self.model, "greedy")
        hyps = transcribe_features(self.decoder, self.data.vocab, self.data.val_x,
                                   self.data.cfg.decoding.batch_size)
        self.history.append({"epoch": epoch + 1, "loss": round(float(logs["loss"]), 4),
                             "val_wer": wer_cer(hyps, self.data.val_text)["wer"],
                             "seconds": round(self.budget.elapsed(), 1)})
        print(f"[reference] epoch {epoch + 1}: " + ", ".join(
            f"{k}={v}" for k, v in self.history[-1].items() if k != "epoch"), flush=True)


def score_test(data: SpeechData, decoder) -> dict:
    """Greedy (or ``decoder``'s) test WER/CER, from the test audio as evaluate reads it."""
    entries = read_manifest(data.run.path("data", "test.jsonl"))
    hyps, _ = transcribe_files(decoder, data.vocab, [e["audio_filepath"] for e in entries],
                               data.cfg, load_stats(data.run, data.cfg.features),
                               [e.get("speaker") for e in entries])
    scores = wer_cer(hyps, [e["text"] for e in entries])
    return {k: scores[k] for k in ("wer", "cer", "utterance_accuracy")}


def train_reference(data: SpeechData, units: int, minutes: float) -> dict:
    keras.utils.set_random_seed(data.cfg.training.seed)
    model = build_reference(data.cfg.features.num_features, data.vocab.size, units,
                            data.vocab.blank_index)
    budget = TimeBudget(60.0 * minutes)
    validation = ValidationWER(data, budget)
    batches = reference_batches(data.train_x, data.train_y, data.cfg.training.seed)
    history = model.fit(batches, epochs=1000000, callbacks=[budget, validation], verbose=0)
    return {"train_seconds": round(budget.elapsed(), 1), "epochs": len(history.epoch),
            "steps": int(model.optimizer.iterations.numpy()), "history": validation.history,
            "test": {"greedy": score_test(data, CTCDecoder(model, "greedy"))}}


# -- the command ------------------------------------------------------------------------------


def table(results: dict) -> str:
    p, rows = results["parameters"], []
    rows.append(("parameters", f"{p['ours']:,}", f"{p['reference']:,}",
                 f"reference GRU width {p['reference_units']} (example: {EXAMPLE_UNITS})"))
    if "throughput" in results:
        t = results["throughput"]
        rows.append(("training frames/s", f"{t['ours']['frames_per_second']:,}",
                     f"{t['reference']['frames_per_second']:,}",
                     f"{t['speedup']}x (target >= 2x)"))
    if "budget" in results:
        ours, ref = results["ours"], results["reference"]
        rows.append(("training seconds (epochs)", f"{ours['train_seconds']} ({ours['epochs']})",
                     f"{ref['train_seconds']} ({ref['epochs']})",
                     f"budget {results['budget']['minutes']} min"))
        for strategy in ours["test"]:
            reference = ref["test"].get(strategy, {}).get("wer")
            rows.append((f"test WER, {strategy}", f"{ours['test'][strategy]['wer']:.2%}",
                         "" if reference is None else f"{reference:.2%}", ""))
        rows.append(("WER ours / reference greedy", f"{results['budget']['wer_ratio']}", "",
                     "target <= 0.5"))
    rows.insert(0, ("", "ours", "reference", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip()
                     for a, b, c, d in rows)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--run-dir", required=True,
                   help="a speech run whose prepare stage has run (read only)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a field of our config")
    p.add_argument("--minutes", type=float, default=30.0,
                   help="wall-clock training budget of each model (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed training steps")
    p.add_argument("--train-steps", type=int, default=30, help="timed training steps")
    p.add_argument("--skip-throughput", action="store_true", help="only part (b)")
    p.add_argument("--skip-budget", action="store_true", help="only part (a)")
    p.add_argument("--work-dir", help="our run directory goes to WORK_DIR/ours (default: a "
                   "temporary directory, removed at the end)")
    p.add_argument("--data-dir", help="dataset directory (default: $PIPELINES_DATA_DIR)")
    p.add_argument("--out", default="runs/speech_reference.json",
                   help="write the results as JSON to this file (default: %(default)s)")
    args = p.parse_args(argv)
    if args.warmup_steps < 1 or args.train_steps < 1 or args.minutes <= 0:
        p.error("--warmup-steps and --train-steps must be at least 1, --minutes positive")
    return args


def run(args, work: Path) -> dict:
    source = RunDir(args.run_dir)
    config = source.path("config.yaml")
    cfg = load_config(SpeechConfig, config, args.overrides)
    data = load_data(cfg, source)
    keras.utils.set_random_seed(cfg.training.seed)
    ours_params = build_model(cfg, data.vocab).count_params()
    units = reference_units(ours_params, cfg.features.num_features, data.vocab.size)
    ref_params = reference_parameters(cfg.features.num_features, data.vocab.size, units)
    gap = abs(ref_params - ours_params) / ours_params
    if gap > PARAMETER_TOLERANCE:
        raise SystemExit(f"error: ours has {ours_params:,} parameters, the reference "
                         f"{ref_params:,} at its closest width ({units} units): more than "
                         f"{PARAMETER_TOLERANCE:.0%} apart; enlarge ours (--set model...)")
    results = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "tensorflow": tf.__version__,
                    "keras": keras.__version__},
        "settings": vars(args), "config": str(config),
        "data": {"train_utterances": len(data.train_x),
                 "speed_perturbation": cfg.data.speed_perturbation,
                 "train_frames": int(sum(len(x) for x in data.train_x)),
                 "val_utterances": len(data.val_x)},
        "parameters": {"ours": ours_params, "reference": ref_params, "reference_units": units,
                       "relative_gap": round(gap, 5)}}
    if not args.skip_throughput:
        results["throughput"] = throughput(data, units, args.warmup_steps, args.train_steps)
        print(f"[speech_reference] throughput: {results['throughput']['speedup']}x",
              file=sys.stderr)
    if not args.skip_budget:
        results["ours"] = train_ours(data, config, args.overrides, args.minutes, work,
                                     args.data_dir)
        results["reference"] = train_reference(data, units, args.minutes)
        best = min(s["wer"] for s in results["ours"]["test"].values())
        reference = results["reference"]["test"]["greedy"]["wer"]
        results["budget"] = {"minutes": args.minutes, "wer_ratio": round(
            best / reference, 3) if reference else None}
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="speech_reference-") as tmp:
        results = run(args, Path(args.work_dir or tmp))
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"[speech_reference] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
