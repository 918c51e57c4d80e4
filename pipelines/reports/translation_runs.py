"""Reading a finished translation run and the analyses of ``translation_report.ipynb``.

Everything here reads files the translation pipeline wrote (``metrics.json``,
``logs/history.json``, ``data/test.*``, ``hyps/``, the tokenizers and
``checkpoints/best.keras``); nothing is trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sacrebleu.metrics import BLEU, CHRF

from data_prep.file_io import read_lines
from data_prep.special_ids import EOS_ID, PAD_ID
from pipelines.config import load_config
from pipelines.reports import read_metrics
from pipelines.translation.config import TranslationConfig
from pipelines.translation.data import tokenizer_pair

# Upper ends (inclusive) of the source-length buckets, in words; the last bucket is open.
LENGTH_EDGES = (5, 10, 15, 20, 30)


@dataclass
class TranslationRun:
    """What the pipeline wrote for one run.

    ``hypotheses`` maps a decoding name (``greedy``, ``beam5``) to its test translations;
    ``main`` is the configured decoding, the one ``metrics.json`` reports first.
    """

    root: Path
    config: TranslationConfig
    metrics: dict
    history: list[dict]
    sources: list[str]
    references: list[str]
    hypotheses: dict[str, list[str]]
    main: str


def load_run(run_dir: str | Path) -> TranslationRun:
    """Load a run whose ``evaluate`` stage has finished (FileNotFoundError otherwise)."""
    root = Path(run_dir)
    metrics = read_metrics(root)
    main = "greedy" if metrics["beam_size"] == 1 else f"beam{metrics['beam_size']}"
    hypotheses = {name: read_lines(root / "hyps" / f"test.{name}.txt")
                  for name in dict.fromkeys([main, "greedy"])}
    return TranslationRun(
        root=root,
        config=load_config(TranslationConfig, root / "config.yaml", recorded=True),
        metrics=metrics,
        history=json.loads((root / "logs" / "history.json").read_text()),
        sources=read_lines(root / "data" / "test.src"),
        references=read_lines(root / "data" / "test.tgt"),
        hypotheses=hypotheses,
        main=main,
    )


def scores_rows(metrics: dict) -> list[list]:
    """Rows ``[decoding, BLEU, chrF, seconds, sentences/s]``: the main decoding, then greedy."""
    rows = []
    for scores in ([metrics, metrics["greedy"]] if metrics["beam_size"] != 1 else [metrics]):
        name = "greedy" if scores["beam_size"] == 1 else f"beam search (k={scores['beam_size']})"
        rows.append([name, scores["bleu"], scores["chrf"], scores["decode_seconds"],
                     scores["sentences_per_second"]])
    return rows


def sentence_scores(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Sentence-level BLEU of each hypothesis (sacreBLEU's, with its default smoothing).

    Noisy for single sentences, but it ranks a sentence's translations well enough to
    find the worst ones.
    """
    bleu = BLEU(effective_order=True)
    return np.array([bleu.sentence_score(h, [r]).score for h, r in zip(hypotheses, references)])


def sentence_chrf(hypotheses: list[str], references: list[str]) -> np.ndarray:
    """Sentence-level chrF of each hypothesis (finer-grained than BLEU on short sentences)."""
    chrf = CHRF()
    return np.array([chrf.sentence_score(h, [r]).score for h, r in zip(hypotheses, references)])


def bucket_labels(edges=LENGTH_EDGES) -> list[str]:
    """``["1-5", "6-10", ..., "31+"]`` for ``edges`` (5, 10, ..., 30)."""
    lows = [1, *(e + 1 for e in edges)]
    return [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f"{lows[-1]}+"]


def length_bucket(length: int, edges=LENGTH_EDGES) -> int:
    """Index of the bucket of a sentence of ``length`` words."""
    return int(np.searchsorted(edges, length, side="left"))


def bleu_by_length(sources: list[str], references: list[str], hypotheses: dict[str, list[str]],
                   edges=LENGTH_EDGES) -> list[dict]:
    """Corpus BLEU of each decoding within each source-length bucket (words).

    Returns one dict per non-empty bucket, shortest first:
    ``{"bucket": "6-10", "sentences": n, "bleu": {decoding: score}}``.
    """
    buckets = [length_bucket(len(s.split()), edges) for s in sources]
    labels, result = bucket_labels(edges), []
    for b, label in enumerate(labels):
        members = [i for i, x in enumerate(buckets) if x == b]
        if not members:
            continue
        refs = [[references[i] for i in members]]
        result.append({"bucket": label, "sentences": len(members), "bleu": {
            name: BLEU().corpus_score([hyps[i] for i in members], refs).score
            for name, hyps in hypotheses.items()}})
    return result


def ranked_sentences(run: TranslationRun) -> list[dict]:
    """Every test sentence with its main translation's sentence BLEU, worst first.

    Ties (many sentences score 0 for a weak model) are broken by sentence chrF.
    """
    hyps = run.hypotheses[run.main]
    bleu = sentence_scores(hyps, run.references)
    chrf = sentence_chrf(hyps, run.references)
    order = np.lexsort((chrf, bleu))
    return [{"index": int(i), "bleu": float(bleu[i]), "chrf": float(chrf[i]),
             "source": run.sources[i], "reference": run.references[i],
             **{name: h[i] for name, h in run.hypotheses.items()}} for i in order]


def pick_examples(sources: list[str], count: int, min_words: int = 5, max_words: int = 14
                  ) -> list[int]:
    """Indices of ``count`` test sentences of readable length, spread over the test set.

    Falls back to the shortest sentences when too few have ``min_words..max_words`` words.
    """
    fitting = [i for i, s in enumerate(sources) if min_words <= len(s.split()) <= max_words]
    if len(fitting) < count:
        fitting = sorted(range(len(sources)), key=lambda i: len(sources[i].split()))[:count]
        return sorted(fitting)
    return [fitting[int(j)] for j in np.linspace(0, len(fitting) - 1, count)]


def attention_examples(run: TranslationRun, indices: list[int]) -> list[dict]:
    """Greedy translations of some test sentences with their attention weights.

    Loads ``checkpoints/best.keras``. Returns per sentence ``{"index", "source",
    "source_pieces", "output_pieces", "weights" [outputs, sources], "translation"}``; the
    pieces end with ``</s>`` where the model read or wrote end-of-sentence.
    """
    from models.decoding import Translator
    from pipelines.run_dir import RunDir
    from pipelines.translation.inference import load_checkpoint

    source_tok, target_tok = tokenizer_pair((run.root / "tokenizer" / "source.model").read_bytes(),
                                            (run.root / "tokenizer" / "target.model").read_bytes())
    model = load_checkpoint(RunDir(run.root))
    d = run.config.decoding
    translator = Translator(model, 1, 0.0, d.max_length_ratio, d.max_length_offset)
    examples = []
    for index in indices:
        ids = source_tok.encode([run.sources[index]])[0] + [EOS_ID]
        output, weights = translator.greedy_with_attention(np.array([ids], np.int32))
        output = [int(i) for i in np.asarray(output)[0] if i != PAD_ID]
        # Keep the step that wrote EOS: where the model looks when it decides to stop.
        steps = output.index(EOS_ID) + 1 if EOS_ID in output else len(output)
        examples.append({
            "index": index, "source": run.sources[index],
            "source_pieces": source_tok.id_to_piece(ids[:-1]) + ["</s>"],
            "output_pieces": target_tok.id_to_piece(output[:steps]),
            "weights": np.asarray(weights)[0, :steps, :],
            "translation": target_tok.decode([output])[0],
        })
    return examples
