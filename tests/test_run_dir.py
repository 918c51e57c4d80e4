import os
import stat

import pytest

from data_prep.file_io import read_lines, write_lines
from pipelines.run_dir import RunDir


def test_lines_round_trip_with_unicode_separators(tmp_path):
    lines = ["a\u2028b", "c\x85d\re", "", "f\x0cg"]
    write_lines(tmp_path / "x.txt", lines)
    assert read_lines(tmp_path / "x.txt") == lines
    write_lines(tmp_path / "empty.txt", [])
    assert read_lines(tmp_path / "empty.txt") == []


def test_invalidate_forgets_stages(tmp_path):
    run = RunDir(tmp_path / "run")
    for stage in ("prepare", "train", "evaluate"):
        run.mark_done(stage, f"fp-{stage}")
    run.invalidate("prepare", "train", "export")
    assert run.stage_fingerprint("prepare") is None and run.stage_fingerprint("train") is None
    assert run.is_current("evaluate", "fp-evaluate")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_lines(tmp_path / "x.txt", ["a"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == mode


def test_up_to_date_skips_a_current_stage_unless_forced(tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    assert not run.up_to_date("train", "fp", False, "nothing yet")
    run.mark_done("train", "fp")
    assert not run.up_to_date("train", "other-fp", False, "changed")
    assert not run.up_to_date("train", "fp", True, "forced")
    assert capsys.readouterr().out == ""
    assert run.up_to_date("train", "fp", False, run.path("checkpoints", "best.keras"))
    assert capsys.readouterr().out == f"[train] up to date ({run.path('checkpoints', 'best.keras')})\n"


def test_discard_checkpoints_removes_checkpoints_and_state(tmp_path):
    from pipelines import trainer

    run = RunDir(tmp_path / "run")
    trainer.discard_checkpoints(run)  # nothing to remove is fine
    write_lines(run.path("checkpoints", "last.keras"), ["x"])
    write_lines(run.path(trainer.STATE_FILE), ["{}"])
    run.mark_done("prepare", "fp")
    trainer.discard_checkpoints(run)
    assert not run.path("checkpoints").exists() and not run.path(trainer.STATE_FILE).exists()
    assert run.is_current("prepare", "fp")
