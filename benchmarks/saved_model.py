"""The translation SavedModel (``python -m pipelines.translation export``): its size, its
speed through the ``translate`` signature, and whether it translates test2016 as
``evaluate`` did.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.saved_model \\
        --run-dir runs/translation_demo

Needs a run whose ``export`` and ``evaluate`` stages have run. Loads ``<run>/export`` with
``tf.saved_model.load`` (TensorFlow and tensorflow-text only, as a server would), then:
one sentence per call over the first ``--latency-sentences`` test sentences (median and
95th percentile milliseconds), and the whole test set in file order in calls of
``--batch`` sentences (sentences per second); its translations are compared with
``hyps/test.beam<N>.txt`` and scored with sacreBLEU. Uses ``--threads`` TensorFlow
threads (default 1: one core). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path


def directory_mib(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--latency-sentences", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import sacrebleu
    import tensorflow as tf
    import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    run = Path(args.run_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    source = (run / "data" / "test.src").read_text(encoding="utf-8").splitlines()
    references = (run / "data" / "test.tgt").read_text(encoding="utf-8").splitlines()
    expected = (run / "hyps" / f"test.beam{metrics['beam_size']}.txt").read_text(
        encoding="utf-8").splitlines()

    start = time.perf_counter()
    model = tf.saved_model.load(str(run / "export"))
    load_seconds = time.perf_counter() - start

    def translate(texts):
        return [t.decode("utf-8") for t in model.translate(tf.constant(texts)).numpy()]

    translate(source[:2])  # the first call traces nothing (the graph is saved) but warms up
    latencies = []
    for sentence in source[: args.latency_sentences]:
        start = time.perf_counter()
        translate([sentence])
        latencies.append(1000 * (time.perf_counter() - start))
    hyps, start = [], time.perf_counter()
    for i in range(0, len(source), args.batch):
        hyps += translate(source[i: i + args.batch])
    seconds = time.perf_counter() - start
    print(json.dumps({
        "run": str(run), "export_mib": directory_mib(run / "export"),
        "load_seconds": round(load_seconds, 2), "threads": args.threads,
        "beam_size": metrics["beam_size"],
        "one_sentence_ms": {"median": round(statistics.median(latencies), 1),
                            "p95": round(statistics.quantiles(latencies, n=20)[-1], 1),
                            "sentences": len(latencies)},
        "batched": {"batch": args.batch, "sentences": len(source),
                    "sentences_per_second": round(len(source) / seconds, 1)},
        "bleu": round(sacrebleu.corpus_bleu(hyps, [references]).score, 2),
        "evaluate_bleu": metrics["bleu"],
        "same_as_evaluate": sum(h == e for h, e in zip(hyps, expected, strict=True)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "versions": {"tensorflow": tf.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
