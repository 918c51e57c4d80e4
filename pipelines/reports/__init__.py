"""The code the report notebooks share.

``plots.py``, ``translation_runs.py``, ``speech_runs.py`` and ``memory_task.py`` hold the
notebooks' analysis and plotting code, so the notebooks stay short and the code is
unit-tested. The ``report`` stage that runs a notebook for a run directory and writes the
executed ``.ipynb`` and an HTML export into ``<run>/report/`` is ``pipelines.report_stage``.
"""

import json
from pathlib import Path


def read_metrics(root: Path) -> dict:
    """``metrics.json`` of a run whose ``evaluate`` stage has finished (FileNotFoundError otherwise)."""
    path = Path(root) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the evaluate stage first")
    return json.loads(path.read_text())
