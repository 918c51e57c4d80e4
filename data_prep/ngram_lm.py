"""Word n-gram language models in ARPA format: interpolated modified Kneser-Ney.

The estimate is the one KenLM's ``lmplz`` makes (Chen & Goodman, 1998; Heafield et al.,
2013): continuation counts below the highest order, three discounts per order from the
counts of counts, and interpolation with the lower order down to a uniform distribution
over the vocabulary, written as an ARPA backoff model that KenLM (and so pyctcdecode)
reads. Written here because pip offers no estimator of it: ``lmplz`` is a separate C++
build that needs Boost, and the pure-Python ARPA writers on PyPI discount without
continuation counts and write files KenLM refuses (a preamble, spaces for tabs).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from data_prep.file_io import write_lines

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
# KenLM's --discount_fallback, for orders whose counts of counts cannot give discounts
# (a small corpus without n-grams seen exactly 1, 2, 3 and 4 times).
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


class LanguageModelError(ValueError):
    """A corpus that cannot give a language model (no words)."""


def kneser_ney_counts(sentences: list[list[str]], order: int) -> list[Counter]:
    """Adjusted counts of every order (index 0: unigrams): raw counts at the highest
    order and of n-grams that start with ``<s>`` (nothing can precede them), elsewhere
    the number of distinct words seen before the n-gram."""
    raw = [Counter() for _ in range(order)]
    for words in sentences:
        padded = [BOS, *words, EOS]
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                raw[n - 1][tuple(padded[i:i + n])] += 1
    adjusted = [Counter() for _ in range(order)]
    adjusted[order - 1] = raw[order - 1]
    for n in range(1, order):
        for gram, count in raw[n - 1].items():
            if gram[0] == BOS:
                adjusted[n - 1][gram] = count
        for longer in raw[n]:  # each distinct (v, gram) adds one left context to gram
            adjusted[n - 1][longer[1:]] += 1
    adjusted[0].pop((BOS,), None)  # <s> is a context, never predicted
    return adjusted


def discounts(counts: Counter) -> tuple[float, float, float]:
    """D1, D2, D3+ of one order from its counts of counts (Chen & Goodman's estimate)."""
    n = Counter(min(c, 5) for c in counts.values())
    try:
        y = n[1] / (n[1] + 2 * n[2])
        result = tuple(k - (k + 1) * y * n[k + 1] / n[k] for k in (1, 2, 3))
    except ZeroDivisionError:
        return FALLBACK_DISCOUNTS
    return result if all(0 < d < k + 1 for k, d in enumerate(result)) else FALLBACK_DISCOUNTS


def arpa_lines(sentences: list[str], order: int = 3) -> list[str]:
    """The ARPA file of an interpolated modified Kneser-Ney model of ``sentences``
    (whitespace-separated words)."""
    if order < 1:
        raise LanguageModelError(f"order must be at least 1, got {order}")
    tokenized = [s.split() for s in sentences if s.split()]
    if not tokenized:
        raise LanguageModelError("no words to train a language model on")
    counts = kneser_ney_counts(tokenized, order)
    vocab = sorted({g[0] for g in counts[0]} | {UNK})
    prob: list[dict] = [{} for _ in range(order)]
    backoff: list[dict] = [{} for _ in range(order)]
    for n in range(order):
        d = discounts(counts[n])
        totals, kinds = Counter(), defaultdict(lambda: [0, 0, 0])
        for gram, c in counts[n].items():
            totals[gram[:-1]] += c
            kinds[gram[:-1]][min(c, 3) - 1] += 1
        # gamma(h): the mass the discounts took from context h, given to the lower order.
        gamma = {h: sum(dk * nk for dk, nk in zip(d, kinds[h], strict=True)) / totals[h]
                 for h in totals}
        for gram, c in counts[n].items():
            h = gram[:-1]
            lower = prob[n - 1][gram[1:]] if n else 1.0 / len(vocab)
            prob[n][gram] = (c - d[min(c, 3) - 1]) / totals[h] + gamma[h] * lower
        if n == 0:
            prob[0][(UNK,)] = gamma[()] / len(vocab)
        else:
            backoff[n - 1] = gamma
    lines = ["\\data\\"] + [f"ngram {n + 1}={len(prob[n]) + (n == 0)}" for n in range(order)]
    for n in range(order):
        lines += ["", f"\\{n + 1}-grams:"]
        grams = sorted(prob[n]) + ([(BOS,)] if n == 0 else [])
        for gram in grams:
            p = -99.0 if gram == (BOS,) else math.log10(prob[n][gram])
            fields = [f"{p:.6f}", " ".join(gram)]
            if n < order - 1:
                fields.append(f"{math.log10(backoff[n].get(gram, 1.0)):.6f}")
            lines.append("\t".join(fields))
    return lines + ["", "\\end\\"]


def write_arpa(path, sentences: list[str], order: int = 3):
    """Write the ARPA model of ``sentences`` to ``path`` (atomically)."""
    return write_lines(path, arpa_lines(sentences, order))
