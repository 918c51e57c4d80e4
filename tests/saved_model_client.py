"""A SavedModel client that cannot import this project: run in a fresh process by the
export tests, to prove the exported graphs need only TensorFlow (and tensorflow-text).

    python saved_model_client.py transcribe EXPORT_DIR WAV...  -> a JSON list of transcripts
    python saved_model_client.py translate EXPORT_DIR          -> stdin lines, JSON translations
    python saved_model_client.py bad-input EXPORT_DIR          -> JSON {case: error message}
"""

import importlib.abc
import json
import sys

PROJECT_PACKAGES = {"pipelines", "models", "data_prep", "tests"}


class BlockProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in PROJECT_PACKAGES:
            raise ImportError(f"the SavedModel client must not import {name}")
        return None


sys.meta_path.insert(0, BlockProject())
# This file's folder (tests/) is on sys.path; the project root must not be.
sys.path = [p for p in sys.path if not p.endswith(("/tests", "/tests/"))]

import tensorflow as tf  # noqa: E402


def waveforms(paths):
    audio = [tf.audio.decode_wav(tf.io.read_file(p), desired_channels=1).audio[:, 0]
             for p in paths]
    lengths = tf.constant([int(a.shape[0]) for a in audio], tf.int32)
    longest = int(tf.reduce_max(lengths))
    return tf.stack([tf.pad(a, [[0, longest - a.shape[0]]]) for a in audio]), lengths


def main(command, export_dir, *args):
    if command == "translate":
        import tensorflow_text  # noqa: F401  (registers the SentencePiece ops)
    model = tf.saved_model.load(export_dir)
    if command == "transcribe":
        texts = model.transcribe(*waveforms(args)).numpy()
        result = [t.decode() for t in texts]
    elif command == "translate":
        lines = sys.stdin.read().split("\n")[:-1]
        result = [t.decode() for t in model.translate(tf.constant(lines)).numpy()]
    else:
        cases = {
            "int16 samples": (tf.zeros([1, 800], tf.int16), tf.constant([800])),
            "one waveform, no batch axis": (tf.zeros([800]), tf.constant([800])),
            "lengths mismatch": (tf.zeros([2, 800]), tf.constant([800])),
            "length too long": (tf.zeros([1, 800]), tf.constant([900])),
            "int16-scale floats": (tf.fill([1, 800], 12000.0), tf.constant([800])),
        }
        result = {}
        for name, (audio, lengths) in cases.items():
            try:
                model.transcribe(audio, lengths)
                result[name] = None
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
                result[name] = str(e)
        silence = model.transcribe(tf.zeros([1, 8000]), tf.constant([8000])).numpy()
        result["silence"] = silence[0].decode()
        result["empty batch"] = model.transcribe(tf.zeros([0, 0]),
                                                 tf.zeros([0], tf.int32)).numpy().tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
