"""Plots and tables of the report notebooks (matplotlib figures, HTML tables).

Every function returns the figure it made (or draws on the axes it is given) and shows
nothing itself, so the notebooks decide what to display and tests can inspect the result.
"""

from __future__ import annotations

from collections import Counter
from html import escape

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator


def html_table(header: list[str], rows: list[list], formats: dict[int, str] | None = None,
               html_columns: tuple[int, ...] = (), align_left: tuple[int, ...] = ()) -> str:
    """An HTML table; cells are escaped except in ``html_columns``.

    ``formats`` maps a column index to a format spec for its numbers (``".2f"``);
    ``align_left`` columns (long text) are left-aligned, the others right-aligned.
    """
    formats = formats or {}

    def cell(i, value, tag):
        if isinstance(value, (int, float, np.number)) and i in formats:
            text = format(value, formats[i])
        else:
            text = str(value) if i in html_columns else escape(str(value))
        align = "left" if i in align_left else "right"
        return f'<{tag} style="text-align:{align}">{text}</{tag}>'

    head = "".join(cell(i, h, "th") for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell(i, v, "td") for i, v in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def learning_curves(history: list[dict], metric: str, metric_label: str, loss_label: str,
                    higher_is_better: bool, scale: float = 1.0) -> plt.Figure:
    """Training and validation loss, and the validation metric, per epoch.

    ``scale`` multiplies the metric for display (100 for a rate shown in percent); the
    best epoch (the one ``best.keras`` holds) is marked.
    """
    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(epochs, [h["loss"] for h in history], "o-", label="training")
    left.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    left.set(xlabel="epoch", ylabel=loss_label, title="Loss")
    left.legend()
    values = np.array([h[metric] for h in history], dtype=float) * scale
    best = int(np.nanargmax(values) if higher_is_better else np.nanargmin(values))
    right.plot(epochs, values, "o-", color="tab:green")
    right.plot(epochs[best], values[best], "*", color="tab:red", markersize=16,
               label=f"best: epoch {epochs[best]} ({values[best]:.2f})")
    right.set(xlabel="epoch", ylabel=metric_label, title=f"Validation {metric_label}")
    right.legend()
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def grouped_bars(ax, categories: list[str], series: dict[str, list[float]], ylabel: str,
                 counts: list[int] | None = None, value_format: str = ".1f") -> None:
    """Bars per category for each series, values written on the bars.

    ``counts`` (items per category) are added to the category labels as ``n=``.
    """
    width = 0.8 / len(series)
    x = np.arange(len(categories))
    for k, (name, values) in enumerate(series.items()):
        bars = ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt=f"%{value_format}", fontsize=8, padding=2)
    labels = categories if counts is None else [f"{c}\nn={n}" for c, n in zip(categories, counts)]
    ax.set_xticks(x, labels)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend()


def attention_heatmap(ax, weights: np.ndarray, source: list[str], output: list[str]) -> None:
    """Attention weights [output steps, source positions] with the tokens as tick labels."""
    image = ax.imshow(weights, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=9)
    ax.set_yticks(range(len(output)), output, fontsize=9)
    ax.set_xlabel("source subword")
    ax.set_ylabel("output subword (greedy)")
    plt.colorbar(image, ax=ax, label="attention weight", fraction=0.04, pad=0.02)


def counter_bars(ax, counts: Counter, title: str, top: int = 10, color: str = "tab:blue") -> None:
    """Horizontal bars of the ``top`` most frequent items, or a note when there are none."""
    items = counts.most_common(top)
    ax.set_title(f"{title} ({sum(counts.values())} in all)")
    if not items:
        ax.text(0.5, 0.5, f"no {title.lower()}", ha="center", va="center",
                transform=ax.transAxes, color="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        return
    labels, values = zip(*reversed(items))
    bars = ax.barh(range(len(items)), values, color=color)
    ax.bar_label(bars, padding=2, fontsize=8)
    ax.set_yticks(range(len(items)), labels)
    # Room for ``top`` bars whatever their number, so one bar is not a wall of color.
    ax.set_ylim(len(items) - top - 0.5, len(items) - 0.5)
    ax.set_xlabel("occurrences")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.15)


