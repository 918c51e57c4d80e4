"""Speech recognition pipeline (CTC): prepare -> train -> evaluate, plus transcribe.

    python -m pipelines.speech all --config pipelines/configs/speech_smoke.yaml
    python -m pipelines.speech transcribe --config ... a.wav b.wav   # or paths on stdin
    python -m pipelines.speech stream --config ... FILE.wav ...   # or raw PCM on stdin: -

Corpora: isolated FSDD digits, connected digit strings built from FSDD, or any JSONL
manifests (``python -m data_prep.manifest`` converts LibriSpeech, LJSpeech, Common Voice).
Files in ``runs/<name>/``: ``config.yaml`` (resolved), ``data/`` (``{split}.jsonl``
manifests with normalized transcripts, generated audio, ``report.json``), ``features/``
(training features as TFRecord shards, validation features, normalization statistics),
``checkpoints/``, ``logs/`` (TensorBoard and ``history.json``), ``hyps/`` (test
transcripts), ``metrics.json``, and
from the ``export`` stage ``export/`` (a SavedModel transcribing waveforms) and, for a
causal model, ``tflite/`` (the streaming step as float32, int8 and float16 TFLite models).

Scoring: references are the manifest transcripts after ``normalize_transcript`` (the
same normalization as for training: lowercase, optional punctuation removal, whitespace
collapsed); hypotheses are the decoder output with whitespace collapsed. WER and CER are
jiwer's on those strings (CER counts every character, spaces included).

Modules: ``config`` (the experiment dataclasses), ``data`` (corpora, cached features and
labels), ``inference`` (batched transcription, the SavedModel export), ``streaming`` (the
streaming step and its driver, the TFLite export), ``shards`` (the training-feature
shards), ``stages`` (the stages).
"""

from pipelines import cli
from pipelines.speech.config import SpeechConfig

DESCRIPTION = "Train and evaluate CTC speech recognition models."
# The stages, in order: stages.py makes its STAGES from these names (known here, before
# TensorFlow is imported, for the command line).
STAGE_NAMES = ("prepare", "train", "evaluate", "transcribe", "stream", "export", "report")


def arguments(parser) -> None:
    """The ``transcribe`` and ``stream`` stages' arguments."""
    parser.add_argument(
        "audio", nargs="*", metavar="FILE.wav | -",
        help="transcribe: audio files (none: their paths are read from --input or stdin, "
             "one a line); stream: audio files, or - (the default) for raw 16-bit "
             "little-endian mono PCM on stdin at the model's sample rate "
             "(features.sample_rate)")
    parser.add_argument(
        "--tflite", action="store_true",
        help="stream: run the exported TFLite step model (see export) with the LiteRT "
             "interpreter instead of the Keras model")
    parser.add_argument("--int8", action="store_true",
                        help="stream --tflite: the dynamic-range int8 model, not float32")
    parser.add_argument("--float16", action="store_true",
                        help="stream --tflite: the float16-weight model, not float32")


def main(argv=None) -> int:
    """Run ``python -m pipelines.speech`` with ``argv``; the exit code."""
    return cli.main(argv, "speech", DESCRIPTION, SpeechConfig, STAGE_NAMES,
                    "pipelines.speech.stages", pipeline=["prepare", "train", "evaluate"],
                    arguments=arguments, file_stages=("transcribe", "stream"))
