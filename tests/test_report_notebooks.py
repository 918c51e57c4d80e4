"""The report notebooks: committed without outputs, and executed against smoke runs."""

import base64
import importlib
import shutil
from pathlib import Path

import nbformat
import pytest

from pipelines.report_stage import NOTEBOOKS_DIR, execute_notebook

CONFIGS = Path(__file__).resolve().parent.parent / "pipelines" / "configs"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def test_the_three_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == {"translation_report", "speech_report",
                                           "recurrent_memory"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebooks_are_stripped_and_parameterized(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), \
        f"{path.name} has outputs: clear them before committing"
    tags = [c.metadata.get("tags", []) for c in code]
    assert sum("parameters" in t for t in tags) == 1
    assert not any("injected-parameters" in t for t in tags)
    assert notebook.metadata.kernelspec.name == "rnn-seq2seq-toolkit"


def executed_images(path: Path) -> list[bytes]:
    """PNG images in an executed notebook, after checking that no cell failed or
    wrote to stderr (warnings and log spam are bugs in a report too)."""
    notebook = nbformat.read(path, as_version=4)
    images = []
    for i, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"cell {i}: {output.get('evalue')}"
            if output["output_type"] == "stream":
                assert output["name"] == "stdout", f"cell {i} wrote to stderr: {output['text']}"
            if "image/png" in output.get("data", {}):
                images.append(base64.b64decode(output["data"]["image/png"]))
    return images


def check_report(run_dir: Path, name: str, min_images: int) -> None:
    ipynb, html = run_dir / "report" / f"{name}.ipynb", run_dir / "report" / f"{name}.html"
    images = executed_images(ipynb)
    assert len(images) >= min_images
    assert all(len(image) > 5000 for image in images)  # a figure, not an empty canvas
    text = html.read_text(encoding="utf-8")
    assert text.count('src="data:image/png;base64,') == len(images)  # images embedded


@pytest.mark.slow
def test_translation_report_stage(translation_smoke_run, tmp_path, capsys):
    from pipelines import translation

    run_dir = tmp_path / "run"
    shutil.copytree(translation_smoke_run, run_dir)
    code = translation.main(["report", "--config", str(CONFIGS / "translation_smoke.yaml"),
                             "--run-dir", str(run_dir)])
    assert code == 0
    assert "[report] wrote" in capsys.readouterr().out
    # Learning curves, BLEU by length and one heatmap per attention sentence (3).
    check_report(run_dir, "translation_report", min_images=5)


@pytest.mark.slow
def test_speech_report_stage(speech_smoke_run, tmp_path):
    from pipelines import speech

    run_dir = tmp_path / "run"
    shutil.copytree(speech_smoke_run, run_dir)
    code = speech.main(["report", "--config", str(CONFIGS / "speech_smoke.yaml"),
                        "--run-dir", str(run_dir)])
    assert code == 0
    # Learning curves, WER by group, three CTC figures, error counts.
    check_report(run_dir, "speech_report", min_images=6)


@pytest.mark.slow
def test_recurrent_memory_notebook_with_small_settings(tmp_path):
    parameters = {"units": 8, "max_delay": 12, "test_delays": [1, 4, 12], "train_steps": 40}
    execute_notebook(NOTEBOOKS_DIR / "recurrent_memory.ipynb", parameters, tmp_path / "report")
    # The task, accuracy and loss, gradient norms.
    check_report(tmp_path, "recurrent_memory", min_images=3)
    executed = nbformat.read(tmp_path / "report" / "recurrent_memory.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "max_delay = 12" in injected[0].source
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert all(name in printed for name in ("SimpleRNN", "LSTM", "GRU"))


@pytest.mark.parametrize("module", ["translation", "speech"])
def test_report_needs_an_evaluated_run(module, tmp_path, capsys):
    pipeline = importlib.import_module(f"pipelines.{module}")
    config = CONFIGS / f"{module}_smoke.yaml"
    assert pipeline.main(["report", "--config", str(config), "--run-dir", str(tmp_path)]) == 1
    assert "stage 'evaluate' has not run yet" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
