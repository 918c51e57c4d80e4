"""Streaming benchmark: compute per chunk on one core and model sizes of the streaming
step (Keras, TFLite float32, int8 and float16), and with a trained run the streamed WER/CER.

    .venv/bin/python -m benchmarks.streaming                       # untrained weights
    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.streaming \
        --run-dir runs/fsdd_strings_streaming                      # after `all` and `export`

Without a trained run the model has the config's architecture and random weights: the
compute and the sizes do not depend on the weights, the transcripts would. Timing: each
step is timed alone (``time.perf_counter``) over ``--chunks`` chunks of noise after a
warm-up, with TensorFlow and LiteRT on one thread; the real-time factor is the median
step time over the chunk's duration. Writes ``streaming_benchmark.json`` into the run
directory (or prints it) and a Markdown table.

Emission delay (with a trained fsdd_strings run whose manifests have ``word_ends``,
which ``prepare`` writes, or, for a corpus of real sentences such as AN4, with
``--align-run``: an offline run of the same corpus whose model's CTC forced alignment
of each test transcript gives the end of each word): for each word of a correctly
transcribed test utterance, the audio time at which the chunk that emitted the word's last character had
fully arrived (or the end of the audio, for the chunks that finish a stream) minus the
time its speech ends in the audio. Compute time is not included (see per-chunk times).
Algorithmic latency: the chunk plus the model's look-ahead (the conv look-ahead in
feature frames and half an FFT window).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")  # one core, before TensorFlow loads
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from data_prep.audio_features import featurize  # noqa: E402
from data_prep.graph_features import GraphFeatures  # noqa: E402
from data_prep.manifest import read_manifest  # noqa: E402
from models.ctc_decoding import ctc_alignment, log_probs_and_lengths  # noqa: E402
from models.ctc_frames import frames_per_output  # noqa: E402
from models.ctc_streaming import NO_END  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.metrics import wer_cer  # noqa: E402
from pipelines.run_dir import RunDir  # noqa: E402
from pipelines.speech.config import SpeechConfig  # noqa: E402
from pipelines.speech.data import load_stats, vocabulary  # noqa: E402
from pipelines.speech.inference import in_batches, load_checkpoint  # noqa: E402
from pipelines.speech.stages import build_model  # noqa: E402
from pipelines.speech.streaming import (  # noqa: E402
    TFLITE_VARIANTS,
    GreedyPrefix,
    StreamStep,
    convert_to_tflite,
    export_step,
    file_blocks,
    final_search,
    stream_utterance,
    tflite_runner,
)


def step_of(cfg: SpeechConfig, run: RunDir | None) -> tuple[StreamStep, bool]:
    """The streaming step of the run's model, or of an untrained one; whether trained."""
    trained = run is not None and run.path("checkpoints", "best.keras").is_file()
    if trained:
        model, stats = load_checkpoint(run), load_stats(run, cfg.features)
    else:
        model = build_model(cfg, vocabulary(cfg, run))
        n = cfg.features.num_features
        stats = ((np.zeros(n, np.float32), np.ones(n, np.float32))
                 if cfg.features.normalization == "global" else None)
    return StreamStep(model, GraphFeatures(cfg.features, stats), cfg.streaming_frames()), trained


def time_steps(step: StreamStep, runner, chunks: int) -> dict:
    rng = np.random.default_rng(0)
    states, seconds = step.initial_states(), []
    for i in range(chunks + 10):
        pcm = (0.05 * rng.standard_normal((1, step.chunk_samples))).astype(np.float32)
        start = time.perf_counter()
        _, states = runner(pcm, i, NO_END, states)
        if i >= 10:  # the first steps trace or allocate
            seconds.append(time.perf_counter() - start)
    chunk_seconds = step.chunk_samples / step.features.cfg.sample_rate
    median, p95 = np.median(seconds), np.percentile(seconds, 95)
    return {"median_ms": round(1000 * median, 3), "p95_ms": round(1000 * p95, 3),
            "rtf": round(median / chunk_seconds, 4)}


