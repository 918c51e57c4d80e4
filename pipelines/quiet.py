"""Keeping native libraries quiet on stderr: TensorFlow's start-up chatter, LiteRT's
delegate notice. Imported by the command line, the streaming stage and the notebooks."""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def native_stderr_silenced():
    """Discard what native code writes to the process's stderr inside the block.

    For the first import of TensorFlow in a notebook: its C++ libraries log start-up
    messages (oneDNN, CUDA probing) before absl logging is initialized, which no
    environment variable silences, and Jupyter kernels show file-descriptor output in
    the notebook. Python exceptions still propagate normally.
    """
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_tensorflow() -> None:
    """Import TensorFlow without its C++ logging: the start-up chatter (absl, oneDNN) and
    the CUDA probing of a CPU-only machine. Must run before anything imports it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():  # what is logged before absl is initialized
        import tensorflow  # noqa: F401
        import tensorflow_text  # noqa: F401