def ctc_figure(example: dict, labels: list[str], blank_index: int,
               feature_labels: tuple[str, str], segments: list[tuple[int, int, int]],
               min_posterior: float = 0.05) -> plt.Figure:
    """Spectrogram, CTC posteriors and the greedy alignment of one utterance, on one time axis.

    ``feature_labels``: what a feature row is and what its values are (``("mel band",
    "log power")``). Only classes that reach ``min_posterior`` somewhere (and the blank
    and the argmax path's classes) get a row of the posterior image, so the characters
    the model considered stay readable. ``segments`` are ``speech_runs.greedy_segments``
    of the frame-wise argmax path.
    """
    feats, post, path = example["features"], example["posteriors"], example["path"]
    hop, out_hop = example["frame_seconds"], example["output_seconds"]
    shown = sorted(set(np.flatnonzero(post.max(axis=0) >= min_posterior)) | {blank_index}
                   | set(path.tolist()))
    seconds = len(feats) * hop
    # Wider for longer utterances, so that one output frame stays wide enough to read.
    width = min(18.0, max(10.0, 4.0 + 2.5 * seconds))
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(width, 2.6 + 0.16 * len(shown) + 1.6), sharex=True,
        gridspec_kw={"height_ratios": [2.2, 0.5 + 0.16 * len(shown), 0.55]})
    # Frame i is centred at i * hop (centred STFT windows); logit frame j at j * out_hop.
    image = top.imshow(feats.T, origin="lower", aspect="auto", cmap="magma",
                       extent=(-hop / 2, (len(feats) - 0.5) * hop, -0.5, feats.shape[1] - 0.5))
    top.set_ylabel(feature_labels[0])
    # Thin colorbars of one width: the three plots must keep the same time axis.
    bar = {"fraction": 0.025, "pad": 0.01}
    plt.colorbar(image, ax=top, label=feature_labels[1], **bar)
    image = middle.imshow(post[:, shown].T, origin="lower", aspect="auto", cmap="Greys",
                          vmin=0, vmax=1, interpolation="nearest",
                          extent=(-out_hop / 2, (len(post) - 0.5) * out_hop, -0.5, len(shown) - 0.5))
    row = {c: r for r, c in enumerate(shown)}
    middle.plot(np.arange(len(path)) * out_hop, [row[c] for c in path], ".", color="tab:red",
                markersize=4, label="greedy path (argmax)")
    middle.set_yticks(range(len(shown)), [labels[c] for c in shown], fontsize=8)
    middle.set_ylabel("output class")
    middle.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    plt.colorbar(image, ax=middle, label="posterior", **bar)
    for k, (start, end, c) in enumerate(segments):
        bottom.axvspan((start - 0.5) * out_hop, (end - 0.5) * out_hop, color="tab:orange", alpha=0.35)
        # Alternate heights: labels of neighbouring one-frame segments would overlap.
        bottom.text((start + end - 1) / 2 * out_hop, 0.7 if k % 2 == 0 else 0.3, labels[c],
                    ha="center", va="center", fontsize=10, fontweight="bold")
    if not segments:
        bottom.text(0.5, 0.5, "the greedy path emits only blanks", ha="center", va="center",
                    transform=bottom.transAxes, color="gray")
    bottom.set_ylim(0, 1)
    bottom.set_yticks([])
    bottom.set_ylabel("greedy\nlabels", rotation=0, ha="right", va="center")
    bottom.set_xlabel("time (s)")
    bottom.set_xlim(-hop / 2, (len(feats) - 0.5) * hop)
    # An invisible colorbar keeps the bottom axis as wide as the two above it.
    plt.colorbar(plt.cm.ScalarMappable(cmap="Greys"), ax=bottom, **bar).ax.set_visible(False)
    fig.suptitle(f"test utterance {example['index']} ({example['speaker']})\n"
                 f"reference \u201c{example['reference']}\u201d\n{example['strategy']} "
                 f"hypothesis \u201c{example['hypothesis']}\u201d", fontsize=10)
    return fig