def timed(search, seconds: list[float]):
    """``search``, appending the seconds of each call to ``seconds``."""
    def run(log_probs):
        start = time.perf_counter()
        text = search(log_probs)
        seconds.append(time.perf_counter() - start)
        return text

    return run


def word_final(ids: list[int], vocab) -> list[int]:
    """Positions in ``ids`` of each word's last label: a label with text that the end, a
    space, or the start of a new word (a SentencePiece unit with ``▁``) follows."""
    texts = [vocab.label_texts()[i] for i in ids]
    return [k for k, t in enumerate(texts)
            if t.strip() and (k + 1 == len(texts) or texts[k + 1].startswith(" "))]


def emission_delays(step: StreamStep, decoder: GreedyPrefix, vocab, entry: dict) -> list[float]:
    """Seconds from the end of each word to the emission of its last label."""
    last_chars = word_final(decoder.ids, vocab)
    chunk_seconds = step.chunk_samples / step.features.cfg.sample_rate
    delays = []
    for k, word_end in zip(last_chars, entry["word_ends"], strict=True):
        chunk = (decoder.frames[k] + step.top_lag) // step.top_frames
        emitted = min((chunk + 1) * chunk_seconds, entry["duration"])
        delays.append(emitted - word_end)
    return delays


def aligned_word_ends(align_run: RunDir, entries: list[dict]) -> None:
    """Set ``word_ends`` of each entry from the CTC forced alignment of its transcript by
    the (offline) model of ``align_run``: a word ends with the last frame of its last
    character, as a bidirectional model places it with the whole utterance in view."""
    cfg = load_config(SpeechConfig, align_run.path("config.yaml"), recorded=True)
    model, vocab = load_checkpoint(align_run), vocabulary(cfg, align_run)
    features = featurize([e["audio_filepath"] for e in entries], cfg.features,
                         load_stats(align_run, cfg.features), desc="features (alignment)",
                         speakers=[e.get("speaker") for e in entries])

    def log_probs(batch):
        scores, lengths = (np.asarray(t) for t in log_probs_and_lengths(model, batch))
        return [row[:n] for row, n in zip(scores, lengths, strict=True)]

    frame_seconds = cfg.features.hop_ms * frames_per_output(cfg.model.conv_layers,
                                                          cfg.model.conv_stride) / 1000
    for entry, scores in zip(entries, in_batches(log_probs, features, 32), strict=True):
        ids = vocab.encode(entry["text"])
        frames = ctc_alignment(scores, ids, vocab.blank_index)
        entry["word_ends"] = [min((frames[k] + 1) * frame_seconds, entry["duration"])
                              for k in word_final(ids, vocab)]


