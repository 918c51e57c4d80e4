"""Batched greedy and beam-search decoding for ``Seq2SeqTranslator``.

Both run the whole batch in one compiled ``tf.function`` graph with a symbolic loop over
output positions (no Python loop per sentence or per step), and stop as soon as every
hypothesis has produced EOS. Beam search with ``beam_size=1`` takes exactly the greedy
path: the per-beam top-1 of the log-probabilities is their argmax.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID

NEG = -1e9  # "impossible" score; finite so that sums never produce NaN


def _put_column(buffer, t, values):
    """buffer[:, t] = values, for a [N, L] buffer (shape-invariant inside the loop)."""
    column = ops.expand_dims(ops.arange(ops.shape(buffer)[1]) == t, 0)
    return ops.where(column, ops.expand_dims(values, 1), buffer)


def _without_banned(scores):
    """``scores`` [N, V] with padding and BOS ruled out: neither is a valid next token."""
    ids = ops.arange(ops.shape(scores)[-1])
    banned = ops.expand_dims((ids == PAD_ID) | (ids == BOS_ID), 0)
    return ops.where(banned, NEG, scores)


def _next_token_log_probs(logits):
    return _without_banned(ops.log_softmax(logits, axis=-1))


def max_output_length(source_length, max_length_ratio, max_length_offset):
    """The output budget for a batch whose (padded) sources have ``source_length`` tokens:
    ``int(ratio * length) + offset``, in float32 (an int or a scalar tensor)."""
    length = ops.cast(source_length, "float32")
    return ops.cast(length * max_length_ratio, "int32") + max_length_offset


def greedy_search(model, source, max_length, with_attention=True):
    """Greedy decoding of source ids [B, S].

    Returns ``(tokens [B, max_length], attention [B, max_length, S])``: output ids ending in
    EOS then padding, and each output step's attention over the source (zeros after EOS);
    attention is None without ``with_attention``.

    A sentence leaves the batch at its EOS, as in CTranslate2: the steps after it run on
    the sentences still being written, so a batch costs the sum of its sentences' lengths
    in decoder rows, not its longest sentence's length times its size (on a CPU, 46% more
    sentences/s in batches of 32; docs/serving.md). ``source`` must have a dynamic batch
    dimension (the loop's rows shrink).
    """
    memory, keys, mask, states, attentional = model.encode(source)
    batch, src_len = ops.shape(source)[0], ops.shape(source)[1]
    written = {"output": ops.full((batch, max_length), PAD_ID, "int32")}
    if with_attention:
        written["alignment"] = ops.zeros((batch, max_length, src_len), memory.dtype)
    # The decoder's inputs for the rows still decoding, and each one's row in the batch.
    live = (ops.arange(batch), ops.full((batch,), BOS_ID, "int32"), states, attentional,
            memory, keys, mask)

    def cond(t, live, written):
        return ops.logical_and(t < max_length, ops.size(live[0]) > 0)

    def body(t, live, written):
        rows, tokens, states, attentional, memory, keys, mask = live
        logits, states, attentional, weights = model.decoder.step(
            tokens, states, attentional, memory, keys, mask
        )
        # The argmax of the logits is the log-probabilities' (no softmax needed).
        tokens = ops.cast(ops.argmax(_without_banned(logits), axis=-1), "int32")
        at = ops.stack([rows, ops.full_like(rows, t)], axis=1)  # (row, step) of each
        written = {"output": ops.scatter_update(written["output"], at, tokens),
                   **({"alignment": ops.scatter_update(written["alignment"], at, weights)}
                      if with_attention else {})}
        going_on = ops.nonzero(tokens != EOS_ID)[0]
        live = keras.tree.map_structure(lambda x: ops.take(x, going_on, axis=0),
                                        (rows, tokens, states, attentional, memory, keys, mask))
        return t + 1, live, written

    _, _, written = ops.while_loop(cond, body, (0, live, written))
    return written["output"], written.get("alignment")


def length_penalty_factor(lengths, alpha):
    """GNMT length penalty ((5 + |y|) / 6) ** alpha (Wu et al., 2016); 1 when alpha = 0."""
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def beam_search(model, source, max_length, beam_size, alpha=0.0):
    """Beam search over source ids [B, S]; returns the best hypotheses [B, max_length].

    Finished hypotheses keep their beam slot and can only be extended by padding at no
    cost; the final choice ranks complete hypotheses by score / length penalty.
    """
    k = beam_size
    memory, keys, mask, states, attentional = model.encode(source)
    batch = ops.shape(source)[0]

    def tile(x):  # [B, ...] -> [B * k, ...], each sentence's beams adjacent
        return ops.repeat(x, k, axis=0)

    memory, keys, mask, attentional = tile(memory), tile(keys), tile(mask), tile(attentional)
    states = keras.tree.map_structure(tile, states)
    # Only the first beam is alive at the start, so the k initial beams are not duplicates.
    scores = ops.reshape(
        ops.tile(ops.concatenate([ops.zeros((1,)), ops.full((k - 1,), NEG)]), (batch,)), (-1,)
    )
    tokens = ops.full((batch * k,), BOS_ID, "int32")
    output = ops.zeros((batch * k, max_length), "int32")
    finished = ops.zeros((batch * k,), "bool")
    lengths = ops.zeros((batch * k,), "int32")
    vocab = model.decoder.vocab_size
    pad_only = ops.where(ops.arange(vocab) == PAD_ID, 0.0, NEG)

    def cond(t, tokens, states, attentional, output, scores, lengths, finished):
        return ops.logical_and(t < max_length, ops.logical_not(ops.all(finished)))

    def body(t, tokens, states, attentional, output, scores, lengths, finished):
        logits, states, attentional, _ = model.decoder.step(
            tokens, states, attentional, memory, keys, mask
        )
        log_probs = ops.where(ops.expand_dims(finished, 1), pad_only, _next_token_log_probs(logits))
        # Two-stage top-k: a global top-k candidate is always in its own beam's top-k.
        beam_best, beam_tokens = ops.top_k(log_probs, k)  # [B*k, k]
        candidates = ops.reshape(ops.expand_dims(scores, 1) + beam_best, (batch, k * k))
        scores, chosen = ops.top_k(candidates, k)  # [B, k]
        parent = ops.reshape(ops.arange(batch)[:, None] * k + chosen // k, (-1,))
        tokens = ops.take(ops.reshape(beam_tokens, (-1,)),
                          ops.reshape(ops.arange(batch)[:, None] * k * k + chosen, (-1,)))

        def gather(x):
            return ops.take(x, parent, axis=0)

        states = keras.tree.map_structure(gather, states)
        attentional, output = gather(attentional), gather(output)
        was_finished = gather(finished)
        lengths = gather(lengths) + ops.cast(ops.logical_not(was_finished), "int32")
        output = _put_column(output, t, tokens)
        finished = was_finished | (tokens == EOS_ID)
        return t + 1, tokens, states, attentional, output, ops.reshape(scores, (-1,)), lengths, finished

    loop = (0, tokens, states, attentional, output, scores, lengths, finished)
    _, _, _, _, output, scores, lengths, _ = ops.while_loop(cond, body, loop)
    normalized = ops.reshape(scores / length_penalty_factor(lengths, alpha), (batch, k))
    best = ops.arange(batch) * k + ops.cast(ops.argmax(normalized, axis=-1), "int32")
    return ops.take(output, best, axis=0)


class Translator:
    """Compiled batch decoding with a fixed strategy.

    Args:
        model: a ``Seq2SeqTranslator``.
        beam_size: 1 for greedy search, more for beam search.
        length_penalty: GNMT alpha for beam search (0 disables it).
        max_length_ratio, max_length_offset: output budget ``ratio * S + offset`` tokens.
    """

    def __init__(self, model, beam_size=1, length_penalty=0.0, max_length_ratio=1.5,
                 max_length_offset=10):
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        self.model, self.beam_size, self.length_penalty = model, beam_size, length_penalty
        self.max_length_ratio, self.max_length_offset = max_length_ratio, max_length_offset
        spec = tf.TensorSpec([None, None], tf.int32)
        self._greedy = tf.function(self._greedy_impl, input_signature=[spec])
        self._greedy_attention = tf.function(self._greedy_attention_impl, input_signature=[spec])
        self._beam = tf.function(self._beam_impl, input_signature=[spec])

    def _max_length(self, source):
        return max_output_length(ops.shape(source)[1], self.max_length_ratio,
                                 self.max_length_offset)

    def _greedy_impl(self, source):
        return greedy_search(self.model, source, self._max_length(source), with_attention=False)[0]

    def _greedy_attention_impl(self, source):
        return greedy_search(self.model, source, self._max_length(source))

    def _beam_impl(self, source):
        return beam_search(self.model, source, self._max_length(source), self.beam_size,
                           self.length_penalty)

    def __call__(self, source):
        """Decode source ids [B, S] -> output ids [B, L] (EOS-terminated, 0-padded)."""
        source = tf.convert_to_tensor(source, tf.int32)
        if self.beam_size == 1:
            return self._greedy(source)
        return self._beam(source)

    def greedy_with_attention(self, source):
        """Greedy output ids [B, L] and attention weights [B, L, S]."""
        return self._greedy_attention(tf.convert_to_tensor(source, tf.int32))
