"""The speech stages: prepare, train, evaluate, transcribe and report."""

from __future__ import annotations

import dataclasses
import shutil
import sys

import numpy as np

from data_prep import fsdd
from data_prep.audio_features import AudioError, extract_features, global_stats, normalize
from data_prep.char_vocabulary import CharVocabulary, VocabularyError, normalize_transcript
from data_prep.file_io import atomic_savez, atomic_write_json, write_lines
from data_prep.manifest import ManifestError, read_manifest, write_manifest
from data_prep.speech_dataset import make_training_dataset
from models.ctc_decoding import CTCDecoder, ctc_frames_needed
from models.ctc_recognizer import CTCRecognizer
from pipelines import cli, trainer
from pipelines.metrics import wer_cer, wer_cer_by_group
from pipelines.reports.notebooks import ReportError, report_stage
from pipelines.run_dir import fingerprint
from pipelines.speech.config import SPLITS, SpeechConfig
from pipelines.speech.data import (
    input_signature,
    load_entries,
    load_labelled,
    load_stats,
    min_input_frames,
    vocabulary,
)
from pipelines.speech.inference import load_recognizer, transcribe_features, transcribe_files

# Translation's training fields: batches here are sized in utterances, and the CTC loss
# has no label smoothing.
UNUSED_TRAINING_FIELDS = ("batch_tokens", "label_smoothing")
TRAINING_SPLITS = ("train", "val")  # test features are computed (and timed) by evaluate


