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


def _next_token_log_probs(logits):
    """Log-probabilities with padding and BOS ruled out: neither is a valid next token."""
    log_probs = ops.log_softmax(logits, axis=-1)
    ids = ops.arange(ops.shape(logits)[-1])
    banned = ops.expand_dims((ids == PAD_ID) | (ids == BOS_ID), 0)
    return ops.where(banned, NEG, log_probs)


def max_output_length(source_length, max_length_ratio, max_length_offset):
    """The output budget for a batch whose (padded) sources have ``source_length`` tokens:
    ``int(ratio * length) + offset``, in float32 (an int or a scalar tensor)."""
    length = ops.cast(source_length, "float32")
    return ops.cast(length * max_length_ratio, "int32") + max_length_offset


def _shrinking_loop(cond, body, loop_vars):
    """``ops.while_loop`` whose tensors may lose rows from one step to the next (the
    searches drop finished sentences): their first dimension is declared variable, which
    a batch of known size (a traced constant) would otherwise forbid."""
    loop_vars = tf.nest.map_structure(tf.convert_to_tensor, loop_vars)

    def rows_vary(x):
        shape = x.shape
        return shape if shape.rank in (None, 0) else tf.TensorShape([None]) + shape[1:]

    return tf.while_loop(cond, body, loop_vars,
                         shape_invariants=tf.nest.map_structure(rows_vary, loop_vars))


def greedy_search(model, source, max_length, with_attention=True):
    """Greedy decoding of source ids [B, S].

    Returns ``(tokens [B, max_length], attention [B, max_length, S])``: output ids ending in
    EOS then padding, and each output step's attention over the source (zeros after EOS);
    attention is None without ``with_attention``.

    A sentence leaves the batch at its EOS, as in CTranslate2: the steps after it run on
    the sentences still being written, so a batch costs the sum of its sentences' lengths
    in decoder rows, not its longest sentence's length times its size (on a CPU, about a
    third more sentences/s in batches of 32; docs/serving.md).
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
        # The log-probabilities' argmax, not the logits': beam search's top-1 then picks
        # the same token even where rounding (float16) makes two log-probabilities equal.
        tokens = ops.cast(ops.argmax(_next_token_log_probs(logits), axis=-1), "int32")
        at = ops.stack([rows, ops.full_like(rows, t)], axis=1)  # (row, step) of each
        written = {"output": ops.scatter_update(written["output"], at, tokens),
                   **({"alignment": ops.scatter_update(written["alignment"], at, weights)}
                      if with_attention else {})}
        going_on = ops.nonzero(tokens != EOS_ID)[0]
        live = keras.tree.map_structure(lambda x: ops.take(x, going_on, axis=0),
                                        (rows, tokens, states, attentional, memory, keys, mask))
        return t + 1, live, written

    _, _, written = _shrinking_loop(cond, body, (0, live, written))
    return written["output"], written.get("alignment")


def length_penalty_factor(lengths, alpha):
    """GNMT length penalty ((5 + |y|) / 6) ** alpha (Wu et al., 2016); 1 when alpha = 0."""
    return ops.power((5.0 + ops.cast(lengths, "float32")) / 6.0, alpha)


def beam_search(model, source, max_length, beam_size, alpha=0.0):
    """Beam search over source ids [B, S]; returns the best hypotheses [B, max_length].

    Finished hypotheses keep their beam slot and can only be extended by padding at no
    cost; the final choice ranks complete hypotheses by score / length penalty. A
    sentence whose beams have all ended leaves the loop, as in ``greedy_search``.
    """
    k = beam_size
    memory, keys, mask, states, attentional = model.encode(source)
    batch = ops.shape(source)[0]

    def tile(x):  # [B, ...] -> [B * k, ...], each sentence's beams adjacent
        return ops.repeat(x, k, axis=0)

    # Only the first beam is alive at the start, so the k initial beams are not duplicates.
    scores = ops.reshape(
        ops.tile(ops.concatenate([ops.zeros((1,)), ops.full((k - 1,), NEG)]), (batch,)), (-1,)
    )
    # Each beam's hypothesis so far, its score and length: the loop's copy of the beams of
    # the sentences still searched, and ``ended`` for every sentence's (written each step:
    # a sentence's last write is its result).
    beams = {"output": ops.full((batch * k, max_length), PAD_ID, "int32"), "scores": scores,
             "lengths": ops.zeros((batch * k,), "int32")}
    live = (ops.arange(batch), ops.full((batch * k,), BOS_ID, "int32"),
            keras.tree.map_structure(tile, states), tile(attentional), tile(memory), tile(keys),
            tile(mask), beams, ops.zeros((batch * k,), "bool"))
    vocab = model.decoder.vocab_size
    pad_only = ops.where(ops.arange(vocab) == PAD_ID, 0.0, NEG)

    def cond(t, live, ended):
        return ops.logical_and(t < max_length, ops.size(live[0]) > 0)

    def body(t, live, ended):
        sentences, tokens, states, attentional, memory, keys, mask, beams, finished = live
        n = ops.shape(sentences)[0]
        logits, states, attentional, _ = model.decoder.step(
            tokens, states, attentional, memory, keys, mask
        )
        log_probs = ops.where(ops.expand_dims(finished, 1), pad_only, _next_token_log_probs(logits))
        # Two-stage top-k: a global top-k candidate is always in its own beam's top-k.
        beam_best, beam_tokens = ops.top_k(log_probs, k)  # [n*k, k]
        candidates = ops.reshape(ops.expand_dims(beams["scores"], 1) + beam_best, (n, k * k))
        scores, chosen = ops.top_k(candidates, k)  # [n, k]
        parent = ops.reshape(ops.arange(n)[:, None] * k + chosen // k, (-1,))
        tokens = ops.take(ops.reshape(beam_tokens, (-1,)),
                          ops.reshape(ops.arange(n)[:, None] * k * k + chosen, (-1,)))

        def gather(x):
            return ops.take(x, parent, axis=0)

        states = keras.tree.map_structure(gather, states)
        attentional, output = gather(attentional), gather(beams["output"])
        was_finished = gather(finished)
        beams = {"output": _put_column(output, t, tokens), "scores": ops.reshape(scores, (-1,)),
                 "lengths": gather(beams["lengths"])
                 + ops.cast(ops.logical_not(was_finished), "int32")}
        finished = was_finished | (tokens == EOS_ID)
        rows = ops.reshape(sentences[:, None] * k + ops.arange(k), (-1, 1))  # in the batch
        ended = {name: ops.scatter_update(ended[name], rows, beams[name]) for name in ended}
        # The sentences with a beam still open go on.
        going_on = ops.nonzero(ops.logical_not(ops.all(ops.reshape(finished, (n, k)), 1)))[0]
        beam_rows = ops.reshape(going_on[:, None] * k + ops.arange(k, dtype=going_on.dtype), (-1,))
        live = (ops.take(sentences, going_on, axis=0), *keras.tree.map_structure(
            lambda x: ops.take(x, beam_rows, axis=0),
            (tokens, states, attentional, memory, keys, mask, beams, finished)))
        return t + 1, live, ended

    _, _, ended = _shrinking_loop(cond, body, (0, live, beams))
    normalized = ops.reshape(ended["scores"] / length_penalty_factor(ended["lengths"], alpha),
                             (batch, k))
    best = ops.arange(batch) * k + ops.cast(ops.argmax(normalized, axis=-1), "int32")
    return ops.take(ended["output"], best, axis=0)


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
