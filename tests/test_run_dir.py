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
