"""The ``report`` stage: execute a report notebook with parameters; save it executed and
as HTML.

Parameters follow papermill's convention: the notebook has one cell tagged
``parameters`` with defaults, and a cell tagged ``injected-parameters`` that assigns the
given values is inserted right after it. So the notebooks also run under papermill and,
unchanged, in JupyterLab with their defaults.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.file_io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
# The interpreter's own kernel (ipykernel's "python3" resolves to sys.executable), so a
# report runs with the environment the pipeline runs in, installed kernel or not.
KERNEL = "python3"
OFFLINE_TEMPLATE = Path(__file__).resolve().parent / "reports" / "offline.html.j2"


class ReportError(RuntimeError):
    """A notebook cell failed; the message names the cell and the saved notebook."""


def inject_parameters(notebook, parameters: dict) -> None:
    """Insert a cell assigning ``parameters`` after the cell tagged ``parameters``.

    Values must be Python literals (their ``repr`` is the code). Raises ValueError if the
    notebook has no parameters cell: the values would silently not apply.
    """
    import nbformat

    cells = notebook.cells
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])]
    if not tagged:
        raise ValueError("notebook has no cell tagged 'parameters'")
    # A notebook executed before (by papermill or by us) keeps only the newest values.
    cells[:] = [c for c in cells if "injected-parameters" not in c.metadata.get("tags", [])]
    lines = ["# Parameters injected by pipelines.report_stage"]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    cells.insert(tagged[0] + 1, cell)


def execute_notebook(source: str | Path, parameters: dict, out_dir: str | Path,
                     timeout: int = 1800) -> tuple[Path, Path]:
    """Run ``source`` with ``parameters`` in a fresh kernel started in the repository root.

    Writes ``out_dir/<name>.ipynb`` (executed) and ``out_dir/<name>.html`` (images
    embedded, so the file stands alone) and returns both paths. They are written even
    when a cell fails, with the error in place, before ReportError is raised.
    """
    # Imported on use: the pipelines import this module for their report stage, and the
    # other stages should not pay for Jupyter's packages.
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from nbconvert import HTMLExporter

    source, out_dir = Path(source), Path(out_dir)
    notebook = nbformat.read(source, as_version=4)
    inject_parameters(notebook, parameters)
    client = NotebookClient(notebook, timeout=timeout, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(ROOT)}},
                            # The kernel's own start-up warnings (unencrypted local TCP)
                            # would go to the pipeline's stderr.
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    failure = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
        failure = e
    ipynb, html = out_dir / f"{source.stem}.ipynb", out_dir / f"{source.stem}.html"
    atomic_write_text(ipynb, nbformat.writes(notebook))
    body, _ = HTMLExporter(template_file=str(OFFLINE_TEMPLATE)).from_notebook_node(notebook)
    atomic_write_text(html, body)
    if failure is not None:
        cell = next((i for i, c in enumerate(notebook.cells)
                     if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        what = (f"{failure.ename}: {failure.evalue}" if isinstance(failure, CellExecutionError)
                else str(failure).strip().splitlines()[0])
        where = "execution" if cell is None else f"cell {cell}"
        raise ReportError(f"{source.name}: {where} failed ({what}); the executed notebook is "
                          f"{ipynb}")
    return ipynb, html


def report_stage(ctx, notebook: str) -> None:
    """The ``report`` stage of a pipeline: run ``notebooks/<notebook>.ipynb`` for ``ctx.run``.

    Needs a finished ``evaluate`` stage (the notebooks read its metrics and hypotheses).
    Always runs: a report is cheap, and it should reflect the current notebook.
    """
    ctx.require("evaluate")
    print(f"[report] running notebooks/{notebook}.ipynb on {ctx.run.root} (a minute or two)",
          flush=True)
    ipynb, html = execute_notebook(NOTEBOOKS_DIR / f"{notebook}.ipynb",
                                   {"run_dir": str(ctx.run.root.resolve())},
                                   ctx.run.path("report"))
    print(f"[report] wrote {ipynb} and {html}")
