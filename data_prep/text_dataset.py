"""``tf.data`` input pipelines for translation.

Training pairs come tokenized from TFRecord shards (``data_prep.pair_shards``), or as
sentences in memory tokenized in the graph (tensorflow-text SentencePiece); either way
they are grouped into length buckets and batched by *token count*, so a batch of short
sentences holds many of them and padding stays small (the ``batch_type: tokens`` of
OpenNMT/JoeyNMT).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID
from data_prep.subword_tokenizer import SubwordTokenizer

TOKENIZE_CHUNK = 1024


def bucket_boundaries(max_length: int, width: int = 4) -> list[int]:
    """Bucket upper bounds (exclusive) ``width, 2*width, ...`` covering ``max_length``."""
    return list(range(width + 1, max_length + width + 1, width))


def _tokenize_pairs(dataset, source_tok: SubwordTokenizer, target_tok: SubwordTokenizer):
    def tokenize(src, tgt):
        return source_tok.tokenize(src), target_tok.tokenize(tgt)

    def dense(src, tgt):
        # Unbatched rows of a ragged batch are rank-1 "ragged" tensors with no ragged
        # dimension; padded_batch needs them as plain tensors.
        return tuple(x.flat_values if isinstance(x, tf.RaggedTensor) else x for x in (src, tgt))

    return dataset.batch(TOKENIZE_CHUNK).map(tokenize).unbatch().map(dense)


def _with_eos_and_bos(src, tgt):
    # Source ends with EOS; target gets BOS for the decoder input and EOS as the last label.
    return (tf.concat([src, [EOS_ID]], axis=0), tf.concat([[BOS_ID], tgt, [EOS_ID]], axis=0))


def _to_model_inputs(src, tgt):
    return {"source": src, "target_in": tgt[:, :-1]}, tgt[:, 1:]


def batch_by_tokens(pairs: tf.data.Dataset, max_tokens: int, max_length: int,
                    seed: int | None = None, shuffle: bool = True) -> tf.data.Dataset:
    """Batches ``({"source", "target_in"}, target_out)`` of about ``max_tokens`` tokens
    from a dataset of ``(source ids, target ids)`` pairs (no BOS/EOS yet).

    Args:
        pairs: int32 id sequences, in the order to batch them.
        max_tokens: padded tokens per batch (batch size x longest sequence in the bucket).
        max_length: longest sequence (in subwords, without BOS/EOS) the buckets must cover.
        seed: batch shuffle seed; the same seed gives the same batches in the same order.
        shuffle: shuffle the batches (training); off for validation.
    """
    boundaries = bucket_boundaries(max_length + 2)
    batch_sizes = [max(1, max_tokens // (b - 1)) for b in boundaries]
    batch_sizes.append(max(1, max_tokens // (boundaries[-1] + 8)))
    dataset = pairs.map(_with_eos_and_bos).bucket_by_sequence_length(
        element_length_func=lambda s, t: tf.maximum(tf.shape(s)[0], tf.shape(t)[0]),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=batch_sizes,
        padding_values=(PAD_ID, PAD_ID),
    )
    if shuffle:
        # Buckets fill at different rates; shuffling whole batches removes the resulting
        # short-to-long drift within an epoch.
        dataset = dataset.shuffle(256, seed=seed, reshuffle_each_iteration=False)
    return dataset.map(_to_model_inputs).prefetch(tf.data.AUTOTUNE)


def make_training_dataset(
    source: list[str],
    target: list[str],
    source_tok: SubwordTokenizer,
    target_tok: SubwordTokenizer,
    max_tokens: int,
    max_length: int,
    seed: int | None = None,
    shuffle: bool = True,
) -> tf.data.Dataset:
    """``batch_by_tokens`` of sentence pairs held in memory, tokenized in the graph.

    Args:
        source, target: aligned sentences (already filtered to ``max_length`` tokens).
        source_tok, target_tok: the SentencePiece tokenizers.
        max_tokens, max_length, seed, shuffle: as for ``batch_by_tokens``; ``shuffle``
            also shuffles the pairs (all of them).
    """
    dataset = tf.data.Dataset.from_tensor_slices((source, target))
    if shuffle:
        dataset = dataset.shuffle(len(source), seed=seed, reshuffle_each_iteration=False)
    return batch_by_tokens(_tokenize_pairs(dataset, source_tok, target_tok), max_tokens,
                           max_length, seed, shuffle)


def make_source_batches(
    source: list[str], source_tok: SubwordTokenizer, max_tokens: int
) -> tuple[tf.data.Dataset, np.ndarray]:
    """Padded source batches sorted by length, and the order to undo the sort.

    Returns ``(dataset, order)``: the i-th decoded output corresponds to
    ``source[order[i]]``.
    """
    lengths = np.array([len(ids) + 1 for ids in source_tok.encode(source)])
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = lengths[order[start]]
        size = max(1, max_tokens // max(1, longest))
        batches.append(order[start : start + size])
        start += size
    sorted_text = tf.constant([source[i] for i in order], dtype=tf.string)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in batches])]).astype(np.int64)

    def tokenize(start, end):
        ids = source_tok.tokenize(sorted_text[start:end])
        eos = tf.fill([ids.nrows(), 1], EOS_ID)
        return tf.concat([ids, eos], axis=1).to_tensor(default_value=PAD_ID)

    # Variable-size batches: slice the sorted sentences at the precomputed boundaries.
    dataset = tf.data.Dataset.from_tensor_slices((offsets[:-1], offsets[1:])).map(tokenize)
    return dataset.prefetch(tf.data.AUTOTUNE), order
