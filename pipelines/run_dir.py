"""Run directories: stage records that let unchanged stages be skipped.

A run lives in ``runs/<name>/``. Each stage records, in ``stages/<stage>.json``, a
fingerprint of everything it read (its config sections and the fingerprints or hashes of
its inputs). Rerunning a stage whose fingerprint is unchanged is a no-op unless forced.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import yaml

from data_prep.file_io import atomic_write_json, atomic_write_text
from pipelines.config import ConfigError


def fingerprint(*parts) -> str:
    """Stable hash of JSON-able parts (dataclasses are converted to dicts)."""
    def plain(x):
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class RunDir:
    """Paths and stage bookkeeping for one run.

    Args:
        root: the run directory; created by the first file a stage writes into it.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, *parts) -> Path:
        return self.root.joinpath(*parts)

    def check_pipeline(self, pipeline: str, sections) -> None:
        """ConfigError unless the run is new or was made by ``pipeline``.

        ``run.json`` names the pipeline; a run from before it existed is judged by its
        ``config.yaml``, whose sections must be among ``sections`` (the config's fields).
        """
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.root}: the run directory is a file, not a directory")
        info, config = self.path("run.json"), self.path("config.yaml")
        if info.is_file():
            owner = json.loads(info.read_text())["pipeline"]
            if owner != pipeline:
                raise ConfigError(f"{self.root}: a {owner} run, not a {pipeline} one; use "
                                  f"python -m pipelines.{owner}, or another --run-dir")
        elif config.is_file():
            foreign = set(yaml.safe_load(config.read_text()) or {}) - set(sections)
            if foreign:
                raise ConfigError(f"{self.root}: not a {pipeline} run (its config.yaml has "
                                  f"sections {sorted(foreign)}); use another --run-dir")

    def record(self, pipeline: str, config) -> None:
        """Before a stage changes the run: note the pipeline that owns it and the resolved
        config (file + overrides + defaults) the stage runs with."""
        atomic_write_json(self.path("run.json"), {"pipeline": pipeline})
        atomic_write_text(self.path("config.yaml"),
                          yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

    def discard_if_unfinished(self) -> None:
        """Remove the run directory unless some stage finished in it: for a new run whose
        first command failed, so that no half-made run is left behind."""
        if self.root.is_dir() and not any(self.path("stages").glob("*.json")):
            shutil.rmtree(self.root)

    def _record(self, stage: str) -> Path:
        return self.path("stages", f"{stage}.json")

    def stage_fingerprint(self, stage: str) -> str | None:
        """Fingerprint of the last completed run of ``stage``, or None."""
        record = self._record(stage)
        if not record.is_file():
            return None
        return json.loads(record.read_text())["fingerprint"]

    def require(self, stage: str, before: str) -> str:
        """Fingerprint of ``stage``; ConfigError if it has not run (needed by ``before``)."""
        fp = self.stage_fingerprint(stage)
        if fp is None:
            raise ConfigError(f"{self.root}: stage '{stage}' has not run yet; run it before "
                              f"'{before}'")
        return fp

    def is_current(self, stage: str, fp: str) -> bool:
        return self.stage_fingerprint(stage) == fp

    def up_to_date(self, stage: str, fp: str, force: bool, what) -> bool:
        """Whether ``stage`` can be skipped: it last finished with fingerprint ``fp`` and
        is not forced. If so, prints ``[stage] up to date (what)``; ``what``: the stage's
        output, shown to the user."""
        if force or not self.is_current(stage, fp):
            return False
        print(f"[{stage}] up to date ({what})")
        return True

    def mark_done(self, stage: str, fp: str, **info) -> None:
        atomic_write_json(self._record(stage), {"fingerprint": fp, "finished": time.time(), **info})

    def invalidate(self, *stages: str) -> None:
        """Forget that ``stages`` ran: they rerun next time, and stages needing them stop."""
        for stage in stages:
            self._record(stage).unlink(missing_ok=True)
