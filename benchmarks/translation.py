"""Full Multi30k benchmark: train, evaluate (sacreBLEU, beam 5), record time and memory.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.translation multi30k_de_en

Runs ``python -m pipelines.translation all`` for ``pipelines/configs/<name>.yaml`` in
``runs/<name>`` (resuming if interrupted) and writes ``runs/<name>/benchmark.json``: wall
time, peak resident memory of the pipeline process, training minutes, epochs and scores.
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("name", help="config name in pipelines/configs (without .yaml)")
    p.add_argument("--run-dir", help="default: runs/<name>")
    # Anything else (--set key=value ...) goes to the pipeline; parse_known_args rather than
    # a REMAINDER positional, which would swallow this script's own options too.
    args, extra = p.parse_known_args()
    run = Path(args.run_dir or ROOT / "runs" / args.name)
    command = [sys.executable, "-m", "pipelines.translation", "all",
               "--config", str(ROOT / "pipelines" / "configs" / f"{args.name}.yaml"),
               "--run-dir", str(run), *extra]
    start = time.time()
    code = subprocess.call(command, cwd=ROOT)
    wall = time.time() - start
    if code:
        return code
    # ru_maxrss of waited-for children is in KiB on Linux.
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    metrics = json.loads((run / "metrics.json").read_text())
    state = json.loads((run / "train_state.json").read_text())
    result = {
        "config": args.name, "wall_seconds_this_invocation": round(wall),
        "peak_memory_gib": round(peak_gib, 2),
        "train_minutes": round(state["train_seconds"] / 60, 1), "epochs": state["epoch"],
        "stop_reason": state["stop_reason"], "best_epoch": state["best_epoch"],
        "best_val_bleu": state["best"], "test_bleu": metrics["bleu"],
        "test_chrf": metrics["chrf"], "beam_size": metrics["beam_size"],
        "greedy_test_bleu": metrics["greedy"]["bleu"], "signature": metrics["signature"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"Python {platform.python_version()}",
    }
    (run / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
