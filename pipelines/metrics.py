"""Task metrics, all called as ``metric(hypotheses, references)`` (sacreBLEU's order).

Translation: corpus BLEU and chrF with sacreBLEU's defaults (cased, detokenized, 13a)
and their signatures. Speech: WER and CER with jiwer, plus the share of exactly right
utterances, overall or per group.
"""

from __future__ import annotations

from collections import defaultdict

import jiwer
import numpy as np
from sacrebleu.metrics import BLEU, CHRF


def bleu_chrf(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus BLEU and chrF (sacreBLEU defaults) with signatures."""
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
        "chrf": round(chrf.corpus_score(hypotheses, [references]).score, 2),
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def wer_cer(hypotheses: list[str], references: list[str]) -> dict:
    """WER, CER and the fraction of exactly right utterances."""
    words = jiwer.process_words(references, hypotheses)
    return {
        "wer": round(words.wer, 5),
        "cer": round(jiwer.cer(references, hypotheses), 5),
        "utterance_accuracy": round(
            float(np.mean([r == h for r, h in zip(references, hypotheses, strict=True)])), 5),
        "word_errors": words.substitutions + words.deletions + words.insertions,
        "reference_words": words.hits + words.substitutions + words.deletions,
    }


def wer_cer_by_group(hypotheses: list[str], references: list[str], keys) -> dict:
    """``wer_cer`` per group (speaker, number of words), keyed by the group's name."""
    groups = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return {str(key): {**wer_cer([hypotheses[i] for i in items], [references[i] for i in items]),
                       "utterances": len(items)}
            for key, items in sorted(groups.items())}