def prepare(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("prepare", cfg.data, cfg.features,
                     cfg.strings if cfg.data.corpus == "fsdd_strings" else None,
                     input_signature(cfg, ctx.data_dir))
    if not ctx.start("prepare", fp, run.path("data")):
        return
    # New data or features: what was trained on the old ones must not be reused.
    run.invalidate("prepare", "train", "evaluate")
    shutil.rmtree(run.path("data", "audio"), ignore_errors=True)
    entries = load_entries(cfg, run, ctx.data_dir)
    vocab = vocabulary(cfg)
    report = {"corpus": cfg.data.corpus, "vocabulary_size": vocab.size,
              "blank_index": vocab.blank_index}
    for split in SPLITS:
        limit = getattr(cfg.data, f"limit_{split}")
        items = entries[split][:limit] if limit is not None else entries[split]
        for item in items:
            item["text"] = normalize_transcript(item["text"], cfg.data.lowercase,
                                                cfg.data.remove_punctuation)
            vocab.encode(item["text"], where=item["audio_filepath"])
        if not items:
            raise ManifestError(f"{cfg.data.corpus}: split '{split}' has no utterances")
        entries[split] = items
        write_manifest(run.path("data", f"{split}.jsonl"), items)
        report[split] = {"utterances": len(items),
                         "hours": round(sum(e["duration"] for e in items) / 3600, 3),
                         "speakers": len({e.get("speaker") for e in items})}
    def paths(split):
        return [e["audio_filepath"] for e in entries[split]]

    copies = len(cfg.data.speed_perturbation)
    print(f"[prepare] computing the features of {len(paths('train'))} train utterances"
          + (f" x {copies} speeds" if copies > 1 else "") + f" and {len(paths('val'))} val",
          flush=True)  # minutes for a large corpus, and no progress bar in a log file
    raw = {"val": extract_features(paths("val"), cfg.features, desc="features val"), "train": []}
    # Copy-major order: load_labelled repeats the manifest once per factor to match.
    for speed in cfg.data.speed_perturbation:
        raw["train"] += extract_features(paths("train"), cfg.features, speed=speed,
                                         desc=f"features train (speed {speed})")
    report["train"]["speed_perturbation"] = cfg.data.speed_perturbation
    stats = None
    if cfg.features.normalization == "global":
        stats = global_stats(raw["train"])
        atomic_savez(run.path("features", "stats.npz"), mean=stats[0], std=stats[1])
    for split in TRAINING_SPLITS:
        features = [normalize(f, cfg.features, stats) for f in raw[split]]
        atomic_savez(run.path("features", f"{split}.npz"), features=np.concatenate(features),
                     lengths=np.array([len(f) for f in features]))
    atomic_write_json(run.path("data", "report.json"), report)
    run.mark_done("prepare", fp)
    print("[prepare] " + ", ".join(
        f"{s} {report[s]['utterances']} utterances ({report[s]['hours']:.2f} h)" for s in SPLITS)
        + f"; {cfg.features.num_features} {cfg.features.kind} features")


def build_model(cfg: SpeechConfig, vocab: CharVocabulary) -> CTCRecognizer:
    model_cfg = dataclasses.replace(cfg.model, num_features=cfg.features.num_features,
                                    vocab_size=vocab.size, blank_index=vocab.blank_index)
    # The model computes its CTC loss itself (no ``loss`` to compile with).
    return trainer.build_and_compile(CTCRecognizer(**dataclasses.asdict(model_cfg)), cfg.training)


def train(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    # Checkpoints depend on everything but the stopping criteria, so raising
    # training.epochs or max_minutes continues a finished run instead of restarting it.
    training = trainer.without_unused(cfg.training, UNUSED_TRAINING_FIELDS)
    checkpoint_fp = fingerprint("train", run.require("prepare", "train"), cfg.model,
                                cfg.augment, trainer.resumable_config(training))
    fp = fingerprint(checkpoint_fp, training)
    if not ctx.start("train", fp, run.path("checkpoints", "best.keras")):
        return
    if ctx.force:
        trainer.discard_checkpoints(run)
    vocab, t = vocabulary(cfg), cfg.training
    train_x, train_y, train_skipped = load_labelled(run, "train", vocab, cfg)
    val_x, val_y, val_skipped = load_labelled(run, "val", vocab, cfg)
    val_text = [vocab.decode(y) for y in val_y]
    augment = cfg.augment if cfg.augment.active else None
    # Time stretching keeps every utterance long enough for CTC to emit its transcript.
    min_lengths = [min_input_frames(ctc_frames_needed(y), cfg.model) for y in train_y]

    def train_dataset(epoch):
        return make_training_dataset(train_x, train_y, t.batch_size, augment, seed=t.seed + epoch,
                                     min_lengths=min_lengths)

    val_dataset = make_training_dataset(val_x, val_y, t.batch_size, shuffle=False)
    decoders = {}

    def validate(model):
        # One compiled decoder per model object (a resumed run loads a new one).
        if id(model) not in decoders:
            decoders[id(model)] = CTCDecoder(model, "greedy")
        hyps = transcribe_features(decoders[id(model)], vocab, val_x, cfg.decoding.batch_size)
        return {"val_wer": wer_cer(hyps, val_text)["wer"]}

    state = trainer.train(
        run, lambda: build_model(cfg, vocab), train_dataset, val_dataset, validate,
        trainer.ValidationMetric("val_wer", higher_is_better=False), t, checkpoint_fp,
    )
    run.mark_done("train", fp, best_val_wer=state["best"], epochs=state["epoch"],
                  train_seconds=state["train_seconds"], skipped_train=train_skipped,
                  skipped_val=val_skipped)


def evaluate(ctx: cli.Context) -> None:
    """Test WER/CER and real-time factor. Test features are not cached: computing them
    from the audio is part of the inference time being measured."""
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("evaluate", run.require("train", "evaluate"), cfg.decoding)
    if not ctx.start("evaluate", fp, run.path("metrics.json")):
        return
    vocab, stats = vocabulary(cfg), load_stats(run, cfg.features)
    entries = read_manifest(run.path("data", "test.jsonl"))
    paths = [e["audio_filepath"] for e in entries]
    references = [e["text"] for e in entries]
    audio_seconds = sum(e["duration"] for e in entries)
    results = {}
    for strategy in dict.fromkeys([cfg.decoding.strategy, "greedy"]):
        decoder = load_recognizer(cfg, run, strategy)
        # Warm-up on one file: tracing the graph is a one-off cost, not inference time.
        transcribe_files(decoder, vocab, paths[:1], cfg, stats)
        hyps, seconds = transcribe_files(decoder, vocab, paths, cfg, stats)
        write_lines(run.path("hyps", f"test.{strategy}.txt"), hyps)
        total = seconds["feature_seconds"] + seconds["decode_seconds"]
        results[strategy] = {
            **wer_cer(hyps, references), "strategy": strategy,
            "rtf": round(total / audio_seconds, 5),
            **{k: round(v, 2) for k, v in seconds.items()},
            "per_speaker": wer_cer_by_group(hyps, references,
                                     [e.get("speaker", "unknown") for e in entries]),
            "per_length": wer_cer_by_group(hyps, references,
                                           [len(r.split()) for r in references]),
        }
    main = results[cfg.decoding.strategy]
    metrics = {**main, "test_utterances": len(entries),
               "test_audio_seconds": round(audio_seconds, 1),
               "beam_width": cfg.decoding.beam_width,
               "rtf_definition": "wall seconds to read audio, compute features and decode, "
                                 "per second of audio (batched, this machine)",
               "greedy": {k: v for k, v in results["greedy"].items() if not k.startswith("per_")}}
    atomic_write_json(run.path("metrics.json"), metrics)
    run.mark_done("evaluate", fp)
    print(f"[evaluate] test WER {main['wer']:.2%} CER {main['cer']:.2%} utterance accuracy "
          f"{main['utterance_accuracy']:.2%} ({main['strategy']}); greedy WER "
          f"{results['greedy']['wer']:.2%}; real-time factor {main['rtf']:.4f}")


def transcribe(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    run.require("train", "transcribe")
    decoder = load_recognizer(cfg, run, cfg.decoding.strategy)
    vocab, stats = vocabulary(cfg), load_stats(run, cfg.features)
    for lines in cli.input_batches(ctx.input):
        paths = [line.strip() for line in lines]
        # One output line per input line: a blank line gives a blank transcript.
        todo = [i for i, path in enumerate(paths) if path]
        texts, _ = transcribe_files(decoder, vocab, [paths[i] for i in todo], cfg, stats)
        result = [""] * len(paths)
        for i, text in zip(todo, texts, strict=True):
            result[i] = text
        for text in result:
            print(text)
        sys.stdout.flush()  # typed input: each transcript as soon as it is ready


def report(ctx: cli.Context) -> None:
    """Execute notebooks/speech_report.ipynb for this run into ``report/``."""
    report_stage(ctx, "speech_report")


# Besides cli.USER_ERRORS, the errors reported as one line (no traceback).
USER_ERRORS = (AudioError, ManifestError, VocabularyError, fsdd.FSDDError, ReportError)
STAGES = {"prepare": prepare, "train": train, "evaluate": evaluate, "transcribe": transcribe,
          "report": report}
