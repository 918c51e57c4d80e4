"""How fast the translator learns: validation BLEU after each of the first epochs, one
change at a time.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.learning_speed --epochs 3
    ... -m benchmarks.learning_speed --only default before --epochs 1 --jobs 2 --test

Each variant is ``pipelines/configs/translation_demo.yaml`` (Multi30k De->En, the default
model) with a few ``--set`` overrides, trained for ``--epochs`` epochs in
``runs/learning_speed/<variant>/``. Runs are resumable and reuse finished epochs, so
asking for more epochs later only trains the new ones. ``--jobs 2`` trains two variants
at once with one TensorFlow thread each (validation BLEU per epoch should not depend
materially on it; epoch seconds do, so compare them only between variants that ran side
by side). ``--test`` also
scores test2016 (beam 5 and greedy) with each variant's best checkpoint.

Prints a Markdown table and writes ``runs/learning_speed/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pipelines" / "configs" / "translation_demo.yaml"

# name -> (what changes, overrides of translation_demo.yaml). "default" is the shipped
# model; every other variant changes one thing, except "before" (the model of earlier
# releases) and "before_zero_init".
VARIANTS = {
    "default": ("the shipped model", []),
    "before": ("the earlier default: bridge init, Bahdanau scores, tanh attentional vector, "
               "input feeding, dropout 0.3",
               ["model.decoder_init=bridge", "model.attention=additive",
                "model.attention_output=tanh", "model.input_feeding=true", "model.dropout=0.3"]),
    "before_zero_init": ("the earlier default with a zero initial decoder state",
                         ["model.decoder_init=zeros", "model.attention=additive",
                          "model.attention_output=tanh", "model.input_feeding=true",
                          "model.dropout=0.3"]),
    "tanh_output": ("Luong's tanh(W[c;h]) instead of LayerNorm(h + Wc)",
                    ["model.attention_output=tanh"]),
    "additive": ("Bahdanau (additive) scores instead of scaled dot-product",
                 ["model.attention=additive"]),
    "general": ("unscaled Luong 'general' scores", ["model.attention=general"]),
    "input_feeding": ("input feeding (previous attentional vector into the RNN)",
                      ["model.input_feeding=true"]),
    "bridge_init": ("decoder state initialized from the encoder's final states",
                    ["model.decoder_init=bridge"]),
    "dropout_0.3": ("dropout 0.3", ["model.dropout=0.3"]),
    "dropout_0": ("no dropout", ["model.dropout=0.0"]),
    "no_label_smoothing": ("no label smoothing", ["training.label_smoothing=0.0"]),
    "lr_0.001": ("learning rate 0.001", ["training.learning_rate=0.001"]),
    "adam_defaults": ("Keras' Adam defaults: epsilon 1e-7, no clipping at 5 (clip 1e9)",
                      ["training.adam_epsilon=1e-7", "training.clip_norm=1e9"]),
    "batch_2000": ("2,000-token batches (half the updates)", ["training.batch_tokens=2000"]),
    "vocab_4000": ("a joint 4k subword vocabulary", ["tokenizer.vocab_size=4000"]),
    "separate_vocab": ("separate 8k vocabularies per language", ["tokenizer.joint=false"]),
}

# Runs a pipeline stage with a fixed number of TensorFlow threads (parallel jobs share
# the cores instead of oversubscribing them).
BOOTSTRAP = (
    "import os, sys\n"
    "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')\n"
    "import tensorflow as tf\n"
    "n = int(sys.argv[1])\n"
    "if n:\n"
    "    tf.config.threading.set_intra_op_parallelism_threads(n)\n"
    "    tf.config.threading.set_inter_op_parallelism_threads(n)\n"
    "from pipelines.translation import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def command(name: str, stage: str, args, threads: int) -> list[str]:
    overrides = [x for o in VARIANTS[name][1] for x in ("--set", o)]
    return [sys.executable, "-c", BOOTSTRAP, str(threads), stage, "--config", str(CONFIG),
            "--run-dir", str(args.root / name), "--set", f"training.epochs={args.epochs}",
            *overrides]


def run_variants(names: list[str], args) -> dict[str, int]:
    """Train (then optionally evaluate) each variant, ``args.jobs`` at a time."""
    threads = 1 if args.jobs > 1 else 0
    stages = ["prepare", "train"] + (["evaluate"] if args.test else [])
    pending, running, codes = list(names), {}, {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            log = open(args.root / f"{name}.log", "a")
            script = " && ".join(shlex.join(command(name, s, args, threads))
                                 for s in stages)
            running[name] = (subprocess.Popen(script, shell=True, cwd=ROOT, stdout=log,
                                              stderr=subprocess.STDOUT), log)
            print(f"started {name} (log {args.root / name}.log)", file=sys.stderr)
        time.sleep(5)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                codes[name] = proc.returncode
                del running[name]
                print(f"finished {name}: exit {proc.returncode}", file=sys.stderr)
    return codes


def collect(name: str, root: Path, test: bool) -> dict:
    run = root / name
    state = json.loads((run / "train_state.json").read_text())
    result = {
        "variant": name, "change": VARIANTS[name][0], "overrides": VARIANTS[name][1],
        "val_bleu": [h["val_bleu"] for h in state["history"]],
        "epoch_seconds": [h["epoch_seconds"] for h in state["history"]],
        "train_loss": [round(h["loss"], 3) for h in state["history"]],
    }
    metrics = run / "metrics.json"
    if test and metrics.is_file():  # written by this invocation's evaluate stage
        m = json.loads(metrics.read_text())
        result.update(test_bleu=m["bleu"], test_greedy_bleu=m["greedy"]["bleu"],
                      test_epochs=state["best_epoch"])
    return result


def table(results: list[dict]) -> str:
    epochs = max(len(r["val_bleu"]) for r in results)
    head = ["variant", "change"] + [f"val BLEU ep {i + 1}" for i in range(epochs)]
    head += ["s/epoch", "test2016 beam 5 (greedy)"]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        bleu = [f"{b:.1f}" for b in r["val_bleu"]] + [""] * (epochs - len(r["val_bleu"]))
        seconds = sum(r["epoch_seconds"]) / max(1, len(r["epoch_seconds"]))
        test = f"{r['test_bleu']:.1f} ({r['test_greedy_bleu']:.1f})" if "test_bleu" in r else ""
        rows.append("| " + " | ".join([f"`{r['variant']}`", r["change"], *bleu,
                                       f"{seconds:.0f}", test]) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--epochs", type=int, default=1, help="epochs per variant (default 1)")
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), metavar="VARIANT",
                   help=f"variants to run (default: all): {', '.join(VARIANTS)}")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once")
    p.add_argument("--test", action="store_true", help="also score test2016 (evaluate stage)")
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "learning_speed")
    args = p.parse_args()
    if args.jobs < 1 or args.epochs < 1:
        p.error("--jobs and --epochs must be at least 1")
    args.root.mkdir(parents=True, exist_ok=True)
    names = args.only or list(VARIANTS)
    codes = run_variants(names, args)
    failed = [n for n, c in codes.items() if c]
    results = [collect(n, args.root, args.test) for n in names if n not in failed]
    summary = {"epochs": args.epochs, "jobs": args.jobs, "config": str(CONFIG.relative_to(ROOT)),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                          f"Python {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d"), "results": results}
    (args.root / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    if results:
        print(table(results))
    if failed:
        print(f"failed: {', '.join(failed)} (see their logs in {args.root})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
