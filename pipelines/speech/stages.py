"""The speech stages: prepare, train, evaluate, transcribe, stream, export and report."""

from __future__ import annotations

import dataclasses
import shutil
import sys

import numpy as np
import tensorflow as tf

from data_prep import fsdd
from data_prep.audio_features import AudioError, extract_features, normalize_features
from data_prep.char_vocabulary import VocabularyError, normalize_transcript
from data_prep.file_io import atomic_savez, atomic_write_bytes, atomic_write_json, write_lines
from data_prep.graph_features import GraphFeatures
from data_prep.manifest import ManifestError, correct_durations, read_manifest, write_manifest
from data_prep.piece_vocabulary import Vocabulary, train_units
from data_prep.speech_dataset import make_training_dataset
from data_prep.subword_tokenizer import TokenizerError
from data_prep.synthetic_voices import SynthesisError, espeak_ng, make_synthetic_speech
from models.ctc_attention_recognizer import CTCAttentionRecognizer
from models.ctc_decoding import CTCDecoder
from models.ctc_recognizer import CTCRecognizer
from pipelines import cli, trainer
from pipelines.config import ConfigError
from pipelines.metrics import wer_cer, wer_cer_by_group
from pipelines.report_stage import ReportError, report_stage
from pipelines.run_dir import fingerprint
from pipelines.speech import STAGE_NAMES
from pipelines.speech.config import SPLITS, SpeechConfig
from pipelines.speech.data import (
    input_signature,
    load_entries,
    load_labelled,
    load_stats,
    vocabulary,
)
from pipelines.speech.inference import (
    export_recognizer,
    load_recognizer,
    transcribe_features,
    transcribe_files,
)
from pipelines.speech.language_model import configured_decoder, evaluation_decoders
from pipelines.speech.shards import streaming_dataset, train_shards, write_train_shards
from pipelines.speech.streaming import (
    TFLITE_VARIANTS,
    PartialDisplay,
    convert_to_tflite,
    export_step,
    file_blocks,
    final_search,
    stdin_blocks,
    stream_step,
    stream_utterance,
    tflite_runner,
)

MAX_SYNTHETIC_TRANSCRIPTS = 1000  # synthetic voices are for word lists and commands


def made_from(cfg: SpeechConfig) -> dict:
    """The config sections each stage's output is made from, as its fingerprint counts
    them (``cli.Context``): what a later stage may not change, but decoding."""
    prepare = {"data": cfg.data, "features": cfg.features,
               "shards": {"utterances": cfg.shards.utterances}}
    if cfg.data.corpus == "fsdd_strings":
        prepare["strings"] = cfg.strings
    if cfg.synthetic.voices:
        prepare["synthetic"] = cfg.synthetic
    training = trainer.made_from(cfg.training)
    decoding = cfg.decoding.signature()
    export = {"decoding": decoding,
              **({"streaming": cfg.streaming.step_signature()} if cfg.model.causal else {})}
    train = {"model": cfg.model.signature(), "augment": cfg.augment, "training": training,
             "shards": {"shuffle_buffer_mb": cfg.shards.shuffle_buffer_mb},
             # Only when set, so pure CTC runs keep their fingerprints.
             **({"attention_decoder": cfg.attention_decoder} if cfg.attention_decoder else {})}
    return {"prepare": prepare, "train": train, "evaluate": {"decoding": decoding},
            "export": export}


