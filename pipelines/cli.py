"""Command-line plumbing shared by the stage scripts.

``python -m pipelines.<task> <stage> --config <yaml> [--set key=value ...]``
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from data_prep.download import DownloadError
from data_prep.file_io import CorpusError, ShardError, decode_lines, iter_lines
from pipelines.config import ConfigError, load_config
from pipelines.quiet import quiet_tensorflow
from pipelines.run_dir import BUILDS, OUTDATED, RunDir, fingerprint, plain

# Problems with the user's input or config: reported as one clear line, no traceback.
USER_ERRORS = (ConfigError, CorpusError, DownloadError, FileNotFoundError, ShardError)
# Stages that only read the run: they may run beside the stage holding it (training
# replaces its checkpoints atomically); every other stage holds the run (``RunDir.lock``).
READ_ONLY_STAGES = ("translate", "transcribe", "stream")


def run_script(main: Callable[[], int]) -> None:
    """``python -m pipelines.<task>``: run the pipeline's ``main`` and exit with its code.

    Until ``main`` runs a stage, Ctrl-C (say, during the TensorFlow import) just ends the
    process with one word. SIGTERM does what Ctrl-C does (``_terminate``).
    """
    global _stderr_fd
    _stderr_fd = os.dup(2)  # the real stderr, also while quiet_tensorflow silences fd 2
    signal.signal(signal.SIGINT, _interrupted_before_start)
    signal.signal(signal.SIGTERM, _terminate)
    exit_with(main())


_stderr_fd = 2
_terminated = False  # the interrupt was a SIGTERM
INTERRUPTED, TERMINATED = 130, 143  # exit statuses: 128 + SIGINT, 128 + SIGTERM


def _interrupted_before_start(signum, frame):
    os.write(_stderr_fd, b"terminated\n" if _terminated else b"interrupted\n")
    os._exit(TERMINATED if _terminated else INTERRUPTED)


def _terminate(signum, frame):
    """SIGTERM (what Slurm, Kubernetes and ``timeout`` send) does what Ctrl-C does at the
    time (before a stage: end; in a stage: one line; in training: stop after the current
    step, checkpoint kept), and the exit status says it was a SIGTERM."""
    global _terminated
    _terminated = True
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


def parser(name: str, description: str, stages: list[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m pipelines.{name}", description=description)
    p.add_argument("stage", choices=stages)
    p.add_argument("--config", required=True, help="experiment YAML (pipelines/configs/...)")
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a config field, e.g. model.cell=lstm")
    p.add_argument("--run-dir", help="run directory (default: runs/<name>)")
    p.add_argument("--data-dir", help="dataset directory (default: $PIPELINES_DATA_DIR)")
    p.add_argument("--force", action="store_true", help="rerun the stage even if up to date")
    p.add_argument("--input", help="translate/transcribe: input file (default: stdin)")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's own start-up and device logging")
    return p


FILE_BATCH_LINES = 2000  # an --input file is read (and answered) this many lines at a time


def input_batches(path: str | None, chunk: int = 1 << 16) -> Iterator[list[str]]:
    """The lines of ``path`` (``FILE_BATCH_LINES`` at a time), or of standard input as
    they arrive.

    From stdin, each batch holds the complete lines one read returned: a line typed at a
    terminal, or up to ``chunk`` bytes from a pipe or file. So a caller can answer each
    batch before waiting for more input (a large file is answered as it is read, not at
    its end).
    """
    if path not in (None, "-"):
        lines = iter_lines(path)
        while batch := list(itertools.islice(lines, FILE_BATCH_LINES)):
            yield batch
        return
    stream, pending, first = sys.stdin.buffer, b"", 1
    while data := stream.read1(chunk):  # read1: whatever is there, waiting only for some
        head, newline, pending = (pending + data).rpartition(b"\n")
        if newline:
            lines = decode_lines(head + newline, "<stdin>", first)
            first += len(lines)
            yield lines
    if pending:  # a last line without a newline
        yield decode_lines(pending, "<stdin>", first)


class Context:
    """What every stage gets: the validated config, the run directory and CLI flags.

    Args:
        config: the experiment dataclass.
        run: the run directory.
        data_dir: explicit dataset directory or None.
        force: rerun stages even when their inputs are unchanged.
        input: input file of the translate/transcribe stage (None: stdin).
        pipeline: the pipeline's name, recorded in the run directory.
        options: the values of the arguments the pipeline added (``main``'s ``arguments``).
        made_from: the config sections each stage's output is made from
            ({stage: {section: value}}, the stages module's ``made_from(config)``).
    """

    def __init__(self, config, run: RunDir, data_dir: str | None, force: bool,
                 input: str | None = None, pipeline: str = "", options=None,
                 made_from: dict | None = None):
        self.config, self.run, self.data_dir, self.force = config, run, data_dir, force
        self.input, self.pipeline = input, pipeline
        self.options = options or argparse.Namespace()  # the pipeline's own arguments
        self.made_from = made_from or {}
        self.changing = False  # a stage has begun changing the run
        self.stage = None  # the stage running (``run_stage``)
        self._fingerprint = None  # what it is made from (``start``)

    def run_stage(self, stage: str, function) -> None:
        """Run ``function(self)``, the stage named ``stage``."""
        self.stage, self._fingerprint = stage, None
        function(self)

    def begin(self, stage: str) -> None:
        """Called by a stage that is about to change the run (not when it is up to date):
        the stage and those made from its output are forgotten and their results moved
        aside (one line says which); a stage of ``BUILDS`` records its config."""
        moved = self.run.make_stale(stage)
        if moved:
            print(f"[{stage}] moved the results made before this {stage} to "
                  f"{self.run.path(OUTDATED)}: {', '.join(moved)}")
        self.run.record(self.pipeline, self.config if stage in BUILDS else None)
        self.changing = True

    def start(self, fp: str, output) -> bool:
        """Whether the running stage must run: False, after saying it is up to date, when
        it last finished with fingerprint ``fp`` and --force is not given (``output``: what
        it made, shown to the user); else ``begin`` and True."""
        self._fingerprint = fp
        if self.run.up_to_date(self.stage, fp, self.force, output):
            return False
        self.begin(self.stage)
        return True

    def require(self, stage: str) -> str:
        """The fingerprint of ``stage``, which the running stage needs: ConfigError if it
        has not run, or if this command's config differs from the one it (or a stage of
        ``BUILDS`` before it) was made with, in the fields that differ."""
        before = self.stage
        fp = self.run.require(stage, before)
        builds = BUILDS[:BUILDS.index(stage) + 1] if stage in BUILDS else BUILDS
        for built in builds:
            fields = self.run.config_differences(built, self.made_from[built])
            if fields:
                raise ConfigError(
                    f"{self.run.root}: the config differs from the one its {built} stage "
                    f"used, in {', '.join(fields)}; '{before}' would use what that made. "
                    f"Run '{built}' with this config first, or use another --run-dir")
        return fp

    def done(self, **info) -> None:
        """Record that the running stage finished (with the fingerprint given to ``start``)
        and the config sections it was made from."""
        self.run.mark_done(self.stage, self._fingerprint,
                           config=self.made_from.get(self.stage), **info)

    def config_fingerprint(self) -> str:
        """The fingerprint of what the run's data and model are made from (``BUILDS``),
        recorded with results: equal to that of the run's config.yaml and checkpoint."""
        return fingerprint(*(plain(self.made_from[stage]) for stage in BUILDS))


def main(argv, name: str, description: str, config_cls, stage_names: tuple[str, ...],
         stages_module: str, pipeline: list[str],
         arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         file_stages: tuple[str, ...] = ()) -> int:
    """Parse arguments, load the config and run one stage (or the whole ``pipeline``).

    TensorFlow takes seconds to import, so it is imported only once the arguments and
    the config are known to be good: ``config_cls`` must import none of it, and
    ``stages_module`` (which does) is imported after validation, quietly unless
    ``--verbose``. That module defines ``STAGES`` ({name: function(Context)}, the
    ``stage_names``), ``USER_ERRORS``, its own exception types to report like
    ``USER_ERRORS`` here, and ``made_from(config)`` (``Context``). ``name``: the
    pipeline, recorded in the run directories it makes.
    ``arguments(parser)`` adds the pipeline's own arguments (stages read ``ctx.options``);
    its positional ``audio`` files are for the ``file_stages`` only.
    """
    p = parser(name, description, [*stage_names, "all"])
    if arguments:
        arguments(p)
    # Intermixed: a stage's positional arguments may follow options (``stream --config
    # c.yaml a.wav b.wav``).
    args = p.parse_intermixed_args(argv)
    files = getattr(args, "audio", None)
    if files and args.stage not in file_stages:
        # Not ignored: "evaluate a.wav" would otherwise score the test set, silently.
        print(f"error: {args.stage} takes no audio files (got {files[0]}); "
              f"{' and '.join(file_stages)} do", file=sys.stderr)
        return 2
    try:
        config = load_config(config_cls, args.config, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.verbose:
        quiet_tensorflow()
    module = importlib.import_module(stages_module)
    stages, user_errors = module.STAGES, module.USER_ERRORS
    if signal.getsignal(signal.SIGINT) is _interrupted_before_start:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # stages handle Ctrl-C
    from pipelines import distribute  # imports TensorFlow, as the stages module did

    todo = pipeline if args.stage == "all" else [args.stage]
    try:
        role = start_cluster(config, todo)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted while waiting for the other workers of TF_CONFIG", file=sys.stderr)
        return TERMINATED if _terminated else INTERRUPTED
    worker_dir = None
    if not role.is_chief:
        # Only the chief writes the run: this worker prepares the same data (prepare is
        # deterministic) and trains in a directory of its own, removed at exit.
        worker_dir = tempfile.mkdtemp(prefix=f"{name}-worker{role.index}-")
        todo = [s for s in ("prepare", "train") if s in stages]
        print(f"[cluster] {role.description}: training with the chief, which writes the "
              f"run; this worker's files go to {worker_dir} (removed at exit)")
    run = RunDir(worker_dir or args.run_dir or Path("runs") / config.name)
    existed = run.root.exists()
    ctx = Context(config, run, args.data_dir, args.force, args.input, name, args,
                  module.made_from(config))
    stage, code = None, 0
    try:
        try:
            run.check_pipeline(name, [f.name for f in dataclasses.fields(config_cls)])
            if not set(todo) <= set(READ_ONLY_STAGES):
                run.lock()
            for stage in todo:
                ctx.run_stage(stage, stages[stage])
        except (*USER_ERRORS, *user_errors, distribute.ClusterError) as e:
            print(f"error: {e}", file=sys.stderr)
            code = 1
        except KeyboardInterrupt as e:
            # Ctrl-C: one line (the trainer's says where it stopped), not a traceback.
            hint = "; rerun the same command to finish it" if ctx.changing else ""
            print(str(e) or f"interrupted during the {stage} stage{hint}", file=sys.stderr)
            code = TERMINATED if _terminated else INTERRUPTED
        # A new run whose first command failed is not kept (unless another process holds
        # it: that one is making it); one interrupted after it began changing the run is,
        # as the message says: its finished work (a prepare's feature shards) is resumed
        # by the same command.
        interrupted = code in (INTERRUPTED, TERMINATED)
        if code and run.locked and not existed and not (interrupted and ctx.changing):
            run.discard_if_unfinished()
    finally:
        run.unlock()
        if worker_dir:
            shutil.rmtree(worker_dir, ignore_errors=True)
    return code


def start_cluster(config, stages: list[str]):
    """Start the ``training.distribution`` strategy when ``stages`` train, and return this
    process's role. A cluster (``multi_worker``) must start before TensorFlow runs
    anything, so before the first stage."""
    from pipelines import distribute

    training = getattr(config, "training", None)
    if training is None or "train" not in stages or training.distribution != "multi_worker":
        return distribute.Role()
    return distribute.start(training.distribution, training.cluster_timeout_seconds)


def exit_with(code: int) -> None:
    """End ``python -m pipelines.<task>`` with ``code``; after Ctrl-C or SIGTERM at once,
    without waiting for TensorFlow's threads, which can keep the process alive for half a
    minute (everything worth keeping is already written: files are written atomically)."""
    if code in (INTERRUPTED, TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
