"""Transcribing audio with a trained model: features, batched CTC decoding."""

from __future__ import annotations

import time

import keras

from data_prep.char_vocabulary import CharVocabulary
from data_prep.manifest import read_manifest
from data_prep.speech_dataset import make_inference_batches
from models.ctc_decoding import CTCDecoder
from models.ctc_recognizer import CTCRecognizer
from pipelines.config import ConfigError
from pipelines.speech.config import SpeechConfig
from pipelines.speech.data import featurize, vocabulary

MAX_CANDIDATES = 1000  # closed_set decoding scores every candidate for every utterance


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


def closed_set_candidates(run, vocab: CharVocabulary) -> list[list[int]]:
    """Label ids of the training set's distinct transcripts, for closed_set decoding."""
    texts = sorted({e["text"] for e in read_manifest(run.path("data", "train.jsonl"))})
    if len(texts) > MAX_CANDIDATES:
        raise ConfigError(f"decoding.strategy: closed_set is for a closed set of words or "
                          f"commands, but the training set has {len(texts)} distinct "
                          f"transcripts (at most {MAX_CANDIDATES}); use beam_search")
    return [vocab.encode(t) for t in texts]


def load_checkpoint(run) -> CTCRecognizer:
    """The best checkpoint of ``run`` (a RunDir). Keras finds the class it names because
    this module imports its module, which registers it."""
    return keras.saving.load_model(run.path("checkpoints", "best.keras"))


def load_recognizer(cfg: SpeechConfig, run, strategy: str) -> CTCDecoder:
    model = load_checkpoint(run)
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
