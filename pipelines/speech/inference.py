"""Transcribing audio with a trained model: features, batched CTC decoding, and the
SavedModel export."""

from __future__ import annotations

import time

import keras
import tensorflow as tf

from data_prep.audio_features import featurize
from data_prep.graph_features import GraphFeatures
from data_prep.manifest import read_manifest
from data_prep.piece_vocabulary import Vocabulary
from data_prep.speech_dataset import make_inference_batches
from models.attention_rescoring import AttentionRescoringDecoder
from models.ctc_attention_recognizer import CTCAttentionRecognizer
from models.ctc_decoding import CTCDecoder
from models.ctc_recognizer import CTCRecognizer
from models.rnn_cells import without_cudnn
from pipelines import checkpoint_average
from pipelines.config import ConfigError
from pipelines.speech.config import RESCORING, SpeechConfig
from pipelines.speech.data import vocabulary

MAX_CANDIDATES = 1000  # closed_set decoding scores every candidate for every utterance


def in_batches(function, features, batch_size: int) -> list:
    """``function(batch)`` (one output per utterance of a batch) over normalized
    features, batched by length, with the outputs in input order."""
    if not features:  # e.g. a batch of blank input lines
        return []
    dataset, order = make_inference_batches(features, batch_size)
    result = [None] * len(features)
    for position, output in zip(order, (y for batch in dataset for y in function(batch)),
                                strict=True):
        result[position] = output
    return result


def transcribe_features(decoder, vocab: Vocabulary, features, batch_size: int) -> list[str]:
    """Transcripts of normalized features, in input order (``decoder``: a ``CTCDecoder``
    or a ``CTCLanguageModelDecoder``)."""
    return [" ".join(vocab.decode(ids).split())
            for ids in in_batches(decoder, features, batch_size)]


def closed_set_candidates(run, vocab: Vocabulary) -> list[list[int]]:
    """Label ids of the training set's distinct transcripts, for closed_set decoding."""
    texts = sorted({e["text"] for e in read_manifest(run.path("data", "train.jsonl"))})
    if len(texts) > MAX_CANDIDATES:
        raise ConfigError(f"decoding.strategy: closed_set is for a closed set of words or "
                          f"commands, but the training set has {len(texts)} distinct "
                          f"transcripts (at most {MAX_CANDIDATES}); use beam_search")
    return [vocab.encode(t) for t in texts]


def load_checkpoint(run) -> CTCRecognizer | CTCAttentionRecognizer:
    """The best checkpoint of ``run`` (a RunDir). Keras finds the class it names because
    this module imports its module, which registers it."""
    return checkpoint_average.load_checkpoint(run.path("checkpoints", "best.keras"))


def with_decoder(model, run):
    """``model``; ConfigError unless it has an attention decoder (a run trained before its
    config had an attention_decoder section)."""
    if not isinstance(model, CTCAttentionRecognizer):
        raise ConfigError(f"{run.root}: decoding.strategy: {RESCORING} needs the model "
                          "trained with an attention_decoder section, and this run's has "
                          "none; run train with this config first, or use another --run-dir")
    return model


def load_recognizer(cfg: SpeechConfig, run, strategy: str
                    ) -> CTCDecoder | AttentionRescoringDecoder:
    """The run's model with ``strategy``'s in-graph search (no language model)."""
    model = load_checkpoint(run)
    if strategy == RESCORING:
        return AttentionRescoringDecoder(with_decoder(model, run), cfg.decoding.beam_width,
                                         cfg.decoding.ctc_weight)
    candidates = (closed_set_candidates(run, vocabulary(cfg, run)) if strategy == "closed_set"
                  else None)
    return CTCDecoder(model, strategy, cfg.decoding.beam_width, candidates)


def transcribe_files(decoder, vocab, paths, cfg: SpeechConfig, stats, speakers=None
                     ) -> tuple[list[str], dict]:
    """Transcripts of audio files, and the seconds spent on features and on decoding
    (``speakers``: see ``featurize``)."""
    start = time.perf_counter()
    features = featurize(paths, cfg.features, stats, desc="features", speakers=speakers)
    middle = time.perf_counter()
    texts = transcribe_features(decoder, vocab, features, cfg.decoding.batch_size)
    end = time.perf_counter()
    return texts, {"feature_seconds": middle - start, "decode_seconds": end - middle}


def vocabulary_table(vocab: Vocabulary) -> tf.Tensor:
    """The text of every label id as a string tensor (the blank's is empty)."""
    return tf.constant(vocab.label_texts())


def ids_to_text(ids, table, blank_index: int):
    """``transcribe_features``' text in the graph: [B, L] ids padded with -1 -> [B]
    strings, whitespace collapsed."""
    text = tf.strings.reduce_join(tf.gather(table, tf.where(ids >= 0, ids, blank_index)),
                                  axis=-1)
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def export_recognizer(decoder: CTCDecoder | AttentionRescoringDecoder, vocab: Vocabulary,
                      features: GraphFeatures, path) -> None:
    """Write a SavedModel whose ``transcribe`` signature maps waveforms to transcripts.

    ``transcribe(waveforms, lengths)``: float32 ``[batch, samples]`` PCM in [-1, 1] (an
    error otherwise: int16 samples must be scaled by 1/32768) at the model's sample
    rate, each row zero-padded after its length, and int32 ``[batch]`` lengths ->
    ``[batch]`` strings (an empty batch: none). Features (``GraphFeatures``), the acoustic
    model, the configured search (CTC, or attention rescoring) and the vocabulary lookup
    all run in the graph, so serving needs only TensorFlow.
    """
    table = vocabulary_table(vocab)

    def transcribe(waveforms, lengths):
        # Shapes and dtypes are checked by the signature; these are the value checks.
        checks = [
            tf.debugging.assert_equal(tf.shape(lengths)[0], tf.shape(waveforms)[0], message=(
                "transcribe: lengths must have one entry per waveform (row of waveforms)")),
            tf.debugging.assert_non_negative(lengths, message="transcribe: negative length"),
            tf.debugging.assert_less_equal(lengths, tf.shape(waveforms)[1], message=(
                "transcribe: a length exceeds the padded length of waveforms")),
            tf.debugging.assert_all_finite(waveforms, "transcribe: NaN or infinite samples"),
            # int16 samples passed as floats would be transcribed as noise.
            tf.debugging.assert_less_equal(tf.reduce_max(tf.abs(waveforms)), 1.0, message=(
                "transcribe: samples outside [-1, 1]; scale 16-bit PCM by 1/32768")),
        ]

        def transcripts():
            feats, frames = features(waveforms, lengths)
            ids = decoder.decode_tensor({"features": feats, "feature_lengths": frames})
            return ids_to_text(ids, table, vocab.blank_index)

        with tf.control_dependencies(checks):
            # An empty batch gets no transcripts (the model's graph needs a row).
            return tf.cond(tf.shape(waveforms)[0] > 0, transcripts,
                           lambda: tf.zeros([0], tf.string))

    # Traced with Keras' generic RNN loop: a graph traced with cuDNN's (on a GPU) would
    # run on GPUs only, and fail on an empty waveform (cuDNN refuses a fully masked row).
    with without_cudnn(decoder.model):
        archive = keras.export.ExportArchive()
        archive.add_endpoint("transcribe", transcribe, input_signature=[
            tf.TensorSpec([None, None], tf.float32, name="waveforms"),
            tf.TensorSpec([None], tf.int32, name="lengths")])
        archive.write_out(str(path), verbose=False)
