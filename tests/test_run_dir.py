import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.file_io import read_lines, write_lines
from pipelines.run_dir import RunDir, fingerprint, plain
from tests.helpers import ROOT

SMOKE = ROOT / "pipelines" / "configs" / "translation_smoke.yaml"


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
    from pipelines import checkpoints

    run = RunDir(tmp_path / "run")
    checkpoints.discard_checkpoints(run)  # nothing to remove is fine
    write_lines(run.path("checkpoints", "last.keras"), ["x"])
    write_lines(run.path(checkpoints.STATE_FILE), ["{}"])
    run.mark_done("prepare", "fp")
    checkpoints.discard_checkpoints(run)
    assert not run.path("checkpoints").exists() and not run.path(checkpoints.STATE_FILE).exists()
    assert run.is_current("prepare", "fp")


def _run_dir(args) -> Path:
    return Path(args[args.index("--run-dir") + 1])


@pytest.mark.parametrize("stage, override, field, built", [
    ("evaluate", "model.dropout=0.3", "model.dropout", "train"),
    ("translate", "model.dropout=0.3", "model.dropout", "train"),
    ("export", "data.max_length=5", "data.max_length", "prepare"),
    ("train", "tokenizer.vocab_size=61", "tokenizer.vocab_size", "prepare"),
])
def test_a_stage_refuses_a_config_its_run_was_not_made_with(toy_run_copy, capsys, monkeypatch,
                                                            stage, override, field, built):
    from pipelines import translation

    run_dir = _run_dir(toy_run_copy)
    before = (run_dir / "config.yaml").read_bytes()
    monkeypatch.setattr("sys.stdin", None)  # translate must refuse before reading
    capsys.readouterr()
    assert translation.main([stage, *toy_run_copy, "--set", override]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"its {built} stage used, in {field};" in err, err
    assert (run_dir / "config.yaml").read_bytes() == before
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "export").exists()


def test_decoding_may_change_and_is_recorded_with_the_result(toy_run_copy, capsys):
    from pipelines import translation
    from pipelines.config import load_config
    from pipelines.translation.config import TranslationConfig
    from pipelines.translation.stages import made_from

    run_dir = _run_dir(toy_run_copy)
    before = (run_dir / "config.yaml").read_bytes()
    assert translation.main(["evaluate", *toy_run_copy, "--set", "decoding.beam_size=1",
                             "--set", "decoding.length_penalty=0.2"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["decoding"]["beam_size"] == 1 and metrics["decoding"]["length_penalty"] == 0.2
    # config.yaml still says what the data and model were made with (it was not rewritten),
    # and metrics.json says it was made from that.
    assert (run_dir / "config.yaml").read_bytes() == before
    parts = made_from(load_config(TranslationConfig, run_dir / "config.yaml"))
    assert metrics["config_fingerprint"] == fingerprint(plain(parts["prepare"]),
                                                        plain(parts["train"]))


def test_train_force_moves_results_aside_and_keeps_files_it_did_not_write(toy_run_copy, capsys):
    from pipelines import translation

    run_dir = _run_dir(toy_run_copy)
    assert translation.main(["evaluate", *toy_run_copy]) == 0
    mine = run_dir / "checkpoints" / "my_notes.txt"
    mine.write_text("mine")
    # Another model without --force: refused before anything is changed.
    before = (run_dir / "config.yaml").read_bytes()
    capsys.readouterr()
    assert translation.main(["train", *toy_run_copy, "--set", "model.dropout=0.3"]) == 1
    assert "holds checkpoints of a different" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_bytes() == before
    assert RunDir(run_dir).stage_fingerprint("evaluate") is not None
    # With --force: the results of the old model are moved aside, saying so.
    assert translation.main(["train", *toy_run_copy, "--set", "model.dropout=0.3",
                             "--force"]) == 0
    out = capsys.readouterr().out
    assert f"to {run_dir / 'outdated'}: metrics.json, hyps" in out
    assert "--force: removed" in out
    assert mine.read_text() == "mine"
    assert not (run_dir / "metrics.json").exists()
    assert (run_dir / "outdated" / "metrics.json").is_file()
    assert RunDir(run_dir).stage_fingerprint("evaluate") is None
    assert "dropout: 0.3" in (run_dir / "config.yaml").read_text()


def test_discard_checkpoints_removes_only_what_training_writes(tmp_path):
    from pipelines import checkpoints

    run = RunDir(tmp_path / "run")
    for name in ("last.keras", "best.keras", "epoch-003.weights.h5", ".tmp-last.keras",
                 "mine.keras.bak"):
        write_lines(run.path("checkpoints", name), ["x"])
    checkpoints.discard_checkpoints(run)
    assert [p.name for p in run.path("checkpoints").iterdir()] == ["mine.keras.bak"]


HOLD_THE_RUN = ("import sys, time\nfrom pipelines.run_dir import RunDir\n"
                "RunDir(sys.argv[1]).lock()\nprint('locked', flush=True)\ntime.sleep(120)\n")


def test_a_second_process_on_a_run_in_use_stops_naming_the_holder(toy_run_copy, capsys):
    from pipelines import translation

    run_dir = _run_dir(toy_run_copy)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_RUN, str(run_dir)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        capsys.readouterr()
        assert translation.main(["evaluate", *toy_run_copy]) == 1
        assert capsys.readouterr().err == (f"error: {run_dir}: in use by process {holder.pid}, "
                                           "running a stage in it; wait for it to end, or use "
                                           "another --run-dir\n")
        assert not (run_dir / "metrics.json").exists()
    finally:
        holder.kill()  # SIGKILL: the kernel releases its lock
        holder.wait()
    assert translation.main(["evaluate", *toy_run_copy]) == 0


@pytest.mark.parametrize("where", ["read-only", "below a file"])
def test_a_run_directory_that_cannot_be_written_is_one_line(tmp_path, capsys, where):
    from pipelines import translation

    if where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        tmp_path.joinpath("ro").mkdir(mode=0o555)
        run_dir = tmp_path / "ro" / "run"
    else:
        (tmp_path / "file").write_text("x")
        run_dir = tmp_path / "file" / "run"
    assert translation.main(["prepare", "--config", str(SMOKE), "--run-dir", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir}: cannot write the run directory (") and \
        err.count("\n") == 1, err


def test_a_failed_first_command_leaves_no_folder_behind(tmp_path, capsys):
    from pipelines import translation

    run_dir = tmp_path / "new" / "deeper" / "run"
    assert translation.main(["train", "--config", str(SMOKE), "--run-dir", str(run_dir)]) == 1
    assert "stage 'prepare' has not run yet" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage, checkpoint, extra", [
    ("evaluate", "best.keras", []),
    ("translate", "best.keras", []),
    ("train", "last.keras", ["--set", "training.epochs=2"]),  # resuming
])
def test_a_truncated_checkpoint_is_one_line_naming_it(toy_run_copy, capsys, monkeypatch, stage,
                                                      checkpoint, extra):
    from pipelines import translation

    path = _run_dir(toy_run_copy) / "checkpoints" / checkpoint
    path.write_bytes(path.read_bytes()[:1000])
    monkeypatch.setattr("sys.stdin", None)
    capsys.readouterr()
    assert translation.main([stage, *toy_run_copy, *extra]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {path}: truncated or damaged checkpoint (not a complete .keras "
                   "archive); run train --force to make it again\n")

