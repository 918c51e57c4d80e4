"""Speech recognition pipeline (CTC): prepare -> train -> evaluate, plus transcribe.

    python -m pipelines.speech all --config pipelines/configs/speech_smoke.yaml
    ls *.wav | python -m pipelines.speech transcribe --config ...

Corpora: isolated FSDD digits, connected digit strings built from FSDD, or any JSONL
manifests (``python -m data_prep.manifest`` converts LibriSpeech, LJSpeech, Common Voice).
Files in ``runs/<name>/``: ``config.yaml`` (resolved), ``data/`` (``{split}.jsonl``
manifests with normalized transcripts, generated audio, ``report.json``), ``features/``
(cached train/val features and normalization statistics), ``checkpoints/``, ``logs/``
(TensorBoard and ``history.json``), ``hyps/`` (test transcripts) and ``metrics.json``.

Scoring: references are the manifest transcripts after ``normalize_transcript`` (the
same normalization as for training: lowercase, optional punctuation removal, whitespace
collapsed); hypotheses are the decoder output with whitespace collapsed. WER and CER are
jiwer's on those strings (CER counts every character, spaces included).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass, field

from pipelines import cli

DESCRIPTION = "Train and evaluate CTC speech recognition models."
STAGE_NAMES = ("prepare", "train", "evaluate", "transcribe", "report")

if __name__ == "__main__":
    cli.preflight("speech", DESCRIPTION, STAGE_NAMES)
else:
    cli.quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from data_prep import fsdd  # noqa: E402
from data_prep.audio_features import (  # noqa: E402
    AudioError,
    FeatureConfig,
    extract_features,
    global_stats,
    normalize,
)
from data_prep.char_vocabulary import (  # noqa: E402
    ENGLISH_CHARACTERS,
    CharVocabulary,
    VocabularyError,
    normalize_transcript,
)
from data_prep.digit_strings import DigitStringConfig, make_digit_strings  # noqa: E402
from data_prep.download import sha256_of  # noqa: E402
from data_prep.file_io import atomic_savez, atomic_write_json, write_lines  # noqa: E402
from data_prep.manifest import ManifestError, entry, read_manifest, write_manifest  # noqa: E402
from data_prep.speech_dataset import (  # noqa: E402
    SpecAugmentConfig,
    make_inference_batches,
    make_training_dataset,
)
from models.ctc_decoding import STRATEGIES, CTCDecoder, ctc_frames_needed  # noqa: E402
from models.ctc_recognizer import (  # noqa: E402
    CTCRecognizer,
    CTCRecognizerConfig,
    subsampled_length,
)
from models.rnn_cells import CELLS  # noqa: E402
from pipelines import trainer  # noqa: E402
from pipelines.config import (  # noqa: E402
    ConfigError,
    at_least,
    choice,
    fraction,
    positive,
)
from pipelines.metrics import wer_cer, wer_cer_by_group  # noqa: E402
from pipelines.reports.notebooks import ReportError, report_stage  # noqa: E402
from pipelines.run_dir import fingerprint  # noqa: E402

SPLITS = ("train", "val", "test")
# Translation's training fields: batches here are sized in utterances, and the CTC loss
# has no label smoothing.
UNUSED_TRAINING_FIELDS = ("batch_tokens", "label_smoothing")
MAX_CANDIDATES = 1000  # closed_set decoding scores every candidate for every utterance
TRAINING_SPLITS = ("train", "val")  # test features are computed (and timed) by evaluate


@dataclass
class DataConfig:
    corpus: str = "fsdd_digits"  # fsdd_digits | fsdd_strings | manifest
    test_takes: int = 5  # FSDD standard split: takes 0..4 of every speaker are test
    val_takes: int = 5  # the next takes are held out of training for validation
    test_speakers: list[str] | None = None  # FSDD leave-speakers-out split instead
    manifests: dict | None = None  # corpus=manifest: {train: path, val: path, test: path}
    vocabulary: str = ENGLISH_CHARACTERS  # output characters
    blank_index: int = 0  # CTC blank id; the characters take the other ids
    lowercase: bool = True
    remove_punctuation: bool = False
    # Speed perturbation of the training set: prepare caches the features of one copy of
    # every training utterance per factor (Kaldi and ESPnet use [0.9, 1.0, 1.1]).
    speed_perturbation: list[float] = field(default_factory=lambda: [1.0])
    limit_train: int | None = None  # use only the first N utterances (quick experiments)
    limit_val: int | None = None
    limit_test: int | None = None

    def validate(self, where):
        choice(self.corpus, ("fsdd_digits", "fsdd_strings", "manifest"), f"{where}.corpus")
        if self.corpus == "manifest":
            if self.test_speakers is not None:
                raise ConfigError(f"{where}.test_speakers: FSDD only; a manifest corpus "
                                  "has its own test manifest")
            for split in SPLITS:
                if not isinstance((self.manifests or {}).get(split), str):
                    raise ConfigError(f"{where}.manifests.{split}: expected a manifest path "
                                      "for corpus=manifest")
        elif self.test_speakers is None and self.test_takes < 1:
            raise ConfigError(f"{where}.test_takes: must be at least 1")
        at_least(self, where, 1, "val_takes", "limit_train", "limit_val", "limit_test")
        speeds = self.speed_perturbation
        if (not isinstance(speeds, list) or not speeds or len(set(speeds)) != len(speeds)
                or not all(isinstance(x, (int, float)) and 0.5 <= x <= 2.0 for x in speeds)):
            raise ConfigError(f"{where}.speed_perturbation: expected a list of distinct "
                              f"factors in [0.5, 2], got {speeds!r}")
        try:
            CharVocabulary(self.vocabulary, self.blank_index)
        except ValueError as e:
            raise ConfigError(f"{where}.vocabulary: {e}") from e


@dataclass
class DecodingConfig:
    # closed_set: the likeliest of the training set's distinct transcripts (isolated words)
    strategy: str = "beam_search"  # greedy | beam_search | closed_set
    beam_width: int = 16
    batch_size: int = 64  # utterances per decoding batch

    def validate(self, where):
        choice(self.strategy, STRATEGIES, f"{where}.strategy")
        for name in ("beam_width", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be at least 1")


@dataclass
class SpeechConfig:
    name: str = "speech"
    data: DataConfig = field(default_factory=DataConfig)
    strings: DigitStringConfig = field(default_factory=DigitStringConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    model: CTCRecognizerConfig = field(default_factory=CTCRecognizerConfig)
    training: trainer.TrainingConfig = field(default_factory=trainer.TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    SET_BY_PIPELINE = ("model.num_features", "model.vocab_size", "model.blank_index")

    def validate(self, where):
        # The data_prep and models dataclasses stay free of pipeline code; their
        # values are checked here.
        for name in self.SET_BY_PIPELINE:
            if getattr(self.model, name.split(".")[1]):
                raise ConfigError(f"{name}: set by the pipeline from the features and "
                                  "data sections; do not set it")
        choice(self.model.cell, tuple(CELLS), "model.cell")
        at_least(self.model, "model", 1, "conv_channels", "conv_kernel", "conv_stride",
                 "rnn_layers", "rnn_units")
        at_least(self.model, "model", 0, "conv_layers")
        fraction(self.model.dropout, "model.dropout")
        f = self.features
        choice(f.kind, ("log_mel", "mfcc"), "features.kind")
        choice(f.normalization, ("utterance", "speech", "global", "none"),
               "features.normalization")
        if not f.speech_db > 0:
            raise ConfigError("features.speech_db: must be positive (dB below the loudest frame)")
        at_least(f, "features", 1, "n_mels")
        at_least(f, "features", 0, "fmin")
        positive(f, "features", "window_ms")
        if f.fmax is not None and not f.fmin < f.fmax <= f.sample_rate / 2:
            raise ConfigError("features.fmax: must be above fmin and at most half the "
                              "sample rate, or null")
        if f.sample_rate < 1000:
            raise ConfigError("features.sample_rate: must be at least 1000 Hz")
        if not 0 < f.hop_ms <= f.window_ms:
            raise ConfigError("features.hop_ms: must be positive and at most window_ms")
        if f.trim_db is not None and not f.trim_db > 0:
            raise ConfigError("features.trim_db: must be positive (dB below the peak), or null")
        if f.kind == "mfcc" and not 0 < f.n_mfcc <= f.n_mels:
            raise ConfigError("features.n_mfcc: must be in [1, n_mels]")
        s = self.strings
        at_least(s, "strings", 1, "train_count", "val_count", "test_count", "min_digits")
        if s.max_digits < s.min_digits:
            raise ConfigError("strings.max_digits: must be at least min_digits")
        if not 0.0 <= s.min_gap <= s.max_gap or s.max_edge < 0:
            raise ConfigError("strings: need 0 <= min_gap <= max_gap and max_edge >= 0")
        if s.noise_dbfs is not None and not s.noise_dbfs < 0:
            raise ConfigError("strings.noise_dbfs: must be negative (dB below full scale), "
                              "or null for no noise")
        at_least(self.augment, "augment", 0, "freq_masks", "freq_mask_width", "time_masks",
                 "time_mask_width")
        if not 0.0 <= self.augment.time_mask_fraction <= 1.0:
            raise ConfigError("augment.time_mask_fraction: must be in [0, 1]")
        stretch = self.augment.time_stretch
        if stretch is not None and not (
                isinstance(stretch, list) and len(stretch) == 2
                and all(isinstance(x, (int, float)) for x in stretch)
                and 0.5 <= stretch[0] <= stretch[1] <= 2.0):
            raise ConfigError(f"augment.time_stretch: expected [low, high] with "
                              f"0.5 <= low <= high <= 2, or null; got {stretch!r}")


# -- data -------------------------------------------------------------------------------


def vocabulary(cfg: SpeechConfig) -> CharVocabulary:
    return CharVocabulary(cfg.data.vocabulary, cfg.data.blank_index)


def load_entries(cfg: SpeechConfig, run, data_dir) -> dict[str, list[dict]]:
    """Manifest entries of every split (FSDD strings are generated into the run)."""
    data = cfg.data
    if data.corpus == "manifest":
        return {split: read_manifest(data.manifests[split]) for split in SPLITS}
    recordings = fsdd.list_recordings(fsdd.recordings_dir(data_dir))
    splits = fsdd.split_recordings(recordings, data.test_takes, data.val_takes,
                                   data.test_speakers)
    if data.corpus == "fsdd_digits":
        return {split: [entry(r.path, r.text, speaker=r.speaker, digits=str(r.digit))
                        for r in items] for split, items in splits.items()}
    entries = {}
    for number, (split, items) in enumerate(splits.items()):
        # Each split draws only from its own takes, with its own seed.
        entries[split] = make_digit_strings(
            items, getattr(cfg.strings, f"{split}_count"), cfg.strings,
            cfg.features.sample_rate, run.path("data", "audio", split),
            seed=(cfg.strings.seed, number))
    return entries


def input_signature(cfg: SpeechConfig, data_dir) -> list:
    """What prepare reads, for its fingerprint: the manifests' hashes, or FSDD's file
    names and sizes (audio a manifest points to is assumed unchanged: use --force)."""
    if cfg.data.corpus == "manifest":
        return [sha256_of(cfg.data.manifests[s]) for s in SPLITS]
    folder = fsdd.recordings_dir(data_dir)
    return sorted((p.name, p.stat().st_size) for p in folder.glob("*.wav"))


def featurize(paths: list, cfg: FeatureConfig, stats, desc: str) -> list[np.ndarray]:
    """Normalized features of audio files (``stats``: the global (mean, std), or None)."""
    return [normalize(f, cfg, stats) for f in extract_features(paths, cfg, desc=desc)]


def load_stats(run, cfg: FeatureConfig):
    if cfg.normalization != "global":
        return None
    stats = np.load(run.path("features", "stats.npz"))
    return stats["mean"], stats["std"]


def load_features(run, split) -> list[np.ndarray]:
    cached = np.load(run.path("features", f"{split}.npz"))
    return np.split(cached["features"], np.cumsum(cached["lengths"])[:-1])


def transcribe_features(decoder: CTCDecoder, vocab: CharVocabulary, features,
                        batch_size: int) -> list[str]:
    """Transcripts of normalized features, in input order."""
    if not features:  # e.g. a batch of blank input lines
        return []
    dataset, order = make_inference_batches(features, batch_size)
    outputs = []
    for batch in dataset:
        outputs.extend(decoder(batch))
    result = [""] * len(features)
    for position, ids in zip(order, outputs, strict=True):
        result[position] = " ".join(vocab.decode(ids).split())
    return result


# -- stages -----------------------------------------------------------------------------


def prepare(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("prepare", cfg.data, cfg.features,
                     cfg.strings if cfg.data.corpus == "fsdd_strings" else None,
                     input_signature(cfg, ctx.data_dir))
    if run.up_to_date("prepare", fp, ctx.force, run.path("data")):
        return
    ctx.begin()
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


def min_input_frames(logit_frames: int, model: CTCRecognizerConfig) -> int:
    """Fewest feature frames the front end turns into ``logit_frames`` logit frames."""
    return max(1, (logit_frames - 1) * model.conv_stride ** model.conv_layers + 1)


def load_labelled(run, split, vocab, cfg: SpeechConfig):
    """Cached features and label ids of a split, without the utterances CTC cannot fit.

    An utterance whose transcript needs more CTC frames than the model outputs for it
    would have an infinite loss; it is skipped with a warning and counted instead.
    """
    entries = read_manifest(run.path("data", f"{split}.jsonl"))
    if split == "train":
        entries *= len(cfg.data.speed_perturbation)  # prepare's speed-perturbed copies
    features, labels, skipped = [], [], []
    for item, feats in zip(entries, load_features(run, split), strict=True):
        ids = vocab.encode(item["text"], where=item["audio_filepath"])
        frames = subsampled_length(len(feats), cfg.model.conv_layers, cfg.model.conv_stride)
        if ctc_frames_needed(ids) > frames:
            skipped.append(item["audio_filepath"])
            continue
        features.append(feats)
        labels.append(ids)
    if skipped:
        print(f"[train] warning: skipped {len(skipped)} {split} utterances whose transcript "
              f"needs more CTC frames than the model outputs (first: {skipped[:3]})",
              file=sys.stderr)
    if not features:
        raise ManifestError(f"{split}: no utterance is long enough for its transcript")
    return features, labels, len(skipped)


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
    if run.up_to_date("train", fp, ctx.force, run.path("checkpoints", "best.keras")):
        return
    ctx.begin()
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


def closed_set_candidates(run, vocab: CharVocabulary) -> list[list[int]]:
    """Label ids of the training set's distinct transcripts, for closed_set decoding."""
    texts = sorted({e["text"] for e in read_manifest(run.path("data", "train.jsonl"))})
    if len(texts) > MAX_CANDIDATES:
        raise ConfigError(f"decoding.strategy: closed_set is for a closed set of words or "
                          f"commands, but the training set has {len(texts)} distinct "
                          f"transcripts (at most {MAX_CANDIDATES}); use beam_search")
    return [vocab.encode(t) for t in texts]


