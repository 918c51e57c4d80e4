"""Speech data: corpora as manifests, cached features and the label ids CTC can fit."""

from __future__ import annotations

import sys

import numpy as np

from data_prep import fsdd
from data_prep.audio_features import FeatureConfig, extract_features, normalize
from data_prep.char_vocabulary import CharVocabulary
from data_prep.digit_strings import make_digit_strings
from data_prep.download import sha256_of
from data_prep.manifest import ManifestError, entry, read_manifest
from models.config import CTCRecognizerConfig
from models.ctc_decoding import ctc_frames_needed
from models.ctc_recognizer import subsampled_length
from pipelines.speech.config import SPLITS, SpeechConfig


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
