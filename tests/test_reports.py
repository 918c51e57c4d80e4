"""Unit tests of the report notebooks' helpers (pipelines/reports/)."""

import os
import re
from collections import Counter

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pipelines.quiet import native_stderr_silenced  # noqa: E402
from pipelines.report_stage import ReportError, execute_notebook, inject_parameters  # noqa: E402
from pipelines.reports import memory_task, plots  # noqa: E402
from pipelines.reports import speech_runs as sr  # noqa: E402
from pipelines.reports import translation_runs as tr  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tiny_notebook(*sources, tags=("parameters",)):
    cells = [nbformat.v4.new_code_cell(s) for s in sources]
    cells[0].metadata["tags"] = list(tags)
    return nbformat.v4.new_notebook(cells=cells)


# -- report_stage.py -----------------------------------------------------------------


def test_inject_parameters_after_the_parameters_cell_replacing_old_ones():
    nb = tiny_notebook("x = 1", "print(x)")
    inject_parameters(nb, {"x": 2, "name": "a'b"})
    inject_parameters(nb, {"x": 3})
    assert [c.source for c in nb.cells][1:] == [
        "# Parameters injected by pipelines.report_stage\nx = 3", "print(x)"]
    assert nb.cells[1].metadata["tags"] == ["injected-parameters"]


def test_inject_parameters_needs_a_parameters_cell():
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        inject_parameters(tiny_notebook("x = 1", tags=()), {"x": 2})


