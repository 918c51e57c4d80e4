"""The command line as a user's shell sees it: separate processes, real stderr."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMOKE = ROOT / "pipelines" / "configs" / "translation_smoke.yaml"
SPEECH_SMOKE = ROOT / "pipelines" / "configs" / "speech_smoke.yaml"


def user_env(**extra) -> dict:
    # Without the test session's TF_CPP_MIN_LOG_LEVEL: what a user's shell has.
    return {**{k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}, **extra}


def run_module(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=user_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("pipeline, args, code", [
    ("translation", ["--help"], 0),
    ("translation", ["prepare", "--config", "missing.yaml"], 2),
    ("translation", ["prepare", "--config", str(SMOKE), "--set", "model.cell"], 2),
    ("translation", ["train", "--config", str(SMOKE), "--set", "model.attention=bahdanau"], 2),
    ("speech", ["--help"], 0),
    ("speech", ["train", "--config", str(SPEECH_SMOKE), "--set", "features.kind=fbank"], 2),
])
def test_help_and_config_errors_answer_before_importing_tensorflow(pipeline, args, code):
    result = run_module("-X", "importtime", "-m", f"pipelines.{pipeline}", *args)
    assert result.returncode == code
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")]
    assert "pipelines.cli" in imported
    assert not {"tensorflow", "keras", "librosa"} & set(imported)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    if code:
        assert len(errors) == 1 and errors[0].startswith("error: ")


# Runs a pipeline's main in-process, then tells which heavy libraries it imported.
IMPORTED_AFTER_MAIN = (
    "import importlib, sys\n"
    "code = importlib.import_module(f'pipelines.{sys.argv[1]}').main(sys.argv[2:])\n"
    "print(code, sorted({'tensorflow', 'keras', 'librosa'} & set(sys.modules)))\n"
)


@pytest.mark.parametrize("pipeline, config, override, field", [
    ("translation", SMOKE, "model.cell=transformer", "model.cell"),
    ("translation", SMOKE, "decoding.beam_size=0", "decoding.beam_size"),
    ("translation", SMOKE, "training.learning_rate=-1", "training.learning_rate"),
    ("speech", SPEECH_SMOKE, "model.cell=transformer", "model.cell"),
    ("speech", SPEECH_SMOKE, "model.conv_type=3d", "model.conv_type"),
    ("speech", SPEECH_SMOKE, "augment.time_mask_fraction=2", "augment.time_mask_fraction"),
    ("speech", SPEECH_SMOKE, "strings.max_digits=0", "strings.max_digits"),
])
def test_a_bad_config_value_is_one_line_and_tensorflow_is_never_imported(
        pipeline, config, override, field, tmp_path):
    result = run_module("-c", IMPORTED_AFTER_MAIN, pipeline, "train", "--config", str(config),
                        "--run-dir", str(tmp_path / "run"), "--set", override)
    assert result.stdout == "2 []\n"  # exit code 2; none of them in sys.modules
    assert result.stderr.startswith(f"error: {field}: ") and result.stderr.count("\n") == 1
    assert result.stderr.endswith(f"(from --set {override})\n")
    assert not (tmp_path / "run").exists()


def test_a_failing_command_prints_one_line_and_no_tensorflow_logging(tmp_path):
    result = run_module("-m", "pipelines.translation", "train", "--config", SMOKE,
                        "--run-dir", tmp_path / "new")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'new'}: stage 'prepare' has not run yet; run it before 'train'"]


def test_stage_names_known_before_import_match_the_stages():
    from pipelines import speech, translation
    from pipelines.speech import stages as speech_stages
    from pipelines.translation import stages as translation_stages

    for package, stages in ((translation, translation_stages), (speech, speech_stages)):
        assert tuple(stages.STAGES) == package.STAGE_NAMES
        assert all(f.__name__ == name for name, f in stages.STAGES.items())


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_during_training_prints_one_line_and_keeps_the_checkpoints(toy_corpus, tmp_path,
                                                                         signum, code):
    # SIGTERM (Slurm, Kubernetes, timeout) does what Ctrl-C does; the status tells them apart.
    from pipelines import translation

    run_dir = tmp_path / "run"
    common = ["--config", str(SMOKE), "--run-dir", str(run_dir), "--set", "data.corpus=files",
              "--set", f"data.paths={json.dumps(toy_corpus)}", "--set", "tokenizer.vocab_size=60",
              "--set", "training.epochs=100000", "--set", "training.patience=100000",
              "--set", "training.batch_tokens=20"]
    assert translation.main(["prepare", *common]) == 0
    env = user_env(PYTHONUNBUFFERED="1")
    with subprocess.Popen([sys.executable, "-m", "pipelines.translation", "train", *common],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        for line in proc.stdout:  # into the second epoch: the first one is checkpointed
            if line.startswith("Epoch 2/"):
                break
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    # Usually "interrupted after step N of epoch 2; the last checkpoint is epoch 1; ...";
    # between epochs (saving checkpoints) the stage's more general line.
    assert len(err.splitlines()) == 1 and err.startswith("interrupted "), err
    assert "rerun the same command" in err
    assert (run_dir / "checkpoints" / "last.keras").is_file()


class Typed:
    """Standard input typed at a terminal: each read returns the next line, and records
    what had been printed by then."""

    def __init__(self, lines: list[bytes], capsys):
        self.lines, self.capsys, self.printed = list(lines), capsys, []

    def read1(self, size):
        self.printed.append(self.capsys.readouterr().out)
        return self.lines.pop(0) if self.lines else b""


@pytest.mark.slow
def test_typed_lines_are_translated_as_they_arrive(toy_translation_run, capsys, monkeypatch):
    from pipelines import translation

    typed = Typed([b"ein hund .\n", b"\n", b"eine katze"], capsys)
    monkeypatch.setattr("sys.stdin", SimpleNamespace(buffer=typed))
    assert translation.main(["translate", *toy_translation_run]) == 0
    # Each complete line's translation was out before the next read; the last line,
    # without a newline, is translated at the end of the input.
    assert [p.count("\n") for p in typed.printed] == [0, 1, 1, 0]
    assert typed.printed[2] == "\n"  # the blank line's
    assert capsys.readouterr().out.count("\n") == 1


def test_input_batches_follow_the_reads_and_number_lines(monkeypatch):
    from data_prep.file_io import CorpusError
    from pipelines.cli import input_batches

    reads = iter([b"a\nb\nc", b"d\n\n", b"e\n", b"\xff\n", b""])
    monkeypatch.setattr("sys.stdin", SimpleNamespace(buffer=SimpleNamespace(
        read1=lambda size: next(reads))))
    batches = input_batches(None)
    assert [next(batches) for _ in range(3)] == [["a", "b"], ["cd", ""], ["e"]]
    with pytest.raises(CorpusError, match="<stdin>:6: invalid UTF-8"):
        next(batches)


def test_ctrl_c_before_a_stage_starts_just_ends_the_process(monkeypatch, capsys):
    from pipelines import cli, translation

    handlers, codes = [], []
    monkeypatch.setattr(cli, "exit_with", codes.append)

    def main():
        # During the imports main makes, Ctrl-C prints one word and exits: no traceback.
        handlers.append(signal.getsignal(signal.SIGINT))
        code = translation.main(["train", "--config", str(SMOKE), "--run-dir",
                                 "/nonexistent/run"])
        # Once a stage runs, Ctrl-C is a KeyboardInterrupt its stage turns into one line.
        handlers.append(signal.getsignal(signal.SIGINT))
        return code

    previous = signal.getsignal(signal.SIGINT)
    try:
        cli.run_script(main)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert handlers == [cli._interrupted_before_start, signal.default_int_handler]
    assert codes == [1] and "stage 'prepare' has not run yet" in capsys.readouterr().err


@dataclass
class TinyConfig:
    name: str = "tiny"


@pytest.mark.parametrize("changes_the_run, message", [
    (True, "interrupted during the work stage; rerun the same command to finish it\n"),
    (False, "interrupted during the work stage\n"),
])
def test_ctrl_c_in_a_stage_is_one_line(tmp_path, capsys, monkeypatch, changes_the_run, message):
    from pipelines import cli

    def work(ctx):
        if changes_the_run:
            ctx.begin("work")
        raise KeyboardInterrupt

    stages = SimpleNamespace(STAGES={"work": work}, USER_ERRORS=(), made_from=lambda cfg: {})
    monkeypatch.setitem(sys.modules, "tiny_stages", stages)
    (tmp_path / "c.yaml").write_text("name: tiny\n")
    code = cli.main(["work", "--config", str(tmp_path / "c.yaml"), "--run-dir",
                     str(tmp_path / "run")], "tiny", "", TinyConfig, ("work",), "tiny_stages",
                    ["work"])
    assert code == 130 and capsys.readouterr().err == message
    # A new run is kept only if the stage began changing it: what it finished is resumed.
    assert (tmp_path / "run").exists() == changes_the_run


# A stage that begins changing its run, then gets a SIGTERM.
TERMINATED_STAGE = """
import os, signal, sys, time, types
from dataclasses import dataclass
from pipelines import cli

