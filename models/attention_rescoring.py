"""Attention rescoring of a hybrid CTC/attention model's CTC N-best lists (WeNet)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

from models.ctc_decoding import batch_spec


def combined_scores(ctc_scores, attention_scores, ctc_weight: float):
    """``ctc_weight * ctc + (1 - ctc_weight) * attention``; -inf (never chosen) where the
    CTC score is not finite."""
    scores = ctc_weight * ctc_scores + (1.0 - ctc_weight) * attention_scores
    return ops.where(ops.isfinite(ctc_scores), scores, -np.inf)


def _check(model, nbest: int, ctc_weight: float) -> None:
    if not hasattr(model, "attention_log_likelihood"):
        raise ValueError("attention rescoring needs a model with an attention decoder "
                         "(CTCAttentionRecognizer)")
    if nbest < 1:
        raise ValueError(f"beam_width must be at least 1, got {nbest}")
    if not 0.0 <= ctc_weight <= 1.0:
        raise ValueError(f"ctc_weight must be in [0, 1], got {ctc_weight}")


class AttentionRescoringDecoder:
    """Batch decoding of a ``CTCAttentionRecognizer`` by attention rescoring, all in one
    compiled graph.

    CTC prefix beam search (``keras.ops.ctc_decode``, ``tf.nn.ctc_beam_search_decoder``
    underneath) keeps ``beam_width`` prefixes and returns them all (at most
    ``vocab_size``), with their CTC log probabilities (summed over each prefix's
    alignments), as the N-best list. The attention decoder then scores each hypothesis
    teacher-forced, ``log P(hyp + [eos])``, all ``B * N`` of a batch at once over the
    encoder outputs repeated ``N`` times, and the hypothesis with the best
    ``ctc_weight * ctc + (1 - ctc_weight) * attention`` (ESPnet's weighting of its joint
    scores) is the transcript. The encoder runs once per batch. Called like
    ``CTCDecoder``: a batch in, label ids of each utterance out; ``decode_tensor`` is the
    graph a SavedModel exports.

    Args:
        model: a ``CTCAttentionRecognizer``.
        beam_width: prefixes kept by the CTC search, and the size of the N-best list.
        ctc_weight: the CTC score's weight in [0, 1] (ESPnet and WeNet use 0.3 to 0.5).
    """

    def __init__(self, model, beam_width: int = 16, ctc_weight: float = 0.3):
        _check(model, beam_width, ctc_weight)
        self.model, self.beam_width, self.ctc_weight = model, beam_width, ctc_weight
        self.top_paths = min(beam_width, model.config.vocab_size)
        spec = batch_spec(model.config)
        self._decode = tf.function(self.decode_tensor, input_signature=[spec])
        self._nbest = tf.function(self.scored_nbest, input_signature=[spec])

    def _search(self, inputs):
        """``(encoded, lengths, hypotheses [B, N, L] padded with -1, ctc [B, N])``."""
        model = self.model
        encoded = model.encode(inputs, training=False)
        logits = model.output_layer(encoded)
        lengths = model.output_lengths(inputs["feature_lengths"])
        # TensorFlow's search fails unless every utterance ends with top_paths prefixes:
        # one frame gives vocab_size (the empty one and each label), none gives one. So
        # N is at most vocab_size, and an utterance of no frames is searched over one
        # (of padding) and decodes to nothing below.
        paths, ctc = ops.ctc_decode(
            logits, ops.maximum(lengths, 1), strategy="beam_search",
            beam_width=self.beam_width, top_paths=self.top_paths,
            mask_index=model.config.blank_index)
        paths = ops.transpose(paths, (1, 0, 2))  # [B, N, T']: as long as the utterance
        paths = ops.where((lengths > 0)[:, None, None], paths, -1)
        longest = ops.max(ops.sum(ops.cast(paths >= 0, "int32"), axis=-1))
        return encoded, lengths, paths[:, :, :ops.maximum(longest, 1)], ops.cast(ctc, "float32")

    def scored_nbest(self, inputs):
        """The N-best list of a batch and its scores: ``(hypotheses [B, N, L] padded with
        -1, ctc [B, N], attention [B, N], combined [B, N])``, graph ops only."""
        encoded, lengths, hyps, ctc = self._search(inputs)
        batch, n, length = ops.shape(hyps)[0], ops.shape(hyps)[1], ops.shape(hyps)[2]
        attention = self.model.attention_log_likelihood(
            ops.repeat(encoded, n, axis=0), ops.repeat(lengths, n, axis=0),
            ops.reshape(hyps, (batch * n, length)))
        attention = ops.reshape(attention, (batch, n))
        return hyps, ctc, attention, combined_scores(ctc, attention, self.ctc_weight)

    def decode_tensor(self, inputs):
        """Label ids ``[B, L]`` (padded with -1) of a batch, with graph ops only."""
        hyps, _, _, combined = self.scored_nbest(inputs)
        best = ops.argmax(combined, axis=-1)
        return ops.take_along_axis(hyps, best[:, None, None], axis=1)[:, 0]

    def nbest(self, inputs) -> list[list[tuple[list[int], float, float]]]:
        """Each utterance's N-best list: ``(label ids, ctc score, attention score)``."""
        hyps, ctc, attention, _ = (np.asarray(t) for t in self._nbest(inputs))
        return [[([int(i) for i in h if i >= 0], float(c), float(a))
                 for h, c, a in zip(*rows, strict=True)]
                for rows in zip(hyps, ctc, attention, strict=True)]

    def __call__(self, inputs) -> list[list[int]]:
        """Label ids of each utterance of a batch ``{"features", "feature_lengths"}``."""
        decoded = np.asarray(self._decode(inputs))
        return [[int(i) for i in row if i >= 0] for row in decoded]


