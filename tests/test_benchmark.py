"""The benchmark harness: the FLOP formula, the textbook greedy loop, an end-to-end run."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from benchmarks import harness, translation_reference, translation_speed
from data_prep.special_ids import EOS_ID
from models.decoding import Translator, max_output_length
from models.seq2seq_translator import Seq2SeqConfig, Seq2SeqTranslator
from tests.helpers import TOY_PAIRS

# Luong's tanh attentional vector and a bridge, as counted by hand below.
TINY = dict(embedding_dim=4, encoder_units=3, decoder_units=5, attention="additive",
            attention_units=2, attentional_dim=5, input_feeding=True, tie_embeddings=False,
            attention_output="tanh", decoder_init="bridge")
ONE = translation_speed.TokenStats(1.0, 1.0, 1.0)


def test_flops_by_hand_for_a_one_layer_gru():
    c = Seq2SeqConfig(source_vocab_size=11, target_vocab_size=13, **TINY)
    flops = translation_speed.flops_per_target_token(c, ONE)
    # E=4, H_e=3 (M=6), H_d=5, A=2, D=5, V=13; a GRU step is 2 * 3 * H * (I + H).
    expected = {
        "encoder": 2 * (2 * 3 * 3 * (4 + 3)),  # two directions
        "bridge": 2 * 6 * 5,
        "decoder_rnn": 2 * 3 * 5 * (4 + 5 + 5),  # embedding + fed attentional vector
        "attention": 2 * 6 * 2 + 2 * 5 * 2 + 2 * 2 + 2 * 6,  # keys, query, energy, context
        "combine": 2 * (6 + 5) * 5,
        "projection": 2 * 5 * 13,
    }
    assert {k: flops[k] for k in expected} == expected
    assert flops["forward"] == sum(expected.values()) == 1032
    assert flops["training"] == 3 * 1032


def _flops_from_weights(model, stats, memory_dim, score_dim):
    """Independent count: 2 FLOPs per kernel weight, per use of the kernel, plus the
    attention score (without an ``energy`` kernel) and context products, which have no
    weights."""
    uses = {"source": 0, "target": 0, "pair": 0, "sentence": 0}
    for v in model.trainable_variables:
        if not v.path.endswith("kernel"):  # kernel and recurrent_kernel; not biases, embeddings
            continue
        size = int(np.prod(v.shape))
        if "/encoder/" in v.path or "key_proj" in v.path:
            uses["source"] += size
        elif "energy" in v.path:
            uses["pair"] += size
        elif "bridge" in v.path:
            uses["sentence"] += size
        else:
            uses["target"] += size
    pair = 2 * uses["pair"] + 2 * memory_dim + (0 if uses["pair"] else 2 * score_dim)
    return (2 * uses["source"] * stats.source_per_target + 2 * uses["target"]
            + pair * stats.attended_per_target + 2 * uses["sentence"] * stats.sentences_per_target)


@pytest.mark.parametrize("overrides", [
    {},
    {"attention": "general", "cell": "lstm", "encoder_layers": 2, "decoder_layers": 2},
    {"attention": "dot", "decoder_units": 6, "input_feeding": False},
    {"attention": "scaled_dot", "attention_output": "residual_norm", "decoder_init": "zeros",
     "input_feeding": False},
    {"attention": "scaled_dot", "attention_output": "tanh", "decoder_init": "bridge", "cell": "lstm"},
])
def test_flops_match_the_models_weights(overrides):
    c = Seq2SeqConfig(source_vocab_size=11, target_vocab_size=13, **{**TINY, **overrides})
    model = Seq2SeqTranslator(**vars(c))
    model.build()
    stats = translation_speed.TokenStats.from_lengths([5, 9, 3], [6, 7, 4])
    score_dim = c.attention_units if c.attention == "scaled_dot" else c.decoder_units
    expected = _flops_from_weights(model, stats, 2 * c.encoder_units, score_dim)
    assert translation_speed.flops_per_target_token(c, stats)["forward"] == pytest.approx(expected, abs=4)


def test_token_stats():
    stats = translation_speed.TokenStats.from_lengths([2, 4], [1, 3])
    assert stats.source_per_target == pytest.approx(6 / 4)
    assert stats.attended_per_target == pytest.approx((2 * 1 + 4 * 3) / 4)
    assert stats.sentences_per_target == pytest.approx(2 / 4)


def test_reference_parameter_count_and_units():
    model = translation_reference.ReferenceTranslator(30, 40, 8, 12)
    model((np.ones((2, 3), "int32"), np.ones((2, 4), "int32")))
    assert model.count_params() == translation_reference.reference_parameters(30, 40, 8, 12)
    target = translation_reference.reference_parameters(30, 40, 8, 12) + 5
    assert translation_reference.reference_units(target, 30, 40, 8) == 12


def test_textbook_greedy_loop_matches_batched_greedy(toy_tokenizer):
    """One sentence at a time, one model call per token, gives our batched greedy tokens."""
    keras.utils.set_random_seed(7)
    v = toy_tokenizer.vocab_size
    model = Seq2SeqTranslator(source_vocab_size=v, target_vocab_size=v, embedding_dim=16,
                              encoder_units=8, decoder_units=16, attention="additive",
                              attention_units=8, attentional_dim=16, dropout=0.0)
    model.build()
    sources = [ids + [EOS_ID] for ids in toy_tokenizer.encode([s for s, _ in TOY_PAIRS])]
    batch = np.zeros((len(sources), max(map(len, sources))), "int32")  # mixed lengths: padding
    for i, s in enumerate(sources):
        batch[i, :len(s)] = s
    ratio, offset = 1.5, 3
    batched = Translator(model, 1, 0.0, ratio, offset)(batch).numpy()
    for i, s in enumerate(sources):
        budget = int(max_output_length(len(s), ratio, offset))
        loop = translation_speed.textbook_greedy(model, s, budget)
        assert loop == translation_speed.until_eos(batched[i], budget), f"sentence {i}"


def test_fixed_length_arrays():
    source, target_in, target_out = translation_reference.fixed_length_arrays([[5, 3], [6, 7, 3]],
                                                                  [[8, 3], [3]])
    assert source.tolist() == [[5, 3, 0], [6, 7, 3]]
    assert target_in.tolist() == [[2, 8], [2, 0]]
    assert target_out.tolist() == [[8, 3], [3, 0]]


def test_table_without_beam_search_or_other_parts():
    decode = {"greedy": {"sentences_per_second": 50.0}, "greedy_speedup": 25.0, "model": "m",
              "textbook_greedy": {"sentences_per_second": 2.0, "sentences": 3,
                                  "mismatches_vs_batched_greedy": 0}}
    lines = harness.table({"decode": decode}).splitlines()
    assert len(lines) == 5 and all(line.startswith("decode") for line in lines)
    assert "0 of 3" in lines[3]


TINY_RUN = [
    "--quick", "--matmul-size", "256", "--matmul-seconds", "0.1", "--warmup-steps", "1",
    "--train-steps", "1", "--limit-train", "150", "--limit-val", "8", "--decode-sentences", "8",
    "--reference-sentences", "3", "--speech-utterances", "16", "--speech-test-utterances", "4",
    "--set", "tokenizer.vocab_size=120", "--set", "model.embedding_dim=8",
    "--set", "model.encoder_units=8", "--set", "model.decoder_units=16",
    "--set", "model.attention_units=8", "--set", "model.attentional_dim=16",
    "--speech-set", "model.rnn_layers=1", "--speech-set", "model.rnn_units=8",
    "--speech-set", "model.conv_channels=8",
]


@pytest.mark.slow
def test_harness_end_to_end(multi30k_dir, tmp_path, capsys):
    from data_prep import fsdd

    if not (multi30k_dir / fsdd.RECORDINGS).is_dir():
        pytest.skip("FSDD not found in the data directory")
    out = tmp_path / "bench.json"
    assert harness.main([*TINY_RUN, "--data-dir", str(multi30k_dir), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert {"machine", "matmul", "model", "train", "decode", "speech"} <= set(results)
    assert set(results["part_seconds"]) == {"matmul", "translation_data", "train", "decode",
                                            "speech"}
    assert results["matmul"]["gflops"] > 0
    assert results["model"]["flops_per_target_token"]["training"] > 0
    for side in ("ours", "reference"):
        assert results["train"][side]["target_tokens_per_second"] > 0
        assert results["train"][side]["parameters"] > 0
    assert results["train"]["speedup"] > 0
    assert 0 < results["train"]["ours"]["fraction_of_peak"]
    decode = results["decode"]
    assert decode["model"] == "freshly built (untrained)"
    assert {"greedy", "beam5", "textbook_greedy", "greedy_speedup", "beam_speedup"} <= set(decode)
    assert decode["textbook_greedy"]["mismatches_vs_batched_greedy"] == 0
    speech = results["speech"]
    assert speech["features"]["audio_seconds_per_second"] > 0
    assert speech["train"]["frames_per_second"] > 0
    assert speech["inference"]["rtf"] > 0
    assert "textbook greedy loop" in capsys.readouterr().out


@pytest.mark.slow
def test_harness_train_epoch_part(multi30k_dir, tmp_path):
    out = tmp_path / "bench.json"
    code = harness.main([*TINY_RUN, "--parts", "train_epoch", "--data-dir", str(multi30k_dir),
                           "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert "train" not in results and "matmul" not in results
    for side in ("ours", "reference"):
        assert results["train_epoch"][side]["seconds"] > 0
        assert results["train_epoch"][side]["val_bleu"] >= 0
    assert results["train_epoch"]["val_sentences"] == 8


@pytest.mark.slow
def test_harness_decodes_a_trained_run(translation_smoke_run, multi30k_dir, tmp_path):
    out = tmp_path / "bench.json"
    code = harness.main(["--parts", "decode", "--run-dir", str(translation_smoke_run),
                           "--data-dir", str(multi30k_dir), "--decode-sentences", "20",
                           "--reference-sentences", "4", "--out", str(out)])
    assert code == 0
    results = json.loads(out.read_text())
    assert results["translation"]["config"] == str(translation_smoke_run / "config.yaml")
    assert results["translation"]["tokenizer"] == str(translation_smoke_run / "tokenizer")
    decode = results["decode"]
    assert decode["model"].startswith("trained checkpoint")
    assert decode["sentences"] == 20
    assert {"greedy", "beam3", "textbook_greedy"} <= set(decode)  # the smoke config's beam
    assert decode["textbook_greedy"]["mismatches_vs_batched_greedy"] == 0