def prepare(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    if cfg.synthetic.voices:
        espeak_ng()  # missing: one line saying how to install it, before anything is done
    fp = fingerprint("prepare", cfg.data.signature(), cfg.features,
                     cfg.strings if cfg.data.corpus == "fsdd_strings" else None,
                     input_signature(cfg, ctx.data_dir),
                     # Only when on, so runs without synthetic voices keep their fingerprint.
                     *([cfg.synthetic] if cfg.synthetic.voices else []),
                     {"train_shard_utterances": cfg.shards.utterances})  # not the workers
    if not ctx.start(fp, run.path("data")):
        return
    shutil.rmtree(run.path("data", "audio"), ignore_errors=True)
    entries = load_entries(cfg, run, ctx.data_dir)
    for split in SPLITS:
        limit = getattr(cfg.data, f"limit_{split}")
        entries[split] = entries[split][:limit] if limit is not None else entries[split]
        if not entries[split]:
            raise ManifestError(f"{cfg.data.corpus}: split '{split}' has no utterances")
        for item in entries[split]:
            item["text"] = normalize_transcript(item["text"], cfg.data.lowercase,
                                                cfg.data.remove_punctuation)
    if cfg.data.units == "sentencepiece":
        atomic_write_bytes(run.path("data", "units.model"), train_units(
            [e["text"] for e in entries["train"]], cfg.data.unit_vocab_size, cfg.data.unit_type))
    vocab = vocabulary(cfg, run)
    report = {"corpus": cfg.data.corpus, "units": cfg.data.units,
              "vocabulary_size": vocab.size, "blank_index": vocab.blank_index}
    for split in SPLITS:
        items = entries[split]
        for item in items:
            vocab.encode(item["text"], where=item["audio_filepath"])
        corrected = correct_durations(items)
        if corrected:
            first, given = corrected[0]
            print(f"[prepare] warning: {len(corrected)} {split} durations differ from their "
                  f"audio's; the audio's are used (first: {first['audio_filepath']}, {given} s "
                  f"in the manifest, {first['duration']} s of audio)", file=sys.stderr)
        if split == "train" and cfg.synthetic.voices:
            items = items + synthetic_entries(cfg, run, items)
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
    # The training set is streamed into shards (with the statistics global or speaker
    # normalization need); validation is small and stays one array file.
    # --force recomputes every shard: it is how changed audio files are taken in.
    group_stats = write_train_shards(cfg, run, entries["train"], vocab, fp, resume=not ctx.force)
    report["train"]["speed_perturbation"] = cfg.data.speed_perturbation
    stats = None
    if cfg.features.normalization == "global":
        stats = group_stats[0].mean_std()
        atomic_savez(run.path("features", "stats.npz"), mean=stats[0], std=stats[1])
    raw = extract_features(paths("val"), cfg.features, desc="features val")
    features = normalize_features(raw, cfg.features, stats,
                                  [e.get("speaker") for e in entries["val"]])
    atomic_savez(run.path("features", "val.npz"), features=np.concatenate(features),
                 lengths=np.array([len(f) for f in features]))
    atomic_write_json(run.path("data", "report.json"), report)
    ctx.done()
    print("[prepare] " + ", ".join(
        f"{s} {report[s]['utterances']} utterances ({report[s]['hours']:.2f} h)" for s in SPLITS)
        + f"; {cfg.features.num_features} {cfg.features.kind} features")


def synthetic_entries(cfg: SpeechConfig, run, train: list[dict]) -> list[dict]:
    """Every distinct transcript of ``train`` in ``cfg.synthetic.voices`` espeak-ng voices."""
    texts = sorted({e["text"] for e in train})
    if len(texts) > MAX_SYNTHETIC_TRANSCRIPTS:
        raise ConfigError(f"synthetic.voices: each voice says every distinct training "
                          f"transcript, and there are {len(texts)} (at most {MAX_SYNTHETIC_TRANSCRIPTS})")
    print(f"[prepare] synthesizing {len(texts)} transcripts x {cfg.synthetic.voices} "
          "voices (espeak-ng)", flush=True)
    return make_synthetic_speech(texts, cfg.synthetic, run.path("data", "audio", "synthetic"))


def build_model(cfg: SpeechConfig, vocab: Vocabulary) -> CTCRecognizer:
    """A ``CTCRecognizer``, or with ``cfg.attention_decoder`` a ``CTCAttentionRecognizer``."""
    model_cfg = dataclasses.asdict(dataclasses.replace(
        cfg.model, num_features=cfg.features.num_features, vocab_size=vocab.size,
        blank_index=vocab.blank_index))
    model = (CTCAttentionRecognizer(dataclasses.asdict(cfg.attention_decoder), **model_cfg)
             if cfg.attention_decoder else CTCRecognizer(**model_cfg))
    # The model computes its loss itself (no ``loss`` to compile with).
    return trainer.build_and_compile(model, cfg.training)


def train(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    prepared = ctx.require("prepare")
    # The shuffle buffer decides the order of the batches, so a checkpoint is bound to it.
    checkpoint_fp = trainer.start_stage(ctx, prepared, cfg.model.signature(), cfg.augment,
                                        cfg.shards.shuffle_buffer_mb,
                                        *[d for d in [cfg.attention_decoder] if d])
    if checkpoint_fp is None:
        return
    vocab, t = vocabulary(cfg, run), cfg.training
    shards = train_shards(cfg, run, vocab, prepared)
    val_x, val_y, val_skipped = load_labelled(run, "val", vocab, cfg)
    val_text = [vocab.decode(y) for y in val_y]

    def train_dataset(epoch):
        return streaming_dataset(shards, cfg, seed=t.seed + epoch)

    val_dataset = make_training_dataset(val_x, val_y, t.batch_size, shuffle=False)
    decoders = {}

    def validate(model):
        # One compiled decoder per model object (a resumed run loads a new one).
        if id(model) not in decoders:
            decoders[id(model)] = CTCDecoder(model, "greedy")
        hyps = transcribe_features(decoders[id(model)], vocab, val_x, cfg.decoding.batch_size)
        return {"val_wer": wer_cer(hyps, val_text)["wer"]}

    try:
        state = trainer.train(
            run, lambda: build_model(cfg, vocab), train_dataset, val_dataset, validate,
            trainer.ValidationMetric("val_wer", higher_is_better=False,
                                     nothing_learned=1.0), t, checkpoint_fp,
        )
    except tf.errors.DataLossError:
        # TensorFlow's message ("corrupted record at 1234") does not say which shard.
        shards.check()
        raise
    ctx.done(best_val_wer=state["best"], epochs=state["epoch"],
             train_seconds=state["train_seconds"], skipped_train=shards.skipped,
             skipped_val=val_skipped)


def evaluate(ctx: cli.Context) -> None:
    """Test WER/CER and real-time factor. Test features are not cached: computing them
    from the audio is part of the inference time being measured."""
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("evaluate", ctx.require("train"), cfg.decoding.signature())
    if not ctx.start(fp, run.path("metrics.json")):
        return
    vocab, stats = vocabulary(cfg, run), load_stats(run, cfg.features)
    entries = read_manifest(run.path("data", "test.jsonl"))
    paths = [e["audio_filepath"] for e in entries]
    speakers = [e.get("speaker") for e in entries]  # for normalization: speaker
    references = [e["text"] for e in entries]
    audio_seconds = sum(e["duration"] for e in entries)
    decoders, configured, tuning = evaluation_decoders(cfg, run)
    results = {}
    for strategy, load in decoders.items():
        decoder = load()
        # Warm-up on one file: tracing the graph is a one-off cost, not inference time.
        transcribe_files(decoder, vocab, paths[:1], cfg, stats, speakers[:1])
        hyps, seconds = transcribe_files(decoder, vocab, paths, cfg, stats, speakers)
        write_lines(run.path("hyps", f"test.{strategy}.txt"), hyps)
        total = seconds["feature_seconds"] + seconds["decode_seconds"]
        results[strategy] = {
            **wer_cer(hyps, references), "strategy": strategy,
            "rtf": round(total / audio_seconds, 5),
            **{k: round(v, 2) for k, v in seconds.items()},
            "per_speaker": wer_cer_by_group(hyps, references,
                                            [s or "unknown" for s in speakers]),
            "per_length": wer_cer_by_group(hyps, references,
                                           [len(r.split()) for r in references]),
        }

    def summary(strategy):
        return {k: v for k, v in results[strategy].items() if not k.startswith("per_")}

    main = results[configured]
    # Beside the configured decoding, greedy and (with a language model) the strategy
    # without it: the others, as the beam search beside attention rescoring.
    beside = [s for s in results if s not in (configured, cfg.decoding.strategy, "greedy")]
    metrics = {**main, "test_utterances": len(entries),
               "test_audio_seconds": round(audio_seconds, 1),
               "beam_width": cfg.decoding.beam_width,
               "rtf_definition": "wall seconds to read audio, compute features and decode, "
                                 "per second of audio (batched, this machine)",
               "greedy": summary("greedy"),
               **{strategy: summary(strategy) for strategy in beside},
               "decoding": cfg.decoding.signature(),
               "config_fingerprint": ctx.config_fingerprint()}
    if tuning:
        metrics["without_lm"] = summary(cfg.decoding.strategy)
        metrics["lm"] = {k: tuning[k] for k in ("order", "weight", "word_bonus", "val_wer",
                                                "training_sentences")}
        metrics["lm"]["beam_width"] = cfg.decoding.lm.beam_width
    atomic_write_json(run.path("metrics.json"), metrics)
    ctx.done()
    without = (f"without it ({cfg.decoding.strategy}) {metrics['without_lm']['wer']:.2%}; "
               if tuning else "")
    others = "".join(f"{s} WER {results[s]['wer']:.2%}; " for s in beside)
    print(f"[evaluate] test WER {main['wer']:.2%} CER {main['cer']:.2%} utterance accuracy "
          f"{main['utterance_accuracy']:.2%} ({main['strategy']}); {without}{others}greedy WER "
          f"{results['greedy']['wer']:.2%}; real-time factor {main['rtf']:.4f}")


def transcribe(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    ctx.require("train")
    if ctx.options.audio and ctx.input is not None:
        raise ConfigError("transcribe: give the audio files as arguments or in --input, "
                          "not both")
    decoder = configured_decoder(cfg, run)
    vocab, stats = vocabulary(cfg, run), load_stats(run, cfg.features)
    # Audio files given as arguments are one batch; else paths are read as they arrive.
    for lines in [ctx.options.audio] if ctx.options.audio else cli.input_batches(ctx.input):
        paths = [line.strip() for line in lines]
        # One output line per input line: a blank line gives a blank transcript.
        todo = [i for i, path in enumerate(paths) if path]
        # normalization: speaker takes the files of one input batch as one speaker's.
        texts, _ = transcribe_files(decoder, vocab, [paths[i] for i in todo], cfg, stats)
        result = [""] * len(paths)
        for i, text in zip(todo, texts, strict=True):
            result[i] = text
        for text in result:
            print(text)
        sys.stdout.flush()  # typed input: each transcript as soon as it is ready


def stream(ctx: cli.Context) -> None:
    """Transcribe audio chunk by chunk as it arrives: partial hypotheses on stderr, one
    final transcript per utterance on stdout (as ``transcribe`` writes them)."""
    cfg, run = ctx.config, ctx.run
    if not cfg.model.causal:
        raise ConfigError("model.causal: streaming needs a causal model (trained with "
                          "model.causal: true, as in fsdd_strings_streaming.yaml)")
    if ctx.options.int8 and ctx.options.float16:
        raise ConfigError("--int8 and --float16: choose one TFLite model")
    if (ctx.options.int8 or ctx.options.float16) and not ctx.options.tflite:
        raise ConfigError(f"--{'int8' if ctx.options.int8 else 'float16'}: selects the TFLite "
                          "model; use it with --tflite")
    ctx.require("train")
    if ctx.options.tflite and not run.is_current("export", export_fingerprint(ctx)):
        # TFLite files of an earlier model or chunk size would stream something else.
        raise ConfigError(f"{run.root}: the TFLite step models are missing or older than "
                          "the model or config; run the export stage before 'stream --tflite'")
    step = stream_step(cfg, run)
    variant = "int8" if ctx.options.int8 else "float16" if ctx.options.float16 else "float32"
    runner = (tflite_runner(run.path("tflite", f"stream_{variant}.tflite"), step)
              if ctx.options.tflite else step.keras_runner())
    final = final_search(cfg, run, step)
    if cfg.decoding.strategy != "greedy":
        print(f"[stream] partial transcripts greedy, the final one "
              f"{'by the word language model search' if final else 'greedy'} "
              f"(streaming.final: {cfg.streaming.final})", file=sys.stderr)
    display, vocab = PartialDisplay(sys.stderr), vocabulary(cfg, run)
    for source in ctx.options.audio or ["-"]:
        blocks = (stdin_blocks(sys.stdin.buffer, cfg.features.sample_rate) if source == "-"
                  else file_blocks(source, cfg.features, step.chunk_samples))
        text = stream_utterance(step, runner, blocks, vocab, display, final=final)
        display.clear()
        print(text, flush=True)


def export_fingerprint(ctx: cli.Context) -> str:
    # The inputs made_from names, in the order (and with the None for a model that does
    # not stream) that earlier exports' fingerprints hashed them.
    inputs = made_from(ctx.config)["export"]
    return fingerprint("export", ctx.require("train"), inputs["decoding"],
                       inputs.get("streaming"))


def export(ctx: cli.Context) -> None:
    """A SavedModel transcribing waveforms with the configured decoding, all in its graph;
    for a causal model also the TFLite streaming step (``TFLITE_VARIANTS``)."""
    cfg, run = ctx.config, ctx.run
    fp = export_fingerprint(ctx)
    target = run.path("export")
    if not ctx.start(fp, target):
        return
    features = GraphFeatures(cfg.features, load_stats(run, cfg.features))
    decoder = load_recognizer(cfg, run, cfg.decoding.strategy)
    staging = run.path(".export.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    export_recognizer(decoder, vocabulary(cfg, run), features, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"[export] SavedModel with a 'transcribe' signature (float32 waveforms at "
          f"{cfg.features.sample_rate} Hz + int32 lengths -> strings) in {target}")
    if cfg.model.causal:
        step_model = run.path("tflite", "step_savedmodel")
        shutil.rmtree(step_model, ignore_errors=True)
        export_step(stream_step(cfg, run), step_model)
        for variant in TFLITE_VARIANTS:
            path = run.path("tflite", f"stream_{variant}.tflite")
            atomic_write_bytes(path, convert_to_tflite(step_model, variant))
            print(f"[export] TFLite streaming step ({variant}, {cfg.streaming.chunk_ms:g} ms "
                  f"chunks): {path} ({path.stat().st_size / 1e6:.2f} MB)")
        shutil.rmtree(step_model)
    ctx.done()


def report(ctx: cli.Context) -> None:
    """Execute notebooks/speech_report.ipynb for this run into ``report/``."""
    report_stage(ctx, "speech_report")


# Besides cli.USER_ERRORS, the errors reported as one line (no traceback).
USER_ERRORS = (AudioError, ManifestError, VocabularyError, fsdd.FSDDError, ReportError,
               SynthesisError, TokenizerError)
# The stages: the functions named in the package's STAGE_NAMES, in that order (the names
# are declared there, where the command line reads them before TensorFlow is imported).
STAGES = {name: globals()[name] for name in STAGE_NAMES}
