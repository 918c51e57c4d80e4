"""Report notebooks: running them for a run directory, and the code they share.

``notebooks.py`` executes a notebook with injected parameters and writes the executed
``.ipynb`` and an HTML export into ``<run>/report/``; ``plots.py``, ``translation_runs.py``,
``speech_runs.py`` and ``memory_task.py`` hold the notebooks' analysis and plotting code,
so the notebooks stay short and the code is unit-tested.
"""

import json
from pathlib import Path


def read_metrics(root: Path) -> dict:
    """``metrics.json`` of a run whose ``evaluate`` stage has finished (FileNotFoundError otherwise)."""
    path = Path(root) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the evaluate stage first")
    return json.loads(path.read_text())
