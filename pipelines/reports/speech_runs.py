"""Reading a finished speech run and the analyses of ``speech_report.ipynb``.

Everything here reads files the speech pipeline wrote (``metrics.json``,
``logs/history.json``, ``data/test.jsonl``, ``hyps/``, ``features/stats.npz`` and
``checkpoints/best.keras``) and the test audio its manifest points to; nothing is trained.
Hypotheses are matched to utterances by line: ``hyps/test.<strategy>.txt`` has one line
per entry of ``data/test.jsonl``, in order.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from html import escape
from pathlib import Path

import jiwer
import numpy as np

from data_prep.file_io import read_lines
from data_prep.manifest import read_manifest
from models.ctc_frames import frames_per_output
from pipelines.config import load_config
from pipelines.reports import read_metrics
from pipelines.run_dir import RunDir
from pipelines.speech.config import SpeechConfig

BLANK_LABEL = "∅"  # how the CTC blank is shown in plots
SPACE_LABEL = "␣"  # and the word separator


@dataclass
class SpeechRun:
    """What the pipeline wrote for one run.

    ``hypotheses`` maps a decoding strategy (``beam_search_lm``, ``beam_search``,
    ``closed_set``, ``greedy``) to its test transcripts; ``main`` is the one
    ``metrics.json`` reports first (with a language model, the search that uses it).
    """

    root: Path
    config: SpeechConfig
    metrics: dict
    history: list[dict]
    entries: list[dict]
    hypotheses: dict[str, list[str]]
    main: str

    @property
    def references(self) -> list[str]:
        return [e["text"] for e in self.entries]

    @property
    def speakers(self) -> list[str]:
        return [e.get("speaker", "unknown") for e in self.entries]


def load_run(run_dir: str | Path) -> SpeechRun:
    """Load a run whose ``evaluate`` stage has finished (FileNotFoundError otherwise)."""
    root = Path(run_dir)
    metrics = read_metrics(root)
    main = metrics["strategy"]
    entries = read_manifest(root / "data" / "test.jsonl")
    hypotheses = {}
    without_lm = [metrics["without_lm"]["strategy"]] if "without_lm" in metrics else []
    for name in dict.fromkeys([main, *without_lm, "greedy"]):
        hyps = read_lines(root / "hyps" / f"test.{name}.txt")
        if len(hyps) != len(entries):
            raise ValueError(f"{root}/hyps/test.{name}.txt has {len(hyps)} lines for "
                             f"{len(entries)} test utterances")
        hypotheses[name] = hyps
    return SpeechRun(root=root, config=load_config(SpeechConfig, root / "config.yaml", recorded=True),
                     metrics=metrics, history=json.loads((root / "logs" / "history.json").read_text()),
                     entries=entries, hypotheses=hypotheses, main=main)


def scores_rows(metrics: dict) -> list[list]:
    """Rows ``[decoding, WER %, CER %, utterances right %, word errors, RTF]``."""
    rows = []
    # A hybrid CTC/attention run also reports the beam searches its rescoring reorders.
    others = [metrics[k] for k in ("without_lm", "beam_search_lm", "beam_search", "greedy")
              if k in metrics and metrics[k]["strategy"] != metrics["strategy"]]
    for scores in [metrics, *others]:
        strategy = scores["strategy"]
        name = strategy.replace("_", " ")
        if strategy == "beam_search":
            name += f" (width {metrics['beam_width']})"
        elif strategy in ("beam_search_lm", "attention_rescoring_lm") and "lm" in metrics:
            lm = metrics["lm"]
            name = (f"beam search + {lm['order']}-gram word LM (width {lm['beam_width']}, "
                    f"weight {lm['weight']:g}, word bonus {lm['word_bonus']:g})")
            if strategy == "attention_rescoring_lm":
                name = f"attention rescoring of the {metrics['beam_width']}-best of {name}"
        elif strategy == "attention_rescoring":
            name += f" of the beam search's {metrics['beam_width']}-best"
        rows.append([name, 100 * scores["wer"], 100 * scores["cer"],
                     100 * scores["utterance_accuracy"],
                     f"{scores['word_errors']} / {scores['reference_words']}", scores["rtf"]])
    return rows


def edit_operations(references: list[str], hypotheses: list[str]) -> list[list[tuple]]:
    """Word alignment of each utterance as ``(op, reference_word, hypothesis_word)``.

    ``op`` is ``equal``, ``substitute``, ``delete`` (the hypothesis word is None) or
    ``insert`` (the reference word is None); jiwer's minimum-edit alignment.
    """
    out = jiwer.process_words(references, hypotheses)
    result = []
    for ref, hyp, chunks in zip(out.references, out.hypotheses, out.alignments):
        ops = []
        for c in chunks:
            if c.type == "insert":
                ops += [("insert", None, w) for w in hyp[c.hyp_start_idx:c.hyp_end_idx]]
            elif c.type == "delete":
                ops += [("delete", w, None) for w in ref[c.ref_start_idx:c.ref_end_idx]]
            else:
                ops += [(c.type, r, h) for r, h in zip(ref[c.ref_start_idx:c.ref_end_idx],
                                                       hyp[c.hyp_start_idx:c.hyp_end_idx])]
        result.append(ops)
    return result


def error_counts(references: list[str], hypotheses: list[str]) -> dict[str, Counter]:
    """How often each substitution (``"seven → one"``), deletion and insertion happened."""
    counts = {"substitutions": Counter(), "deletions": Counter(), "insertions": Counter()}
    for ops in edit_operations(references, hypotheses):
        for op, ref, hyp in ops:
            if op == "substitute":
                counts["substitutions"][f"{ref} → {hyp}"] += 1
            elif op == "delete":
                counts["deletions"][ref] += 1
            elif op == "insert":
                counts["insertions"][hyp] += 1
    return counts


def letter_errors(references: list[str], hypotheses: list[str]) -> dict[str, Counter]:
    """Spelled letters (one-letter reference words): how often each was said
    (``said``) and misrecognized (``wrong``), and each ``"b → d"`` substitution."""
    counts = {"said": Counter(), "wrong": Counter(), "substitutions": Counter()}
    for ops in edit_operations(references, hypotheses):
        for op, ref, hyp in ops:
            if ref is None or len(ref) != 1:
                continue
            counts["said"][ref] += 1
            if op != "equal":
                counts["wrong"][ref] += 1
            if op == "substitute":
                counts["substitutions"][f"{ref} → {hyp}"] += 1
    return counts


def utterance_wers(references: list[str], hypotheses: list[str]) -> np.ndarray:
    """Word error rate of each utterance on its own."""
    return np.array([sum(op != "equal" for op, _, _ in ops) / max(1, len(r.split()))
                     for ops, r in zip(edit_operations(references, hypotheses), references)])


def marked_transcript(ops: list[tuple]) -> str:
    """HTML of a hypothesis with its errors marked against the reference.

    Substituted words are shown as ``hyp`` with the reference word struck through before
    it, deleted words struck through, inserted words underlined (see ``MARK_LEGEND``).
    """
    words = []
    for op, ref, hyp in ops:
        if op == "equal":
            words.append(escape(hyp))
        elif op == "substitute":
            words.append(f'<span class="sub"><s>{escape(ref)}</s>&#8239;{escape(hyp)}</span>')
        elif op == "delete":
            words.append(f'<span class="del"><s>{escape(ref)}</s></span>')
        else:
            words.append(f'<span class="ins"><u>{escape(hyp)}</u></span>')
    return " ".join(words) or "<i>(empty)</i>"


MARK_STYLE = ("<style>.sub{background:#fde2a7}.del{background:#f7b6b2}"
              ".ins{background:#b9e3c6}</style>")
MARK_LEGEND = (MARK_STYLE + '<p>Errors: <span class="sub"><s>reference</s>&#8239;hypothesis'
               '</span> substitution, <span class="del"><s>reference</s></span> deletion, '
               '<span class="ins"><u>hypothesis</u></span> insertion.</p>')


def worst_first(references: list[str], hypotheses: list[str]) -> list[int]:
    """Utterance indices by number of word errors, then word error rate, most first.

    Errors first: with isolated words every misrecognized one has a WER of 100%, and
    longer utterances with several errors say more about the model.
    """
    ops = edit_operations(references, hypotheses)
    errors = [sum(op != "equal" for op, _, _ in o) for o in ops]
    wers = utterance_wers(references, hypotheses)
    return sorted(range(len(references)), key=lambda i: (-errors[i], -wers[i]))


def pick_examples(references: list[str], hypotheses: list[str], count: int) -> list[int]:
    """Indices of ``count`` utterances: about half misrecognized (worst first), the rest right.

    Falls back to whichever kind there is when one kind runs short.
    """
    wrong = [i for i in worst_first(references, hypotheses) if references[i] != hypotheses[i]]
    right = [i for i in range(len(references)) if references[i] == hypotheses[i]]
    take_wrong = min(len(wrong), max(count - len(right), (count + 1) // 2))
    return wrong[:take_wrong] + right[:count - take_wrong]


def class_labels(label_texts: list[str]) -> list[str]:
    """Display label of every model output (``label_texts``: the vocabulary's, in id
    order): the blank as ∅, a space (alone, or starting a word's unit) as ␣."""
    return [BLANK_LABEL if not t else SPACE_LABEL + t[1:] if t.startswith(" ") else t
            for t in label_texts]


def vocabulary_of(run: SpeechRun):
    """The run's CTC vocabulary (characters, or the units its prepare trained)."""
    from pipelines.speech.data import vocabulary

    return vocabulary(run.config, RunDir(run.root))


def greedy_segments(path: np.ndarray, blank_index: int) -> list[tuple[int, int, int]]:
    """Runs of the same non-blank class in a frame-wise argmax ``path``.

    Returns ``(first_frame, last_frame + 1, class)`` per run: each run is one emitted
    label under CTC's greedy rule (merge repeats, then drop blanks).
    """
    segments, start = [], 0
    for t in range(1, len(path) + 1):
        if t == len(path) or path[t] != path[start]:
            if path[start] != blank_index:
                segments.append((start, t, int(path[start])))
            start = t
    return segments


def ctc_examples(run: SpeechRun, indices: list[int]) -> list[dict]:
    """Features, CTC posteriors and the greedy path of some test utterances.

    Loads ``checkpoints/best.keras`` and computes features from the audio exactly as the
    pipeline does. Returns per utterance ``{"index", "speaker", "reference", "strategy" and
    "hypothesis" (the main decoding's), "features" [frames, bins] (before normalization, for
    display), "frame_seconds", "posteriors" [outputs, classes], "output_seconds", "path"
    (the frame-wise argmax class)}``.
    """
    import keras

    from data_prep.audio_features import (
        compute_features,
        extract_features,
        load_audio,
        normalize,
        speech_stats,
    )
    from pipelines.speech.data import load_stats
    from pipelines.speech.inference import load_checkpoint

    cfg = run.config
    model = load_checkpoint(RunDir(run.root))
    stats = load_stats(RunDir(run.root), cfg.features)
    hop = cfg.features.hop_ms / 1000
    subsampling = frames_per_output(cfg.model.conv_layers, cfg.model.conv_stride)
    examples = []
    for index in indices:
        entry = run.entries[index]
        raw = compute_features(load_audio(entry["audio_filepath"], cfg.features.sample_rate),
                               cfg.features)
        if cfg.features.normalization == "speaker":
            # As evaluate normalized it: with the statistics of all its speaker's test audio.
            same = [e["audio_filepath"] for e in run.entries
                    if "speaker" in entry and e.get("speaker") == entry["speaker"]]
            stats = speech_stats(extract_features(same or [entry["audio_filepath"]],
                                                  cfg.features, desc="speaker features"),
                                 cfg.features)
        features = normalize(raw, cfg.features, stats)
        logits = model({"features": features[None], "feature_lengths": np.array([len(features)])},
                       training=False)
        posteriors = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))[0]
        examples.append({
            "index": index, "speaker": entry.get("speaker", "unknown"),
            "reference": entry["text"], "strategy": run.main.replace("_", " "),
            "hypothesis": run.hypotheses[run.main][index],
            "features": raw, "frame_seconds": hop, "posteriors": posteriors,
            "output_seconds": hop * subsampling, "path": np.argmax(posteriors, axis=-1),
        })
    return examples
