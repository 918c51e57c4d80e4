"""Speech benchmark: train, evaluate (WER, CER, real-time factor), record time and memory.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.speech an4
    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.speech fsdd_strings
    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.speech fsdd_digits
    # leave-one-speaker-out folds (one full training each):
    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.speech fsdd_digits \
        --leave-out george jackson lucas nicolas yweweler

Runs ``python -m pipelines.speech all`` for ``pipelines/configs/<name>.yaml`` in
``runs/<name>`` (resuming if interrupted) and writes ``runs/<name>/benchmark.json``: wall
time, peak resident memory of the pipeline processes, training minutes, epochs and scores.
With ``--leave-out``, each listed speaker is held out in turn
(``--set data.test_speakers=[speaker]``, run ``runs/<name>_loso_<speaker>``) instead of
the standard split, and the mean WER over the folds is reported too. The last line
printed is a Markdown table row for the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_pipeline(name: str, run: Path, extra: list[str]) -> dict:
    """Run every stage for one config; the summary of its run directory."""
    command = [sys.executable, "-m", "pipelines.speech", "all",
               "--config", str(ROOT / "pipelines" / "configs" / f"{name}.yaml"),
               "--run-dir", str(run), *extra]
    start = time.time()
    code = subprocess.call(command, cwd=ROOT)
    if code:
        raise SystemExit(code)
    metrics = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "train_state.json").read_text())
    return {
        "run": str(run), "wall_seconds_this_invocation": round(time.time() - start),
        "train_minutes": round(state["train_seconds"] / 60, 1), "epochs": state["epoch"],
        "stop_reason": state["stop_reason"], "best_epoch": state["best_epoch"],
        "best_val_wer": state["best"], "test_wer": metrics["wer"], "test_cer": metrics["cer"],
        "utterance_accuracy": metrics["utterance_accuracy"], "rtf": metrics["rtf"],
        "strategy": metrics["strategy"], "greedy_test_wer": metrics["greedy"]["wer"],
        # With a language model, the same beam search without it (ESPnet reports both).
        **({"without_lm_test_wer": metrics["without_lm"]["wer"], "lm": metrics["lm"]}
           if "without_lm" in metrics else {}),
        # A hybrid CTC/attention run: the beam searches its attention rescoring reorders.
        **{f"{k}_test_wer": metrics[k]["wer"] for k in ("beam_search", "beam_search_lm")
           if k in metrics},
        "test_utterances": metrics["test_utterances"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("name", help="config name in pipelines/configs (without .yaml)")
    p.add_argument("--run-dir", help="default: runs/<name> (standard split only)")
    p.add_argument("--leave-out", nargs="+", metavar="SPEAKER",
                   help="leave-one-speaker-out folds for these speakers instead")
    # Anything else (--set key=value ...) goes to the pipeline; parse_known_args rather than
    # a REMAINDER positional, which would swallow this script's own options too.
    args, extra = p.parse_known_args()
    if args.leave_out:
        folds = {speaker: run_pipeline(
            args.name, ROOT / "runs" / f"{args.name}_loso_{speaker}",
            [*extra, "--set", f"data.test_speakers=[{speaker}]",
             "--set", f"name={args.name}_loso_{speaker}"]) for speaker in args.leave_out}
        wers = [fold["test_wer"] for fold in folds.values()]
        result = {"config": args.name, "split": "leave-one-speaker-out", "folds": folds,
                  "mean_test_wer": round(sum(wers) / len(wers), 5)}
        out = ROOT / "runs" / f"{args.name}_loso.json"
        row = (f"| {args.name} | leave one speaker out ({len(folds)} folds) | mean WER "
               f"{result['mean_test_wer']:.2%} | |")
    else:
        run = Path(args.run_dir or ROOT / "runs" / args.name)
        result = {"config": args.name, "split": "standard",
                  **run_pipeline(args.name, run, extra)}
        out = run / "benchmark.json"
        row = (f"| {args.name} | standard | WER {result['test_wer']:.2%}, utterance accuracy "
               f"{result['utterance_accuracy']:.2%} | {result['train_minutes']} min, "
               f"RTF {result['rtf']:.4f} |")
    # ru_maxrss of waited-for children is in KiB on Linux.
    result["peak_memory_gib"] = round(
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 2)
    result["machine"] = (f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                         f"Python {platform.python_version()}")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
