"""Translating text with a trained model: batched search, and the SavedModel export."""

from __future__ import annotations

import dataclasses
import sys

import keras
import tensorflow as tf
from tqdm import tqdm

import models.losses  # noqa: F401  (registers the loss a checkpoint is compiled with)
from data_prep.special_ids import EOS_ID, PAD_ID
from data_prep.text_dataset import make_source_batches
from models.decoding import Translator
from models.rnn_cells import without_cudnn
from models.seq2seq_translator import Seq2SeqTranslator
from pipelines import checkpoint_average
from pipelines.translation.config import DecodingConfig


def load_checkpoint(run) -> Seq2SeqTranslator:
    """The best checkpoint of ``run`` (a RunDir). Keras finds the classes it names because
    this module imports their modules, which register them."""
    return checkpoint_average.load_checkpoint(run.path("checkpoints", "best.keras"))


def make_translator(model, decoding: DecodingConfig) -> Translator:
    return Translator(model, decoding.beam_size, decoding.length_penalty,
                      decoding.max_length_ratio, decoding.max_length_offset)


def greedy(decoding: DecodingConfig) -> DecodingConfig:
    """``decoding`` with greedy search (beam size 1): validation, and evaluate's second score."""
    return dataclasses.replace(decoding, beam_size=1)


def translate_texts(model, source_tok, target_tok, texts, decoding: DecodingConfig,
                    progress: bool = True) -> list[str]:
    """Translate ``texts`` in length-sorted, token-sized batches; output in input order."""
    return translate_with(make_translator(model, decoding), source_tok, target_tok, texts,
                          decoding.batch_tokens, progress)


def translate_with(translator: Translator, source_tok, target_tok, texts, batch_tokens: int,
                   progress: bool = True) -> list[str]:
    """``translate_texts`` with a given translator (its compiled search is reused).

    An empty (or blank) text translates to an empty string: the model, given only EOS,
    would still write its likeliest sentence.
    """
    result = [""] * len(texts)
    todo = [i for i, text in enumerate(texts) if text.strip()]
    if not todo:
        return result
    dataset, order = make_source_batches([texts[i] for i in todo], source_tok, batch_tokens)
    outputs = []
    for batch in tqdm(dataset, desc=f"translate (beam {translator.beam_size})", unit="batch",
                      disable=None if progress else True, file=sys.stderr):  # None: on a tty
        outputs.extend(translator(batch).numpy())
    for position, text in zip(order, target_tok.decode(outputs)):
        result[todo[position]] = text
    return result


def export_signatures(decoding: DecodingConfig) -> dict[str, DecodingConfig]:
    """The export's signatures and their searches: ``translate`` with ``decoding``'s, and
    ``translate_greedy`` with greedy search when that is a beam search (else
    ``translate`` is greedy already)."""
    return {"translate": decoding, **({"translate_greedy": greedy(decoding)}
                                      if decoding.beam_size > 1 else {})}


def export_translator(model, source_tok, target_tok, decoding: DecodingConfig, path) -> None:
    """Write a SavedModel with the signatures of ``export_signatures``, each mapping
    strings to strings: ``translate`` with ``decoding``'s search and, for a beam search,
    ``translate_greedy``: about a BLEU point lower, and what a loaded server batches best
    (docs/serving.md).

    Tokenization (tensorflow-text SentencePiece), decoding and detokenization all run in
    the graph, so serving needs only TensorFlow and tensorflow-text, not this package.
    """
    # Traced with Keras' generic RNN loop: a graph traced with cuDNN's (on a GPU) would
    # run on GPUs only.
    with without_cudnn(model):
        archive = keras.export.ExportArchive()
        for name, search in export_signatures(decoding).items():
            archive.add_endpoint(name, strings_translator(model, source_tok, target_tok, search),
                                 input_signature=[tf.TensorSpec([None], tf.string)])
        archive.write_out(str(path), verbose=False)


def strings_translator(model, source_tok, target_tok, decoding: DecodingConfig):
    """A function translating a batch of strings to strings in the graph."""
    translator = make_translator(model, decoding)

    def translate_strings(texts):
        # An empty batch gets no translations (the search's graph needs a row).
        return tf.cond(tf.size(texts) > 0, lambda: translations_of(texts),
                       lambda: tf.zeros([0], tf.string))

    def translations_of(texts):
        ids = source_tok.tokenize(texts)
        eos = tf.fill([ids.nrows(), 1], EOS_ID)
        output = translator(tf.concat([ids, eos], axis=1).to_tensor(default_value=PAD_ID))
        # Keep the tokens before each row's first EOS (padding follows it).
        before_eos = tf.equal(tf.cumsum(tf.cast(output == EOS_ID, tf.int32), axis=1), 0)
        translations = target_tok.detokenize(tf.ragged.boolean_mask(output, before_eos))
        # As translate_texts: a blank source gets an empty translation.
        blank = tf.equal(tf.strings.length(tf.strings.strip(texts)), 0)
        return tf.where(blank, tf.constant(""), translations)

    return translate_strings
