"""Our speech recognizer against keras-io's "Automatic Speech Recognition using CTC".

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.speech_reference \
        --run-dir runs/an4 --minutes 30 --out runs/speech_reference.json

Run it as a module from the repository root (``-m``: it imports
``benchmarks/deepspeech2_reference.py``, the reference model). The reference is the Keras
example a user would start from (DeepSpeech2-like: 2-D convolutions over the spectrogram,
five bidirectional GRUs, a dense layer, character CTC, Adam at 1e-4, batches of 32,
``model.fit``, greedy decoding) with its GRU width scaled so that it has as many
parameters as ours, as ``benchmarks.harness`` does for translation. Both read the same
features from ``--run-dir``, a prepared speech run that is never written to: its training
shards (every speed perturbation copy) and its validation and test splits.

In one process: (a) steady-state training throughput of both, input feature frames per
second, warm-up steps excluded; (b) each trained from scratch for ``--minutes`` of wall
time (validation included), then scored on the test split: greedy for both, and ours
also with its configured beam search (no language model). Ours trains as its ``train``
stage does (SpecAugment, learning-rate schedule, checkpoint averaging) in a run directory
of its own, ``--work-dir``/ours, whose inputs are links to ``--run-dir``'s files; the
reference as the example does: ``model.fit`` epochs over one fixed order of the
utterances, no augmentation, the validation WER after each, until the budget is spent.
``--set KEY=VALUE`` overrides our config (the reference follows our parameter count).
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipelines.quiet import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.deepspeech2_reference import (  # noqa: E402
    BATCH_SIZE,
    EXAMPLE_UNITS,
    build_reference,
    reference_batches,
    reference_parameters,
    reference_units,
)
from benchmarks.timing import timed_fit, timed_loop, write_results  # noqa: E402
from data_prep.manifest import read_manifest  # noqa: E402
from models.ctc_decoding import CTCDecoder  # noqa: E402
from pipelines import speech  # noqa: E402
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

PARAMETER_TOLERANCE = 0.01  # the widest relative gap between the two parameter counts

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
    vocab = vocabulary(cfg, run)
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
    if target.exists():  # ours trains from scratch: never on top of an earlier run
        raise SystemExit(f"error: {target} exists; remove it or choose another --work-dir")
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
    cfg = load_config(SpeechConfig, config, args.overrides, recorded=True)
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
    # fit's default shuffle=True does nothing to a tf.data input; Keras warns of it.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="speech_reference-") as tmp:
        results = run(args, Path(args.work_dir or tmp))
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(table(results))
    if args.out:
        write_results(args.out, results, "speech_reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