def test_execute_notebook_writes_ipynb_and_html(tmp_path):
    source = tmp_path / "demo.ipynb"
    nbformat.write(tiny_notebook("x = 1", "print(x * 2)"), source)
    ipynb, html = execute_notebook(source, {"x": 21}, tmp_path / "out")
    executed = nbformat.read(ipynb, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "42\n"
    assert "42" in html.read_text()
    # Stand-alone: nothing is fetched from the network (require.js, MathJax, mermaid).
    assert not re.search(r"""(src=|href=|import\(|url\()["']?https?:""", html.read_text())


def test_a_failing_cell_is_a_report_error_and_the_notebook_is_kept(tmp_path):
    source = tmp_path / "broken.ipynb"
    nbformat.write(tiny_notebook("x = 1", "1 / 0", "print('never')"), source)
    with pytest.raises(ReportError, match=r"broken.ipynb: cell 2 failed \(ZeroDivisionError"):
        execute_notebook(source, {"x": 2}, tmp_path / "out")
    executed = nbformat.read(tmp_path / "out" / "broken.ipynb", as_version=4)
    assert executed.cells[2].outputs[0]["output_type"] == "error"
    assert (tmp_path / "out" / "broken.html").is_file()


def test_native_stderr_silenced(capfd):
    with native_stderr_silenced():
        os.write(2, b"native noise\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


# -- plots.py ---------------------------------------------------------------------------


def test_html_table_escapes_and_formats():
    html = plots.html_table(["a", "b", "c"], [["<x>", 1.23456, "<b>ok</b>"]],
                            formats={1: ".2f"}, html_columns=(2,), align_left=(0,))
    assert "&lt;x&gt;" in html and ">1.23<" in html and "<b>ok</b>" in html
    assert 'style="text-align:left">&lt;x&gt;' in html


def test_learning_curves_mark_the_best_epoch():
    history = [{"epoch": e, "loss": 3 - e, "val_loss": 3.5 - e, "val_wer": w}
               for e, w in [(1, 0.9), (2, 0.3), (3, 0.4)]]
    fig = plots.learning_curves(history, "val_wer", "WER (%)", "loss", False, scale=100)
    left, right = fig.axes
    assert len(left.lines) == 2
    assert "best: epoch 2 (30.00)" in right.get_legend().get_texts()[0].get_text()


def test_grouped_bars_and_counter_bars():
    fig, (a, b, c) = plt.subplots(1, 3)
    plots.grouped_bars(a, ["x", "y"], {"beam": [1, 2], "greedy": [3, 4]}, "BLEU", counts=[5, 6])
    assert len(a.patches) == 4 and a.get_xticklabels()[0].get_text() == "x\nn=5"
    plots.counter_bars(b, Counter({"one → two": 3, "six → seven": 1}), "Substitutions")
    assert [t.get_text() for t in b.get_yticklabels()] == ["six → seven", "one → two"]
    plots.counter_bars(c, Counter(), "Insertions")
    assert c.texts[0].get_text() == "no insertions"


def test_ctc_figure_shares_one_time_axis():
    # Six output frames: blank, blank, "a", blank, "b", blank.
    posteriors = np.full((6, 4), 0.01)
    posteriors[[0, 1, 3, 5], 0] = 0.97
    posteriors[2, 1], posteriors[4, 2] = 0.97, 0.97
    example = {"index": 0, "speaker": "s", "reference": "ab", "strategy": "greedy",
               "hypothesis": "ab", "features": np.random.default_rng(0).normal(size=(12, 5)),
               "frame_seconds": 0.01, "posteriors": posteriors, "output_seconds": 0.02,
               "path": posteriors.argmax(axis=1)}
    segments = sr.greedy_segments(example["path"], 0)
    fig = plots.ctc_figure(example, ["∅", "a", "b", "c"], 0, ("mel band", "log power"), segments)
    bottom = fig.axes[2]
    assert [t.get_text() for t in bottom.texts] == ["a", "b"]
    assert bottom.get_xlim() == pytest.approx((-0.005, 0.115))
    # Class "c" never reaches 5%: not shown.
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["∅", "a", "b"]


# -- translation_runs.py ----------------------------------------------------------------


def test_length_buckets():
    assert tr.bucket_labels((5, 10)) == ["1-5", "6-10", "11+"]
    assert [tr.length_bucket(n, (5, 10)) for n in (1, 5, 6, 10, 11, 40)] == [0, 0, 1, 1, 2, 2]


def test_bleu_by_length_skips_empty_buckets():
    sources = ["a b", "a b c d e f g", "a b c"]
    refs = ["the cat sat on the mat", "a dog runs in the park today", "two men play"]
    result = tr.bleu_by_length(sources, refs, {"greedy": refs, "bad": ["x"] * 3}, edges=(5, 10))
    assert [r["bucket"] for r in result] == ["1-5", "6-10"]
    assert [r["sentences"] for r in result] == [2, 1]
    assert result[0]["bleu"]["greedy"] == pytest.approx(100.0) and result[0]["bleu"]["bad"] == 0.0


def test_sentence_scores_rank_worse_translations_lower():
    refs = ["a man is riding a red bike down the street ."] * 3
    hyps = [refs[0], "a man is riding a bike .", "two dogs play ."]
    scores = tr.sentence_scores(hyps, refs)
    assert scores[0] == pytest.approx(100.0) and scores[0] > scores[1] > scores[2]


def test_scores_rows():
    greedy = {"bleu": 20.0, "chrf": 40.0, "beam_size": 1, "decode_seconds": 2.0,
              "sentences_per_second": 50.0}
    rows = tr.scores_rows({**greedy, "bleu": 22.0, "beam_size": 5, "greedy": greedy})
    assert rows == [["beam search (k=5)", 22.0, 40.0, 2.0, 50.0], ["greedy", 20.0, 40.0, 2.0, 50.0]]


def test_pick_examples_prefers_readable_lengths():
    sources = ["a"] * 3 + ["w " * 8] * 4 + ["w " * 40]
    assert tr.pick_examples(sources, 2) == [3, 6]
    assert tr.pick_examples(["a b", "a", "a b c"], 2) == [0, 1]  # too few readable ones


# -- speech_runs.py ---------------------------------------------------------------------


REFS = ["one two three", "four five", "six"]
HYPS = ["one too three", "four", "six six"]


def test_edit_operations_and_error_counts():
    ops = sr.edit_operations(REFS, HYPS)
    assert ops[0] == [("equal", "one", "one"), ("substitute", "two", "too"),
                      ("equal", "three", "three")]
    assert ops[1] == [("equal", "four", "four"), ("delete", "five", None)]
    assert ops[2] == [("equal", "six", "six"), ("insert", None, "six")]
    counts = sr.error_counts(REFS, HYPS)
    assert counts["substitutions"] == Counter({"two → too": 1})
    assert counts["deletions"] == Counter({"five": 1})
    assert counts["insertions"] == Counter({"six": 1})
    np.testing.assert_allclose(sr.utterance_wers(REFS, HYPS), [1 / 3, 1 / 2, 1.0])


def test_letter_errors_count_spelled_letters_only():
    counts = sr.letter_errors(["b d e seven", "p i t", "erase t"], ["d d e seven", "p i", "erase t"])
    assert counts["said"] == Counter({"b": 1, "d": 1, "e": 1, "p": 1, "i": 1, "t": 2})
    assert counts["wrong"] == Counter({"b": 1, "t": 1})
    assert counts["substitutions"] == Counter({"b → d": 1})


# One decoding's scores in metrics.json.
SCORES = {"wer": 0.1, "cer": 0.05, "utterance_accuracy": 0.5, "word_errors": 1,
          "reference_words": 10, "rtf": 0.01}


def test_speech_scores_rows_with_a_language_model():
    base = SCORES
    metrics = {**base, "strategy": "beam_search_lm", "beam_width": 16,
               "lm": {"order": 3, "beam_width": 64, "weight": 0.5, "word_bonus": 2.0},
               "without_lm": {**base, "wer": 0.2, "strategy": "beam_search"},
               "greedy": {**base, "wer": 0.3, "strategy": "greedy"}}
    rows = sr.scores_rows(metrics)
    assert [r[0] for r in rows] == ["beam search + 3-gram word LM (width 64, weight 0.5, word "
                                    "bonus 2)", "beam search (width 16)", "greedy"]
    assert [r[1] for r in rows] == pytest.approx([10.0, 20.0, 30.0])


def test_speech_scores_rows_of_a_hybrid_with_a_language_model():
    base = SCORES
    metrics = {**base, "strategy": "attention_rescoring_lm", "beam_width": 16,
               "lm": {"order": 3, "beam_width": 64, "weight": 0.5, "word_bonus": 2.0},
               "without_lm": {**base, "wer": 0.2, "strategy": "attention_rescoring"},
               "beam_search": {**base, "wer": 0.25, "strategy": "beam_search"},
               "beam_search_lm": {**base, "wer": 0.15, "strategy": "beam_search_lm"},
               "greedy": {**base, "wer": 0.3, "strategy": "greedy"}}
    rows = sr.scores_rows(metrics)
    lm = "beam search + 3-gram word LM (width 64, weight 0.5, word bonus 2)"
    assert [r[0] for r in rows] == [
        f"attention rescoring of the 16-best of {lm}",
        "attention rescoring of the beam search's 16-best", lm, "beam search (width 16)",
        "greedy"]
    assert [r[1] for r in rows] == pytest.approx([10.0, 20.0, 15.0, 25.0, 30.0])


def test_marked_transcript():
    html = sr.marked_transcript(sr.edit_operations(["a <b> c"], ["x <b>"])[0])
    assert html == ('<span class="sub"><s>a</s>&#8239;x</span> &lt;b&gt; '
                    '<span class="del"><s>c</s></span>')
    assert sr.marked_transcript([]) == "<i>(empty)</i>"


def test_pick_examples_mixes_wrong_and_right():
    refs, hyps = ["a", "b", "c", "d"], ["a", "x", "c", "y z"]
    assert sr.pick_examples(refs, hyps, 3) == [3, 1, 0]  # worst first, then a right one
    assert sr.pick_examples(refs, refs, 2) == [0, 1]  # nothing wrong: right ones only


def test_class_labels_and_greedy_segments():
    assert sr.class_labels(["", "a", "b", " "]) == ["∅", "a", "b", "␣"]
    assert sr.class_labels(["a", " three", ""]) == ["a", "␣three", "∅"]
    # blank a a blank a b b blank -> "a", "a", "b" (a repeat needs a blank between).
    path = np.array([0, 1, 1, 0, 1, 2, 2, 0])
    assert sr.greedy_segments(path, 0) == [(1, 3, 1), (4, 5, 1), (5, 7, 2)]
    assert sr.greedy_segments(np.array([0, 0]), 0) == []


# -- memory_task.py ---------------------------------------------------------------------


def test_recall_batches_put_the_symbol_delay_steps_before_the_query():
    task = memory_task.RecallTask(symbols=3, noise_channels=2, max_delay=6)
    x, y, delays = task.batch(np.random.default_rng(0), 50)
    assert x.shape == (50, 8, 6) and task.length == 8
    assert delays.min() >= 1 and delays.max() <= 6
    for xi, yi, d in zip(x, y, delays):
        symbol_step = np.flatnonzero(xi[:, :3].sum(axis=1))
        assert list(symbol_step) == [8 - 1 - d] and xi[symbol_step[0], yi] == 1
    assert np.all(x[:, -1, -1] == 1) and np.all(x[:, :-1, -1] == 0)
    _, _, fixed = task.batch(np.random.default_rng(0), 4, 6)
    assert list(fixed) == [6] * 4
    with pytest.raises(ValueError, match="delays must be in"):
        task.batch(np.random.default_rng(0), 4, 7)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_memory_models_train_and_report_gradient_norms(cell):
    import keras

    task = memory_task.RecallTask(max_delay=4)
    keras.utils.set_random_seed(0)
    model = memory_task.build_model(cell, 4, task)
    history = memory_task.train(model, task, steps=3, batch_size=8, chunk=2)
    assert [h["step"] for h in history] == [2, 3] and np.isfinite(history[-1]["loss"])
    accuracy = memory_task.accuracy_by_delay(model, task, [1, 4], size=16)
    assert accuracy.shape == (2,) and np.all((0 <= accuracy) & (accuracy <= 1))
    x, y, _ = task.batch(np.random.default_rng(0), 8, 4)
    norms = memory_task.state_gradient_norms(model, x, y)
    assert norms.shape == (task.length,) and norms[-1] == pytest.approx(1.0)
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)
