"""Greedy, beam-search and closed-set CTC decoding for ``CTCRecognizer``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

from models.config import STRATEGIES
from models.ctc_frames import ctc_frames_needed


def batch_spec(config) -> dict:
    """The ``tf.function`` input signature of a recognizer's batch: float32 features
    ``[B, T, F]`` and their int32 lengths ``[B]``, any batch size and length."""
    return {"features": tf.TensorSpec([None, None, config.num_features], tf.float32),
            "feature_lengths": tf.TensorSpec([None], tf.int32)}


def log_probs_and_lengths(model, inputs):
    """A ``CTCRecognizer``'s float32 log-probabilities ``[B, T, classes]`` of a batch and
    the output frames ``[B]`` of each utterance (graph ops: traceable or eager)."""
    logits = ops.cast(model(inputs, training=False), "float32")
    return ops.log_softmax(logits, axis=-1), model.output_lengths(inputs["feature_lengths"])


def ctc_alignment(log_probs: np.ndarray, ids: list[int], blank_index: int) -> list[int]:
    """The last frame of each label of ``ids`` in its likeliest CTC alignment (Viterbi)
    to ``[frames, classes]`` log-probabilities; ValueError if the frames are too few.

    Written here because neither TensorFlow nor Keras has a CTC forced aligner (PyTorch's
    is ``torchaudio.functional.forced_align``). States are the labels with a blank before,
    between and after them; a state is entered from itself, its predecessor, or, for a
    label unlike the one two states back, skipping the blank between them.
    """
    frames = len(log_probs)
    if frames < ctc_frames_needed(ids):
        raise ValueError(f"{frames} frames cannot hold an alignment of {len(ids)} labels")
    states = [blank_index]
    for label in ids:
        states += [label, blank_index]
    states = np.array(states)
    count = len(states)
    skip = np.zeros(count, bool)
    skip[3::2] = states[3::2] != states[1:-2:2]
    score = np.full(count, -np.inf)
    score[:2] = log_probs[0, states[:2]]
    back = np.zeros((frames, count), np.int64)
    for t in range(1, frames):
        candidates = np.stack([score, np.r_[-np.inf, score[:-1]],
                               np.where(skip, np.r_[-np.inf, -np.inf, score[:-2]], -np.inf)])
        move = np.argmax(candidates, axis=0)
        back[t] = np.arange(count) - move
        score = candidates[move, np.arange(count)] + log_probs[t, states]
    state = count - 1 if score[-1] >= score[-2] else count - 2
    path = [state]
    for t in range(frames - 1, 0, -1):
        state = back[t, state]
        path.append(state)
    path = path[::-1]
    # Label k is state 2k + 1; its last frame is the last time the path is there.
    last = {}
    for t, state in enumerate(path):
        last[state] = t
    return [last[2 * k + 1] for k in range(len(ids))]


class CTCDecoder:
    """Compiled batch decoding: the model's forward pass and the search in one graph.

    Greedy decoding takes the best class per frame, merges repeats and drops blanks;
    beam search (``keras.ops.ctc_decode``, ``tf.nn.ctc_beam_search_decoder`` underneath,
    no language model) keeps ``beam_width`` prefixes and sums the probabilities of the
    alignments of each. Closed-set decoding is isolated-word recognition with a fixed
    list of allowed transcripts (a Kaldi-style word-list grammar): it scores every
    candidate with its CTC likelihood, summed over all alignments, and returns the
    likeliest, so the output is always one of the candidates, never a misspelling.

    Args:
        model: a ``CTCRecognizer``.
        strategy: ``"greedy"``, ``"beam_search"`` or ``"closed_set"``.
        beam_width: prefixes kept by beam search.
        candidates: label ids of each allowed transcript (``closed_set`` only).
    """

    def __init__(self, model, strategy: str = "greedy", beam_width: int = 16,
                 candidates: list[list[int]] | None = None):
        if strategy not in STRATEGIES:
            raise ValueError(f"decoding strategy must be one of {STRATEGIES}, got {strategy!r}")
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
        if (strategy == "closed_set") != (candidates is not None):
            raise ValueError("candidates are required by, and only used by, closed_set decoding")
        if candidates is not None and (not candidates or not all(candidates)):
            raise ValueError("closed_set decoding needs at least one candidate, none empty")
        self.model, self.strategy, self.beam_width = model, strategy, beam_width
        if candidates is not None:
            longest = max(len(c) for c in candidates)
            self._candidates = tf.constant([c + [-1] * (longest - len(c)) for c in candidates],
                                           tf.int32)
            self._candidate_lengths = tf.constant([len(c) for c in candidates], tf.int32)
            self._frames_needed = tf.constant([ctc_frames_needed(c) for c in candidates],
                                              tf.int32)
        spec = batch_spec(model.config)
        # A fixed signature: batches of every size and length share one traced graph.
        self._decode = tf.function(self.decode_tensor, input_signature=[spec])

    def decode_tensor(self, inputs):
        """Label ids ``[B, L]`` (padded with -1) of a batch, with graph ops only: for
        ``tf.function``, or for a SavedModel that decodes in its graph."""
        logits = self.model(inputs, training=False)
        lengths = self.model.output_lengths(inputs["feature_lengths"])
        if self.strategy == "closed_set":
            return self._closed_set(ops.cast(logits, "float32"), lengths)
        decoded, _ = ops.ctc_decode(
            logits, lengths, strategy=self.strategy, beam_width=self.beam_width, top_paths=1,
            mask_index=self.model.config.blank_index,
        )
        return decoded[0]

    def _closed_set(self, logits, lengths):
        batch = ops.shape(logits)[0]

        def negative_log_likelihood(candidate):
            ids, length = candidate
            return ops.ctc_loss(ops.broadcast_to(ids[None, :], (batch, ops.shape(ids)[0])),
                                logits, ops.broadcast_to(length, (batch,)), lengths,
                                mask_index=self.model.config.blank_index)

        # One CTC loss per candidate over the whole batch: memory stays that of a batch,
        # however many candidates there are. [K, B]
        scores = tf.map_fn(negative_log_likelihood,
                           (self._candidates, self._candidate_lengths),
                           fn_output_signature=tf.float32)
        # TensorFlow's CTC loss of a label sequence longer than the frames allow is a
        # large finite number, not infinity, so impossible candidates are masked here.
        fits = self._frames_needed[:, None] <= lengths[None, :]
        scores = ops.where(fits, scores, np.inf)
        best = ops.take(self._candidates, ops.argmin(scores, axis=0), axis=0)
        # An utterance too short for every candidate decodes to nothing rather than to
        # an arbitrary first candidate.
        return ops.where(ops.any(fits, axis=0)[:, None], best, -1)

    def __call__(self, inputs) -> list[list[int]]:
        """Label ids of each utterance of a batch ``{"features", "feature_lengths"}``."""
        decoded = np.asarray(self._decode(inputs))
        # Both searches pad their dense output with -1.
        return [[int(i) for i in row if i >= 0] for row in decoded]
