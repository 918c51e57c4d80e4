"""Run directories: stage records that let unchanged stages be skipped.

A run lives in ``runs/<name>/``. Each stage records, in ``stages/<stage>.json``, a
fingerprint of everything it read (its config sections and the fingerprints or hashes of
its inputs) and the config sections themselves. Rerunning a stage whose fingerprint is
unchanged is a no-op unless forced. A stage refuses a config that differs from the one
the run's data and model were made with (``BUILDS``), naming the fields: the run's
records would otherwise claim one model and hold another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import yaml

from data_prep.file_io import atomic_write_json, atomic_write_text
from pipelines.config import ConfigError

# The stages that make what every later stage reads (the data, the model): their config
# may not change after them, and config.yaml is the config they were made with.
BUILDS = ("prepare", "train")
# The stages made from each stage's output: a rerun of the stage makes them stale.
DOWNSTREAM = {"prepare": ("train", "evaluate", "export", "report"),
              "train": ("evaluate", "export", "report"), "evaluate": ("report",)}
# What each stage leaves in the run as its result; a rerun of it or of a stage before it
# moves them to ``OUTDATED``. (Train's checkpoints stay: the trainer refuses to resume
# them with another config, and ``train --force`` discards them.)
RESULTS = {"evaluate": ("metrics.json", "hyps"), "export": ("export", "tflite"),
           "report": ("report",)}
OUTDATED = "outdated"
LOCK_FILE = ".lock"  # held by the process working in the run; it holds that process's id


def fingerprint(*parts) -> str:
    """Stable hash of JSON-able parts (dataclasses are converted to dicts)."""
    def plain(x):
        return dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x

    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def plain(parts: dict) -> dict:
    """Config ``parts`` ({section: dataclass or dict}) as JSON would give them back."""
    return json.loads(json.dumps({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v)
                                  else v for k, v in parts.items()}, default=str))


def _leaves(tree: dict, prefix: str = "") -> dict:
    """``{"model.cell": "gru", ...}``: the dotted fields of nested config sections."""
    leaves = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            leaves.update(_leaves(value, f"{prefix}{key}."))
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


class RunDir:
    """Paths and stage bookkeeping for one run.

    Args:
        root: the run directory; created by the first file a stage writes into it.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock = None  # the open lock file while this process holds the run
        self._made_parents = []  # the missing parent folders ``lock`` made

    def lock(self) -> None:
        """Hold the run for this process until ``unlock`` or its exit (the kernel releases
        an ``flock`` when its process dies, however it dies). ConfigError naming the
        process that holds it, or saying why the run directory cannot be written."""
        self._made_parents = [p for p in self.root.parents if not p.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise ConfigError(f"{self.root}: cannot write the run directory "
                              f"({e.strerror}); use another --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"{self.root}: in use by process {holder}, running a stage in "
                              "it; wait for it to end, or use another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    @property
    def locked(self) -> bool:
        """Whether this process holds the run (``lock``)."""
        return self._lock is not None

    def unlock(self) -> None:
        """Let other processes work in the run (the lock file stays: removing it would let
        two processes lock two different files)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

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

    def record(self, pipeline: str, config=None) -> None:
        """Before a stage changes the run: note the pipeline that owns it and, for a stage
        of ``BUILDS``, the resolved config (file + overrides + defaults) it runs with."""
        atomic_write_json(self.path("run.json"), {"pipeline": pipeline})
        if config is not None:
            atomic_write_text(self.path("config.yaml"),
                              yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))

    def config_differences(self, stage: str, parts: dict) -> list[str]:
        """The fields of config ``parts`` that differ from those ``stage`` last finished
        with (a record from before stages kept them: the run's config.yaml). Fields
        only one side has (added to the config since) are not compared."""
        record = json.loads(self._record(stage).read_text())
        recorded = record.get("config")
        if recorded is None:
            config = self.path("config.yaml")
            recorded = yaml.safe_load(config.read_text()) if config.is_file() else {}
        old, new = _leaves(recorded or {}), _leaves(plain(parts))
        return [k for k, v in new.items() if k in old and old[k] != v]

    def make_stale(self, stage: str) -> list[str]:
        """Before ``stage`` reruns: forget it and the stages made from its output, and
        move their results to ``OUTDATED/`` (replacing older ones there), so that nothing
        made from the old output looks current. Returns the names moved."""
        later = DOWNSTREAM.get(stage, ())
        self.invalidate(stage, *later)
        moved = []
        for name in (n for s in (stage, *later) for n in RESULTS.get(s, ())):
            if self.path(name).exists():
                target = self.path(OUTDATED, name)
                if target.is_dir():
                    shutil.rmtree(target)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.path(name), target)
                moved.append(name)
        return moved

    def discard_if_unfinished(self) -> None:
        """Remove the run directory unless some stage finished in it: for a new run whose
        first command failed, so that no half-made run is left behind."""
        if self.root.is_dir() and not any(self.path("stages").glob("*.json")):
            shutil.rmtree(self.root)
            for parent in self._made_parents:  # innermost first
                with contextlib.suppress(OSError):  # not empty: another process uses it
                    parent.rmdir()

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

    def mark_done(self, stage: str, fp: str, config: dict | None = None, **info) -> None:
        """Record that ``stage`` finished with fingerprint ``fp``, made from the config
        sections ``config`` ({section: dataclass or dict}), with more ``info``."""
        atomic_write_json(self._record(stage), {"fingerprint": fp, "finished": time.time(),
                                                "config": plain(config or {}), **info})

    def invalidate(self, *stages: str) -> None:
        """Forget that ``stages`` ran: they rerun next time, and stages needing them stop."""
        for stage in stages:
            self._record(stage).unlink(missing_ok=True)
