"""Greedy and beam-search CTC decoding for ``CTCRecognizer`` (``keras.ops.ctc_decode``)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

STRATEGIES = ("greedy", "beam_search")


class CTCDecoder:
    """Compiled batch decoding: the model's forward pass and the CTC search in one graph.

    Greedy decoding takes the best class per frame, merges repeats and drops blanks;
    beam search (``tf.nn.ctc_beam_search_decoder`` underneath, no language model) keeps
    ``beam_width`` prefixes and sums the probabilities of the alignments of each.

    Args:
        model: a ``CTCRecognizer``.
        strategy: ``"greedy"`` or ``"beam_search"``.
        beam_width: prefixes kept by beam search.
    """

    def __init__(self, model, strategy: str = "greedy", beam_width: int = 16):
        if strategy not in STRATEGIES:
            raise ValueError(f"decoding strategy must be one of {STRATEGIES}, got {strategy!r}")
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
        self.model, self.strategy, self.beam_width = model, strategy, beam_width
        spec = {
            "features": tf.TensorSpec([None, None, model.config.num_features], tf.float32),
            "feature_lengths": tf.TensorSpec([None], tf.int32),
        }
        # A fixed signature: batches of every size and length share one traced graph.
        self._decode = tf.function(self._decode_impl, input_signature=[spec])

    def _decode_impl(self, inputs):
        logits = self.model(inputs, training=False)
        decoded, _ = ops.ctc_decode(
            logits, self.model.output_lengths(inputs["feature_lengths"]),
            strategy=self.strategy, beam_width=self.beam_width, top_paths=1,
            mask_index=self.model.config.blank_index,
        )
        return decoded[0]

    def __call__(self, inputs) -> list[list[int]]:
        """Label ids of each utterance of a batch ``{"features", "feature_lengths"}``."""
        decoded = np.asarray(self._decode(inputs))
        # ctc_decode pads its dense output with -1.
        return [[int(i) for i in row if i >= 0] for row in decoded]