def _padded(rows: list[list[int]]) -> np.ndarray:
    """Label ids of each row, padded with -1 to the longest (at least one column)."""
    out = np.full((len(rows), max([1, *map(len, rows)])), -1, np.int32)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


class LanguageModelRescoringDecoder:
    """Attention rescoring of the N-best lists of the word language model's search.

    ``lm_decoder`` (a ``models.ctc_lm_decoding.CTCLanguageModelDecoder`` over a
    ``CTCAttentionRecognizer``) keeps its beam and returns its ``nbest`` best transcripts
    with their scores (CTC plus the weighted language model and word bonuses); the
    attention decoder scores each, teacher-forced, over the encoder outputs of the same
    forward pass, and the best ``ctc_weight * search score + (1 - ctc_weight) *
    attention`` wins. The search runs in Python (pyctcdecode); the forward pass and the
    scoring are compiled. Called like ``CTCDecoder``.

    Args:
        lm_decoder: the language model decoder whose N-best lists are rescored.
        encode: the label ids of a transcript (the vocabulary's ``encode``).
        nbest: hypotheses rescored per utterance.
        ctc_weight: the search score's weight in [0, 1].
    """

    def __init__(self, lm_decoder, encode, nbest: int = 16, ctc_weight: float = 0.3):
        model = lm_decoder.model
        _check(model, nbest, ctc_weight)
        self.lm_decoder, self.nbest, self.ctc_weight = lm_decoder, nbest, ctc_weight
        self._encode = encode
        spec = batch_spec(model.config)

        def forward(inputs):
            encoded = model.encode(inputs, training=False)
            logits = ops.cast(model.output_layer(encoded), "float32")
            return (ops.log_softmax(logits, axis=-1),
                    model.output_lengths(inputs["feature_lengths"]), encoded)

        def score(encoded, lengths, rows, hypotheses):
            return model.attention_log_likelihood(ops.take(encoded, rows, axis=0),
                                                  ops.take(lengths, rows, axis=0), hypotheses)

        self._forward = tf.function(forward, input_signature=[spec])
        self._score = tf.function(score, reduce_retracing=True)

    def __call__(self, inputs) -> list[list[int]]:
        log_probs, lengths, encoded = self._forward(inputs)
        beams = [self.lm_decoder.search_nbest(x[:n], self.nbest) for x, n in
                 zip(np.asarray(log_probs), np.asarray(lengths), strict=True)]
        hyps = [[self._encode(text) for text, _ in b] for b in beams]
        rows = np.repeat(np.arange(len(beams), dtype=np.int32), [len(b) for b in beams])
        if not rows.size:
            return [[] for _ in beams]
        attention = np.asarray(self._score(encoded, lengths, rows,
                                           _padded([h for hs in hyps for h in hs])))
        result, start = [], 0
        for b, h in zip(beams, hyps, strict=True):
            combined = combined_scores(np.array([s for _, s in b], np.float32),
                                       attention[start:start + len(b)], self.ctc_weight)
            result.append(h[int(np.argmax(combined))] if b else [])
            start += len(b)
        return result
