"""Speech data: corpora as manifests, cached features and the label ids CTC can fit."""

from __future__ import annotations

import sys

import numpy as np

from data_prep import an4, fsdd, librispeech
from data_prep.audio_features import FeatureConfig
from data_prep.char_vocabulary import CharVocabulary
from data_prep.digit_strings import make_digit_strings
from data_prep.download import sha256_of
from data_prep.manifest import ManifestError, entry, read_manifest
from data_prep.piece_vocabulary import PieceVocabulary, Vocabulary
from models.ctc_frames import ctc_frames_needed, subsampled_length
from pipelines.config import ConfigError
from pipelines.speech.config import SPLITS, SpeechConfig


def vocabulary(cfg: SpeechConfig, run=None) -> Vocabulary:
    """The CTC labels: ``data.vocabulary``'s characters, or the SentencePiece units that
    ``prepare`` trained into ``run`` (``data/units.model``)."""
    if cfg.data.units == "characters":
        return CharVocabulary(cfg.data.vocabulary, cfg.data.blank_index)
    if run is None:
        raise ConfigError("data.units: sentencepiece units are trained by prepare; this "
                          "command needs characters or a prepared run")
    return PieceVocabulary(run.path("data", "units.model").read_bytes(), cfg.data.blank_index)


def load_entries(cfg: SpeechConfig, run, data_dir) -> dict[str, list[dict]]:
    """Manifest entries of every split (FSDD strings are generated into the run)."""
    data = cfg.data
    if data.corpus == "manifest":
        return {split: read_manifest(data.manifests[split]) for split in SPLITS}
    if data.corpus == "librispeech":
        return {split: librispeech.subset_entries(data.subsets[split], data_dir)
                for split in SPLITS}
    if data.corpus == "an4":
        root = an4.root_dir(data_dir)
        train, val = an4.split_speakers(an4.split_entries(root, "train"),
                                        data.val_speaker_fraction, data.split_seed)
        return {"train": train, "val": val, "test": an4.split_entries(root, "test")}
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
    """What prepare reads, for its fingerprint: the manifests' hashes, or the corpus
    files' names and sizes (audio a manifest points to is assumed unchanged: use --force)."""
    if cfg.data.corpus == "manifest":
        return [sha256_of(cfg.data.manifests[s]) for s in SPLITS]
    if cfg.data.corpus == "librispeech":
        return [librispeech.subset_signature(cfg.data.subsets[s], data_dir) for s in SPLITS]
    if cfg.data.corpus == "an4":
        return an4.signature(data_dir)
    folder = fsdd.recordings_dir(data_dir)
    return sorted((p.name, p.stat().st_size) for p in folder.glob("*.wav"))


def load_stats(run, cfg: FeatureConfig):
    if cfg.normalization != "global":
        return None
    stats = np.load(run.path("features", "stats.npz"))
    return stats["mean"], stats["std"]


def load_features(run, split) -> list[np.ndarray]:
    cached = np.load(run.path("features", f"{split}.npz"))
    return np.split(cached["features"], np.cumsum(cached["lengths"])[:-1])


def fitting(split: str, entries: list[dict], lengths: list[int], needed: list[int],
            cfg: SpeechConfig) -> tuple[list[bool], int]:
    """Which of the utterances ``entries`` (of ``lengths`` feature frames, whose
    transcripts need ``needed`` CTC frames) CTC can fit, and how many it cannot.

    An utterance whose transcript needs more CTC frames than the model outputs for it
    would have an infinite loss; it is skipped with a warning and counted instead.
    """
    keep = [n <= subsampled_length(frames, cfg.model.conv_layers, cfg.model.conv_stride)
            for frames, n in zip(lengths, needed, strict=True)]
    skipped = [item["audio_filepath"] for item, fits in zip(entries, keep, strict=True)
               if not fits]
    if skipped:
        print(f"[train] warning: skipped {len(skipped)} {split} utterances whose transcript "
              f"needs more CTC frames than the model outputs (first: {skipped[:3]})",
              file=sys.stderr)
    if not any(keep):
        raise ManifestError(f"{split}: no utterance is long enough for its transcript")
    return keep, len(skipped)


def load_labelled(run, split, vocab, cfg: SpeechConfig):
    """Cached features and label ids of a (small, unsharded) split, without the
    utterances CTC cannot fit (``fitting``), and their number."""
    entries = read_manifest(run.path("data", f"{split}.jsonl"))
    features = load_features(run, split)
    labels = [vocab.encode(e["text"], where=e["audio_filepath"]) for e in entries]
    keep, skipped = fitting(split, entries, [len(f) for f in features],
                            [ctc_frames_needed(y) for y in labels], cfg)
    return ([f for f, k in zip(features, keep, strict=True) if k],
            [y for y, k in zip(labels, keep, strict=True) if k], skipped)
