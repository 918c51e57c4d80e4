"""CTC frame arithmetic: feature frames in, logit frames out, and what a transcript needs.

The one place these counts are written. No TensorFlow: the config checks
(``SpeechConfig.streaming_frames``) use it before TensorFlow is imported.
"""

from __future__ import annotations


def frames_per_output(conv_layers: int, conv_stride: int) -> int:
    """Feature frames per logit frame: each strided convolution divides by its stride."""
    return conv_stride ** conv_layers


def subsampled_length(length, conv_layers: int, conv_stride: int):
    """Frames after the front end: each strided convolution keeps ceil(n / stride).

    Works on Python ints, NumPy arrays and tensors alike.
    """
    for _ in range(conv_layers):
        length = (length + conv_stride - 1) // conv_stride
    return length


def min_input_frames(logit_frames: int, conv_layers: int, conv_stride: int) -> int:
    """Fewest feature frames the front end turns into ``logit_frames`` logit frames."""
    return max(1, (logit_frames - 1) * frames_per_output(conv_layers, conv_stride) + 1)


def ctc_frames_needed(ids: list[int]) -> int:
    """Fewest frames that can emit ``ids`` under CTC: one per label, plus a blank
    between each pair of equal neighbours ("three" needs 6 frames)."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:], strict=False))