@dataclass
class Tiny:
    name: str = "tiny"

def work(ctx):
    ctx.begin("work")
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)

sys.modules["tiny_stages"] = types.SimpleNamespace(STAGES={"work": work}, USER_ERRORS=(),
                                                   made_from=lambda config: {})
cli.run_script(lambda: cli.main(["work", "--config", sys.argv[1], "--run-dir", sys.argv[2]],
                                "tiny", "", Tiny, ("work",), "tiny_stages", ["work"]))
"""


def test_sigterm_in_a_stage_is_ctrl_c_with_status_143(tmp_path):
    (tmp_path / "c.yaml").write_text("name: tiny\n")
    result = run_module("-c", TERMINATED_STAGE, tmp_path / "c.yaml", tmp_path / "run")
    assert result.returncode == 143
    assert result.stderr == ("interrupted during the work stage; rerun the same command to "
                             "finish it\n")
    assert (tmp_path / "run" / "run.json").is_file()  # kept, to be resumed


def test_an_input_file_is_answered_as_it_is_read(tmp_path, monkeypatch):
    from pipelines import cli

    monkeypatch.setattr(cli, "FILE_BATCH_LINES", 2)
    (tmp_path / "in.txt").write_text("a\nb\nc\n\ne\n")
    assert list(cli.input_batches(str(tmp_path / "in.txt"))) == [["a", "b"], ["c", ""], ["e"]]
    (tmp_path / "empty.txt").write_text("")
    assert list(cli.input_batches(str(tmp_path / "empty.txt"))) == []


def test_audio_files_given_to_a_stage_that_takes_none_are_an_error(capsys):
    from pipelines import speech

    config = ROOT / "pipelines" / "configs" / "an4_smoke.yaml"
    assert speech.main(["evaluate", "--config", str(config), "a.wav"]) == 2
    err = capsys.readouterr().err
    assert err == "error: evaluate takes no audio files (got a.wav); transcribe and stream do\n"
