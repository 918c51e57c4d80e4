"""Memory of a corpus larger than memory: translation ``prepare`` + training steps on a
synthetic corpus of millions of pairs, against the same on Multi30k's 29,000.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.large_corpus \\
        --pairs 3000000 29000 --steps 1000

For each size, in a temporary directory that is removed afterwards (``--keep`` keeps it):
the Multi30k De->En training pairs shuffled and repeated to ``--pairs`` pairs (plain text
files, as ``data.corpus: files`` reads them; validation and test are Multi30k's), then

1. ``python -m pipelines.translation prepare`` with ``translation_demo.yaml`` (its
   SentencePiece sample, tokenization and TFRecord shards), in its own process;
2. ``--steps`` training steps of the demo model on those shards through the ``train``
   stage's input pipeline and compiled loop (``pipelines.translation.data.training_batches``
   and ``benchmarks.timing.trainer_pass``), in its own process (``--train-only``; the stage itself would
   train whole epochs, 59,000 steps at 3M pairs).

Each process's peak resident memory comes from ``os.wait4`` (its own ``ru_maxrss``).
Writes ``runs/large_corpus.json`` and prints a Markdown table row per size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pipelines" / "configs" / "translation_demo.yaml"


def make_corpus(pairs: int, directory: Path, data_dir) -> dict:
    """Multi30k De->En train shuffled and repeated to ``pairs`` pairs, written a block at a
    time; the ``data.paths`` of a ``files`` corpus with Multi30k's val and test."""
    from data_prep.multi30k import multi30k_file
    from data_prep.parallel_corpus import read_parallel

    train = read_parallel(multi30k_file("train", "de", data_dir),
                          multi30k_file("train", "en", data_dir))
    rng = random.Random(0)
    order = list(range(len(train)))
    paths = {"train": [str(directory / "train.de"), str(directory / "train.en")]}
    with open(paths["train"][0], "w", encoding="utf-8") as de, \
            open(paths["train"][1], "w", encoding="utf-8") as en:
        written = 0
        while written < pairs:
            rng.shuffle(order)
            block = order[: pairs - written]
            de.write("".join(train.source[i] + "\n" for i in block))
            en.write("".join(train.target[i] + "\n" for i in block))
            written += len(block)
    for split, name in (("val", "val"), ("test", "test2016")):
        paths[split] = [str(multi30k_file(name, lang, data_dir)) for lang in ("de", "en")]
    return paths


def run_measured(command: list[str]) -> dict:
    """Run ``command``; its wall time and peak resident memory (GiB)."""
    start = time.time()
    process = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed: {' '.join(command)}")
    # ru_maxrss is in KiB on Linux.
    return {"seconds": round(time.time() - start, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3)}


def train_only(run_dir: Path, steps: int) -> None:
    """``steps`` training steps on the prepared shards of ``run_dir``, as ``train`` runs
    them (this process is what ``run_measured`` measures)."""
    from benchmarks.timing import trainer_pass
    from data_prep.pair_shards import verified_shards
    from pipelines.config import load_config
    from pipelines.run_dir import RunDir
    from pipelines.translation.config import TranslationConfig
    from pipelines.translation.data import load_tokenizers, training_batches
    from pipelines.translation.stages import build_model

    run = RunDir(run_dir)
    cfg = load_config(TranslationConfig, run.path("config.yaml"), recorded=True)
    source_tok, target_tok = load_tokenizers(run)
    shards = verified_shards(run.path("data"), "train")
    model = build_model(cfg, source_tok, target_tok)
    # Repeated: a small corpus has fewer than ``steps`` batches per epoch.
    times = trainer_pass(model, lambda: training_batches(cfg, shards, cfg.training.seed).repeat(),
                         limit=steps)
    if len(times) != steps:
        raise SystemExit(f"expected {steps} steps, got {len(times)}")


def measure(pairs: int, steps: int, keep: bool) -> dict:
    data_dir = os.environ.get("PIPELINES_DATA_DIR")
    tmp = Path(tempfile.mkdtemp(prefix="large_corpus_"))
    try:
        start = time.time()
        paths = make_corpus(pairs, tmp, data_dir)
        result = {"pairs": pairs, "corpus_seconds": round(time.time() - start, 1),
                  "corpus_mib": round(sum(Path(p).stat().st_size for p in paths["train"])
                                      / 2**20, 1)}
        run_dir = tmp / "run"
        result["prepare"] = run_measured([
            sys.executable, "-m", "pipelines.translation", "prepare", "--config", str(CONFIG),
            "--run-dir", str(run_dir), "--set", "data.corpus=files",
            "--set", f"data.paths={json.dumps(paths)}"])
        report = json.loads((run_dir / "data" / "report.json").read_text())
        result["shards"] = report["train"]["shards"]
        result["shard_mib"] = round(sum(p.stat().st_size for p in (run_dir / "data").glob(
            "train-*.tfrecord")) / 2**20, 1)
        result["train"] = run_measured([sys.executable, "-m", "benchmarks.large_corpus",
                                        "--train-only", str(run_dir), "--steps", str(steps)])
        result["train"]["steps"] = steps
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--pairs", type=int, nargs="+", default=[3_000_000, 29_000])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")
    p.add_argument("--out", default=str(ROOT / "runs" / "large_corpus.json"))
    p.add_argument("--train-only", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.train_only:
        train_only(Path(args.train_only), args.steps)
        return 0
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, Python "
                          f"{platform.python_version()}",
               "config": str(CONFIG), "sizes": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for pairs in args.pairs:  # the file is rewritten after each size: no result is lost
        results["sizes"].append(measure(pairs, args.steps, args.keep))
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    for r in results["sizes"]:
        print(f"| {r['pairs']:,} pairs ({r['corpus_mib']} MiB) | prepare {r['prepare']['seconds']} s,"
              f" {r['prepare']['peak_rss_gib']} GiB | {r['shards']} shards, {r['shard_mib']} MiB |"
              f" {r['train']['steps']} steps {r['train']['seconds']} s, "
              f"{r['train']['peak_rss_gib']} GiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