def load_recognizer(cfg: SpeechConfig, run, strategy: str) -> CTCDecoder:
    model = keras.saving.load_model(run.path("checkpoints", "best.keras"))
    candidates = (closed_set_candidates(run, vocabulary(cfg)) if strategy == "closed_set"
                  else None)
    return CTCDecoder(model, strategy, cfg.decoding.beam_width, candidates)


def transcribe_files(decoder, vocab, paths, cfg: SpeechConfig, stats) -> tuple[list[str], dict]:
    """Transcripts of audio files, and the seconds spent on features and on decoding."""
    start = time.perf_counter()
    features = featurize(paths, cfg.features, stats, desc="features")
    middle = time.perf_counter()
    texts = transcribe_features(decoder, vocab, features, cfg.decoding.batch_size)
    end = time.perf_counter()
    return texts, {"feature_seconds": middle - start, "decode_seconds": end - middle}


def evaluate(ctx: cli.Context) -> None:
    """Test WER/CER and real-time factor. Test features are not cached: computing them
    from the audio is part of the inference time being measured."""
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("evaluate", run.require("train", "evaluate"), cfg.decoding)
    if run.up_to_date("evaluate", fp, ctx.force, run.path("metrics.json")):
        return
    ctx.begin()
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


STAGES = {"prepare": prepare, "train": train, "evaluate": evaluate, "transcribe": transcribe,
          "report": report}


def main(argv=None) -> int:
    return cli.main(
        argv, "speech", DESCRIPTION, SpeechConfig,
        STAGES, pipeline=["prepare", "train", "evaluate"],
        user_errors=(AudioError, ManifestError, VocabularyError, fsdd.FSDDError, ReportError),
    )


if __name__ == "__main__":
    cli.exit_with(main())
