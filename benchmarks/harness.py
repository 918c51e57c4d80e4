"""Speed benchmark harness: machine peak, translation training and decoding, speech.

    PIPELINES_DATA_DIR=../shared/data python -m benchmarks.harness   # -> runs/benchmark.json
    python -m benchmarks.harness --parts matmul,train --train-steps 50     # a subset
    python -m benchmarks.harness --quick --out /tmp/bench.json            # minutes, tiny

Everything runs in this one process on the real data of the data directory, and the
results are printed as a table and written as JSON (``--out``). The parts
(``--parts``, comma-separated; default ``matmul,train,decode,speech``):

``matmul``
    The machine's limit: float32 GFLOP/s of a large ``tf.linalg.matmul`` (all threads,
    timed after warm-up).
``train``
    Translation training throughput in steady state: real (non-padding) target tokens
    per second over ``--train-steps`` steps after ``--warmup-steps`` warm-up steps
    (tracing excluded, no validation). "ours": the config's model from
    ``pipelines.translation.stages.build_model`` on the token-bucketed batches of
    ``batch_by_tokens`` from TFRecord shards, trained with the trainer's own compiled
    loop (``pipelines.train_steps``): the input pipeline and loop of ``train``.
    "reference": the textbook Keras recipe (the TensorFlow "NMT with attention"
    tutorial: embeddings, bidirectional GRU encoder, GRU decoder, one-head
    ``MultiHeadAttention`` over the decoder outputs, ``Dense`` to the vocabulary) with
    as many parameters as ours, on the same subword data, every sentence padded to one
    fixed length, batches of 64 sentences, ``model.fit`` on NumPy arrays with a masked
    sparse cross-entropy. Our throughput is also given in model FLOP/s
    (``flops_per_target_token``) as a fraction of the matmul peak.
``train_epoch`` (optional, long)
    One full training epoch of each model from scratch, then validation BLEU (greedy;
    ours through ``translate_texts``, the reference through its own batched greedy loop).
``decode``
    Sentences per second on test2016 for our compiled batched greedy and beam search
    (``models.decoding.Translator``), against the textbook loop: one sentence at a time,
    an eager Python loop calling ``model.encode`` once and ``model.decoder.step`` once per
    output token, argmax until EOS or the length budget. The loop uses the same model
    (``--run-dir``'s ``checkpoints/best.keras`` if there is one, else a freshly built one)
    and runs on the first ``--reference-sentences`` sentences; its outputs are compared
    token by token with our batched greedy outputs for the same sentences.
``speech``
    Feature extraction speed (seconds of audio per second, ``extract_features``),
    training throughput of the speech config's model (input feature frames per second,
    steady state as above) and the inference real-time factor (reading audio, features
    and greedy CTC decoding, batched, per second of audio).

Run it as a module from the repository root (``-m``): it imports the other ``benchmarks``
modules (``timing``, ``translation_speed``, ``translation_reference``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

from pipelines.quiet import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.timing import matmul_peak, timed_loop, write_results  # noqa: E402
from benchmarks.translation_reference import train_epoch, train_reference  # noqa: E402
from benchmarks.translation_speed import (  # noqa: E402
    TokenStats,
    decode,
    encode_pairs,
    flops_per_target_token,
    load_decode_model,
    load_translation_data,
    train_ours,
)
from pipelines.config import load_config  # noqa: E402
from pipelines.run_dir import RunDir  # noqa: E402
from pipelines.translation.config import TranslationConfig  # noqa: E402
from pipelines.translation.stages import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "pipelines" / "configs"
DEFAULT_CONFIG = CONFIGS / "translation_demo.yaml"
DEFAULT_SPEECH_CONFIG = CONFIGS / "fsdd_digits.yaml"
PARTS = ("matmul", "train", "train_epoch", "decode", "speech")
DEFAULT_PARTS = "matmul,train,decode,speech"


# -- speech --------------------------------------------------------------------------------


def speech(cfg_path, overrides, data_dir, utterances: int | None, test_utterances: int | None,
           warmup: int, steps: int) -> dict:
    """Feature extraction speed, training frames per second and inference real-time factor."""
    from data_prep.audio_features import extract_features, global_stats, normalize_features
    from data_prep.char_vocabulary import normalize_transcript
    from data_prep.speech_dataset import make_training_dataset as speech_dataset
    from models.ctc_decoding import CTCDecoder
    from models.ctc_frames import ctc_frames_needed, min_input_frames
    from pipelines.speech.config import SpeechConfig
    from pipelines.speech.data import (
        fitting,
        load_entries,
        vocabulary,
    )
    from pipelines.speech.inference import transcribe_files
    from pipelines.speech.stages import build_model as build_speech_model

    cfg = load_config(SpeechConfig, cfg_path, overrides)
    vocab = vocabulary(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        entries = load_entries(cfg, RunDir(tmp), data_dir)
        train, test = entries["train"][:utterances], entries["test"][:test_utterances]
        audio = sum(e["duration"] for e in train)
        extract_features([train[0]["audio_filepath"]], cfg.features)  # first-call set-up
        start = time.perf_counter()
        raw = extract_features([e["audio_filepath"] for e in train], cfg.features)
        seconds = time.perf_counter() - start
        result = {"config": str(cfg_path), "features": {
            "utterances": len(train), "audio_seconds": round(audio, 1), "seconds": round(seconds, 3),
            "audio_seconds_per_second": round(audio / seconds, 1)}}
        stats = global_stats(raw) if cfg.features.normalization == "global" else None
        features = normalize_features(raw, cfg.features, stats,
                                      [e.get("speaker") for e in train])
        labels = [vocab.encode(normalize_transcript(e["text"], cfg.data.lowercase,
                                                   cfg.data.remove_punctuation))
                  for e in train]
        # As the pipeline's load_labelled: drop utterances too short for their transcript.
        needed = [ctc_frames_needed(y) for y in labels]
        keep, _ = fitting("train", train, [len(f) for f in features], needed, cfg)
        features, labels, needed = ([x for x, k in zip(xs, keep) if k]
                                    for xs in (features, labels, needed))
        min_lengths = [min_input_frames(n, cfg.model.conv_layers, cfg.model.conv_stride)
                       for n in needed]
        t = cfg.training
        keras.utils.set_random_seed(t.seed)
        model = build_speech_model(cfg, vocab)
        augment = cfg.augment if cfg.augment.active else None

        def dataset():
            return speech_dataset(features, labels, t.batch_size, augment, seed=t.seed,
                                  min_lengths=min_lengths).repeat()

        counts = [(int(np.sum(x["feature_lengths"])), int(np.prod(x["features"].shape[:2])),
                   int(x["features"].shape[0])) for x, _ in dataset().take(warmup + steps)][warmup:]
        seconds = timed_loop(model, dataset, warmup, steps)
        frames, padded, utts = (sum(c[i] for c in counts) for i in range(3))
        hop = cfg.features.hop_ms / 1000
        result["train"] = {
            "steps": steps, "seconds": round(seconds, 3), "frames": frames, "utterances": utts,
            "frames_per_second": round(frames / seconds, 1),
            "padded_frames_per_second": round(padded / seconds, 1),
            "audio_seconds_per_second": round(frames * hop / seconds, 1),
            "parameters": model.count_params(), "batch_size": t.batch_size}
        decoder = CTCDecoder(model, "greedy")
        paths = [e["audio_filepath"] for e in test]
        test_audio = sum(e["duration"] for e in test)
        speakers = [e.get("speaker") for e in test]
        transcribe_files(decoder, vocab, paths[:1], cfg, stats, speakers[:1])  # traces the graph
        _, times = transcribe_files(decoder, vocab, paths, cfg, stats, speakers)
        total = times["feature_seconds"] + times["decode_seconds"]
        result["inference"] = {
            "strategy": "greedy", "utterances": len(test), "audio_seconds": round(test_audio, 1),
            "feature_seconds": round(times["feature_seconds"], 3),
            "decode_seconds": round(times["decode_seconds"], 3),
            "rtf": round(total / test_audio, 5)}
    return result


# -- the command ---------------------------------------------------------------------------


def table(results: dict) -> str:
    """The headline numbers as a plain-text table."""
    rows = []

    def add(section, name, value, unit=""):
        rows.append((section, name, f"{value:,}" if isinstance(value, (int, float)) else
                     str(value), unit))

    if "matmul" in results:
        m = results["matmul"]
        add("machine", f"float32 matmul {m['n']}x{m['n']}", m["gflops"], "GFLOP/s (best)")
    if "model" in results:
        m = results["model"]
        add("model", "parameters (ours)", m["parameters"])
        add("model", "training FLOPs per target token", m["flops_per_target_token"]["training"])
    if "train" in results:
        tr = results["train"]
        add("train", "ours", tr["ours"]["target_tokens_per_second"], "target tokens/s")
        add("train", "reference (textbook)", tr["reference"]["target_tokens_per_second"],
            "target tokens/s")
        add("train", "speedup", tr["speedup"], "x")
        add("train", "parameters ours / reference",
            f"{tr['ours']['parameters']:,} / {tr['reference']['parameters']:,}")
        if tr["ours"].get("fraction_of_peak") is not None:
            add("train", "ours, model FLOP/s", tr["ours"]["model_gflops"], "GFLOP/s")
            add("train", "ours, fraction of matmul peak", f"{tr['ours']['fraction_of_peak']:.1%}")
    if "train_epoch" in results:
        te = results["train_epoch"]
        for side in ("ours", "reference"):
            add("train_epoch", f"{side}: one epoch", te[side]["seconds"], "s")
            add("train_epoch", f"{side}: val BLEU (greedy)", te[side]["val_bleu"])
    if "decode" in results:
        de = results["decode"]
        beam = next((k for k in de if k.startswith("beam") and k != "beam_speedup"), None)
        add("decode", "ours, greedy", de["greedy"]["sentences_per_second"], "sentences/s")
        if beam:
            add("decode", f"ours, {beam}", de[beam]["sentences_per_second"], "sentences/s")
        tb = de["textbook_greedy"]
        add("decode", "textbook greedy loop", tb["sentences_per_second"], "sentences/s")
        add("decode", "greedy speedup", de["greedy_speedup"], "x")
        if beam:
            add("decode", f"{beam} speedup", de["beam_speedup"], "x")
        add("decode", "greedy mismatches", f"{tb['mismatches_vs_batched_greedy']} of "
            f"{tb['sentences']}")
        add("decode", "model", de["model"])
    if "speech" in results:
        s = results["speech"]
        add("speech", "feature extraction", s["features"]["audio_seconds_per_second"],
            "audio s/s")
        add("speech", "training", s["train"]["frames_per_second"], "frames/s")
        add("speech", "inference real-time factor", s["inference"]["rtf"])
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip()
                     for a, b, c, d in rows)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--parts", default=DEFAULT_PARTS,
                   help=f"comma-separated, of {', '.join(PARTS)} (default {DEFAULT_PARTS})")
    p.add_argument("--config", help="translation config (default: the --run-dir's config.yaml, "
                   f"else {DEFAULT_CONFIG.relative_to(ROOT)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a translation config field")
    p.add_argument("--speech-config", default=str(DEFAULT_SPEECH_CONFIG))
    p.add_argument("--speech-set", dest="speech_overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a speech config field")
    p.add_argument("--run-dir", help="a trained translation run: its tokenizers, and its "
                   "checkpoints/best.keras for the decode part (default: a fresh model)")
    p.add_argument("--data-dir", help="dataset directory (default: $PIPELINES_DATA_DIR)")
    p.add_argument("--out", default="runs/benchmark.json",
                   help="write the results as JSON to this file (default: %(default)s)")
    p.add_argument("--matmul-size", type=int, default=4096)
    p.add_argument("--matmul-seconds", type=float, default=3.0, help="timed matmul seconds")
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed training steps")
    p.add_argument("--train-steps", type=int, default=100, help="timed training steps")
    p.add_argument("--decode-sentences", type=int, default=None,
                   help="test2016 sentences for batched decoding (default: all 1000)")
    p.add_argument("--reference-sentences", type=int, default=100,
                   help="sentences for the textbook greedy loop")
    p.add_argument("--limit-train", type=int, default=None,
                   help="use only the first N translation training pairs")
    p.add_argument("--limit-val", type=int, default=None,
                   help="use only the first N validation pairs (train_epoch's BLEU)")
    p.add_argument("--speech-utterances", type=int, default=None,
                   help="training utterances for feature and training speed (default: all)")
    p.add_argument("--speech-test-utterances", type=int, default=None,
                   help="test utterances for the real-time factor (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke run: 2 warm-up + 3 timed steps, 500 training "
                   "and 100 validation pairs, 40 test sentences, 5 for the loop, a 1024 matmul "
                   "for 0.5 s, 64 + 16 utterances")
    args = p.parse_args(argv)
    if args.quick:
        args.matmul_size, args.matmul_seconds, args.warmup_steps, args.train_steps = 1024, 0.5, 2, 3
        args.limit_train = args.limit_train or 500
        args.limit_val = args.limit_val or 100
        args.decode_sentences = args.decode_sentences or 40
        args.reference_sentences = min(args.reference_sentences, 5)
        args.speech_utterances = args.speech_utterances or 64
        args.speech_test_utterances = args.speech_test_utterances or 16
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.warmup_steps < 1 or args.train_steps < 1:
        p.error("--warmup-steps and --train-steps must be at least 1")
    return args


def run(args) -> dict:
    data_dir = args.data_dir or os.environ.get("PIPELINES_DATA_DIR")
    # Bucketed datasets have unknown length, so Keras warns at the end of every epoch.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    clock = {"start": time.perf_counter()}

    def lap(name):
        now = time.perf_counter()
        results["part_seconds"][name] = round(now - clock["start"], 1)
        clock["start"] = now
        print(f"[benchmark] {name} done ({results['part_seconds'][name]} s)", file=sys.stderr)

    results = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "cpu_count": os.cpu_count(), "python": platform.python_version(),
                           "tensorflow": tf.__version__, "keras": keras.__version__},
               "parts": args.parts,
               "settings": {k: v for k, v in vars(args).items() if k not in ("parts",)},
               "part_seconds": {}}
    if "matmul" in args.parts:
        results["matmul"] = matmul_peak(args.matmul_size, args.matmul_seconds)
        lap("matmul")
    if {"train", "train_epoch", "decode"} & set(args.parts):
        config = args.config
        if config is None:
            run_config = Path(args.run_dir or "", "config.yaml")
            config = run_config if args.run_dir and run_config.is_file() else DEFAULT_CONFIG
        overrides = list(args.overrides)
        if args.limit_train:
            overrides.append(f"data.limit_train={args.limit_train}")
        if args.limit_val:
            overrides.append(f"data.limit_val={args.limit_val}")
        cfg = load_config(TranslationConfig, config, overrides, recorded=config != args.config)
        data = load_translation_data(cfg, args.run_dir, data_dir)
        src, tgt = encode_pairs(data, data.train)
        stats = TokenStats.from_lengths(list(map(len, src)), list(map(len, tgt)))
        model_cfg = dataclasses.replace(cfg.model, source_vocab_size=data.source_tok.vocab_size,
                                        target_vocab_size=data.target_tok.vocab_size)
        keras.utils.set_random_seed(cfg.training.seed)
        params = build_model(cfg, data.source_tok, data.target_tok).count_params()
        results["translation"] = {
            "config": str(config), "overrides": overrides, "train_pairs": len(data.train),
            "tokenizer": data.tokenizer_from,
            "vocab_size": {"source": data.source_tok.vocab_size,
                           "target": data.target_tok.vocab_size}}
        results["model"] = {"parameters": params, "architecture": dataclasses.asdict(model_cfg),
                            "token_stats": dataclasses.asdict(stats),
                            "flops_per_target_token": flops_per_target_token(model_cfg, stats)}
        lap("translation_data")
        if "train" in args.parts:
            with tempfile.TemporaryDirectory() as shards:
                ours, _ = train_ours(data, args.warmup_steps, args.train_steps, shards)
            reference = train_reference(data, params, args.warmup_steps, args.train_steps)
            flops = results["model"]["flops_per_target_token"]["training"]
            ours["model_gflops"] = round(ours["target_tokens_per_second"] * flops / 1e9, 2)
            peak = results.get("matmul", {}).get("gflops")
            ours["fraction_of_peak"] = round(ours["model_gflops"] / peak, 4) if peak else None
            results["train"] = {
                "warmup_steps": args.warmup_steps, "timed_steps": args.train_steps,
                "ours": ours, "reference": reference,
                "speedup": round(ours["target_tokens_per_second"]
                                 / reference["target_tokens_per_second"], 2)}
            lap("train")
        if "train_epoch" in args.parts:
            with tempfile.TemporaryDirectory() as shards:
                results["train_epoch"] = train_epoch(data, params, shards)
            lap("train_epoch")
        if "decode" in args.parts:
            model, model_from = load_decode_model(data, args.run_dir)
            results["decode"] = decode(data, model, model_from, args.decode_sentences,
                                       args.reference_sentences)
            lap("decode")
    if "speech" in args.parts:
        results["speech"] = speech(args.speech_config, args.speech_overrides, data_dir,
                                   args.speech_utterances, args.speech_test_utterances,
                                   args.warmup_steps, args.train_steps)
        lap("speech")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(table(results))
    if args.out:
        write_results(args.out, results, "benchmark")
    return 0


if __name__ == "__main__":
    sys.exit(main())
