"""The command line as a user's shell sees it: separate processes, real stderr."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = ROOT / "pipelines" / "configs" / "translation_smoke.yaml"


def run_module(*args, tmp_path) -> subprocess.CompletedProcess:
    # Without the test session's TF_CPP_MIN_LOG_LEVEL: what a user's shell has.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, code", [
    (["--help"], 0),
    (["prepare", "--config", "missing.yaml"], 2),
    (["prepare", "--config", str(SMOKE), "--set", "model.cell"], 2),
])
def test_help_and_unreadable_config_answer_before_importing_tensorflow(tmp_path, args, code):
    result = run_module("-X", "importtime", "-m", "pipelines.translation", *args,
                        tmp_path=tmp_path)
    assert result.returncode == code
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert "pipelines.cli" in imported and "tensorflow" not in imported
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    if code:
        assert len(errors) == 1 and errors[0].startswith("error: ")


def test_a_failing_command_prints_one_line_and_no_tensorflow_logging(tmp_path):
    result = run_module("-m", "pipelines.translation", "train", "--config", SMOKE,
                        "--run-dir", tmp_path / "new", tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'new'}: stage 'prepare' has not run yet; run it before 'train'"]


def test_stage_names_known_before_import_match_the_stages():
    from pipelines import speech, translation

    for module in (translation, speech):
        assert tuple(module.STAGES) == module.STAGE_NAMES
