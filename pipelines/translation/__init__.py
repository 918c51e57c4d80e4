"""Translation pipeline: prepare -> train -> evaluate, plus translate.

    python -m pipelines.translation all --config pipelines/configs/translation_smoke.yaml
    echo "Ein Hund läuft." | python -m pipelines.translation translate --config ...

Files in ``runs/<name>/``: ``config.yaml`` (resolved), ``data/`` (cleaned splits),
``tokenizer/`` (SentencePiece models), ``checkpoints/``, ``logs/`` (TensorBoard and
``history.json``), ``hyps/`` (test translations), ``metrics.json`` and, after the
``export`` stage, ``export/`` (a SavedModel translating strings to strings).

Modules: ``config`` (the experiment dataclasses), ``data`` (corpora and tokenizers),
``inference`` (batched translation, the SavedModel export), ``stages`` (the stages).
"""

from pipelines import cli
from pipelines.translation.config import TranslationConfig

DESCRIPTION = "Train and evaluate RNN attention translation models."
# The stages, in order: stages.py makes its STAGES from these names (known here, before
# TensorFlow is imported, for the command line).
STAGE_NAMES = ("prepare", "train", "evaluate", "translate", "export", "report")


def main(argv=None) -> int:
    """Run ``python -m pipelines.translation`` with ``argv``; the exit code."""
    return cli.main(argv, "translation", DESCRIPTION, TranslationConfig, STAGE_NAMES,
                    "pipelines.translation.stages", pipeline=["prepare", "train", "evaluate"])
