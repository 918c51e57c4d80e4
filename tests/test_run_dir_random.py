"""A randomized trial of one run directory: sequences of stages, config changes, --force
and kills on the toy translation run, checking after each step that the run directory
agrees with itself (issue 23)."""

import json
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from pipelines.config import load_config
from pipelines.run_dir import BUILDS, RunDir, fingerprint, plain
from pipelines.translation.config import TranslationConfig
from pipelines.translation.stages import made_from
from tests.helpers import ROOT

STAGES = ("prepare", "train", "evaluate", "export")
CHANGES = {  # config changes a user might make between stages
    "none": [],
    "decoding": ["decoding.beam_size=1"],
    "model": ["model.dropout=0.3"],
    "data": ["data.max_length=40"],
    "more epochs": ["training.epochs=2"],
}
STEPS, KILLS = 12, 2


def check_agrees_with_itself(run_dir: Path) -> None:
    """What the records, config.yaml, metrics.json and the checkpoint say is one story."""
    run = RunDir(run_dir)
    if not (run_dir / "config.yaml").is_file():
        return
    parts = made_from(load_config(TranslationConfig, run_dir / "config.yaml"))
    for stage in BUILDS:  # every finished stage was made with config.yaml's settings
        if run.stage_fingerprint(stage) is not None:
            assert run.config_differences(stage, parts[stage]) == [], stage
    if (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["config_fingerprint"] == fingerprint(*(plain(parts[s]) for s in BUILDS))
    if run.stage_fingerprint("train") is not None:
        with zipfile.ZipFile(run_dir / "checkpoints" / "best.keras") as z:
            saved = json.loads(z.read("config.json"))["config"]
        set_by_pipeline = {name.split(".")[1] for name in TranslationConfig.SET_BY_PIPELINE}
        model = {k: v for k, v in plain(parts["train"])["model"].items()
                 if k in saved and k not in set_by_pipeline}
        assert {k: saved[k] for k in model} == model


@pytest.mark.slow
def test_random_stages_changes_forces_and_kills_leave_a_consistent_run(toy_run_copy, capsys):
    from pipelines import translation

    run_dir = Path(toy_run_copy[toy_run_copy.index("--run-dir") + 1])
    rng = random.Random(23)
    kills = set(rng.sample(range(STEPS), KILLS))
    for step in range(STEPS):
        stage, change = rng.choice(STAGES), rng.choice(list(CHANGES))
        force = rng.random() < 0.25
        args = [stage, *toy_run_copy, *[a for s in CHANGES[change] for a in ("--set", s)],
                *(["--force"] if force else [])]
        if step in kills:
            proc = subprocess.Popen([sys.executable, "-m", "pipelines.translation", *args],
                                    cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(4, 12))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        else:
            capsys.readouterr()
            code = translation.main(args)
            err = capsys.readouterr().err
            # Success, or a refusal in one line (a config the run was not made with).
            assert code == 0 or (code == 1 and err.count("\n") == 1), (step, args, err)
        check_agrees_with_itself(run_dir)
