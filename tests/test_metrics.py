import pytest

from pipelines.metrics import bleu_chrf, wer_cer, wer_cer_by_group


def test_wer_takes_hypotheses_first():
    # One inserted word against a two-word reference is 50% WER; the other order would
    # give one deletion in three words.
    assert wer_cer(["a b c"], ["a b"])["wer"] == pytest.approx(0.5)
    scores = wer_cer(["a b", "x"], ["a b", "y"])
    assert scores["utterance_accuracy"] == pytest.approx(0.5)
    assert (scores["word_errors"], scores["reference_words"]) == (1, 3)


def test_bleu_takes_hypotheses_first():
    references = ["a man rides a red bike down the hill ."]
    short = ["a man rides a bike ."]
    assert bleu_chrf(references, references)["bleu"] == pytest.approx(100.0)
    # The brevity penalty hits a short hypothesis, not a short reference.
    assert bleu_chrf(short, references)["bleu"] < bleu_chrf(references, short)["bleu"]
    assert "tok:13a" in bleu_chrf(short, references)["signature"]


def test_wer_by_group():
    groups = wer_cer_by_group(["a", "b", "c"], ["a", "x", "c"], ["s1", "s2", "s1"])
    assert groups["s1"]["wer"] == 0.0 and groups["s1"]["utterances"] == 2
    assert groups["s2"]["wer"] == 1.0