def lookahead_ms(cfg: SpeechConfig) -> float:
    """The model's algorithmic look-ahead past a chunk's end: conv look-ahead (in
    feature frames: lookahead per layer at each layer's frame rate) and the half FFT
    window a frame reaches past its centre."""
    m, f = cfg.model, cfg.features
    frames = sum(m.lookahead * m.conv_stride ** layer for layer in range(m.conv_layers))
    return frames * f.hop_ms + 1000 * (f.n_fft // 2) / f.sample_rate


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--config", default=str(ROOT / "pipelines" / "configs" /
                                           "fsdd_strings_streaming.yaml"))
    p.add_argument("--run-dir", help="a trained (and exported) run of the config")
    p.add_argument("--chunks", type=int, default=300, help="timed chunks per backend")
    p.add_argument("--limit", type=int, help="stream only the first N test utterances")
    p.add_argument("--align-run", help="an offline run of the same corpus whose model's CTC "
                                       "forced alignment gives the word ends (emission delay)")
    args = p.parse_args()
    cfg = load_config(SpeechConfig, args.config)
    run = RunDir(args.run_dir) if args.run_dir else None
    step, trained = step_of(cfg, run)
    result = {"config": args.config, "trained": trained, "chunk_ms": cfg.streaming.chunk_ms,
              "machine": f"{cpu_name()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "lookahead_ms": lookahead_ms(cfg),
              "algorithmic_latency_ms": cfg.streaming.chunk_ms + lookahead_ms(cfg),
              "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "step"
        export_step(step, saved)
        backends = {"keras": (step.keras_runner(), directory_bytes(saved))}
        for variant in TFLITE_VARIANTS:
            path = Path(tmp) / f"stream_{variant}.tflite"
            path.write_bytes(convert_to_tflite(saved, variant))
            backends[f"tflite_{variant}"] = (tflite_runner(path, step), path.stat().st_size)
        entries = read_manifest(run.path("data", "test.jsonl")) if trained else []
        entries = entries[:args.limit] if args.limit else entries
        if entries and args.align_run:
            aligned_word_ends(RunDir(args.align_run), entries)
            result["word_ends"] = f"CTC forced alignment by {args.align_run}"
        vocab = vocabulary(cfg, run)
        final = final_search(cfg, run, step) if entries else None
        result["final"] = cfg.streaming.final
        for name, (runner, size) in backends.items():
            row = {"bytes": size, **time_steps(step, runner, args.chunks)}
            if entries:
                hyps, greedy, delays, search_seconds = [], [], [], []
                for e in entries:
                    decoder = GreedyPrefix(step.blank_index)
                    hyps.append(stream_utterance(step, runner, file_blocks(
                        e["audio_filepath"], cfg.features, step.chunk_samples), vocab,
                        decoder=decoder, final=final and timed(final, search_seconds)))
                    greedy.append(decoder.text(vocab))
                    # The delays are the partials': the greedy prefix as it grows.
                    if greedy[-1] == e["text"] and "word_ends" in e:
                        delays += emission_delays(step, decoder, vocab, e)
                references = [e["text"] for e in entries]
                row.update(wer_cer(hyps, references))
                if final:
                    row.update({f"greedy_{k}": v for k, v in wer_cer(greedy, references).items()},
                               final_search_ms_median=round(1000 * np.median(search_seconds), 1),
                               final_search_ms_p95=round(1000 * np.percentile(search_seconds, 95),
                                                         1))
                if delays:
                    row.update(emission_delay_ms_median=round(1000 * np.median(delays), 1),
                               emission_delay_ms_p95=round(1000 * np.percentile(delays, 95), 1),
                               emission_delay_words=len(delays))
            result["backends"][name] = row
            print(f"[streaming benchmark] {name}: {row}", file=sys.stderr)
    text = json.dumps(result, indent=2)
    if run is not None:
        run.path("streaming_benchmark.json").write_text(text + "\n")
    print(text)
    print(f"| model (keras: the step as a SavedModel) | size | per chunk, median / p95 "
          f"(one core) | real-time factor | WER | CER | greedy WER | emission delay, median "
          f"/ p95 | final search, median / p95 |\n{'| --- ' * 9}|")
    for name, row in result["backends"].items():
        scores = (f"{row['wer']:.2%} | {row['cer']:.2%}" if "wer" in row else "- | -")
        greedy = f"{row['greedy_wer']:.2%}" if "greedy_wer" in row else "-"
        delay = (f"{row['emission_delay_ms_median']:.0f} / {row['emission_delay_ms_p95']:.0f} ms"
                 if "emission_delay_ms_median" in row else "-")
        search = (f"{row['final_search_ms_median']:.0f} / {row['final_search_ms_p95']:.0f} ms"
                  if "final_search_ms_median" in row else "-")
        print(f"| {name} | {row['bytes'] / 1e6:.2f} MB | {row['median_ms']:.2f} / "
              f"{row['p95_ms']:.2f} ms | {row['rtf']:.4f} | {scores} | {greedy} | {delay} | "
              f"{search} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
