"""Speech recognition pipeline (CTC): prepare -> train -> evaluate, plus transcribe.

    python -m pipelines.speech all --config pipelines/configs/speech_smoke.yaml
    ls *.wav | python -m pipelines.speech transcribe --config ...

Corpora: isolated FSDD digits, connected digit strings built from FSDD, or any JSONL
manifests (``python -m data_prep.manifest`` converts LibriSpeech, LJSpeech, Common Voice).
Files in ``runs/<name>/``: ``config.yaml`` (resolved), ``data/`` (``{split}.jsonl``
manifests with normalized transcripts, generated audio, ``report.json``), ``features/``
(cached train/val features and normalization statistics), ``checkpoints/``, ``logs/``
(TensorBoard and ``history.json``), ``hyps/`` (test transcripts) and ``metrics.json``.

Scoring: references are the manifest transcripts after ``normalize_transcript`` (the
same normalization as for training: lowercase, optional punctuation removal, whitespace
collapsed); hypotheses are the decoder output with whitespace collapsed. WER and CER are
jiwer's on those strings (CER counts every character, spaces included).

Modules: ``config`` (the experiment dataclasses), ``data`` (corpora, cached features and
labels), ``inference`` (batched transcription), ``stages`` (the stages).
"""

from pipelines import cli
from pipelines.speech.config import SpeechConfig

DESCRIPTION = "Train and evaluate CTC speech recognition models."
STAGE_NAMES = ("prepare", "train", "evaluate", "transcribe", "report")


def main(argv=None) -> int:
    """Run ``python -m pipelines.speech`` with ``argv``; the exit code."""
    return cli.main(argv, "speech", DESCRIPTION, SpeechConfig, STAGE_NAMES,
                    "pipelines.speech.stages", pipeline=["prepare", "train", "evaluate"])
