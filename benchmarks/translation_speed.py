"""Our translator's side of ``benchmarks.harness``: the data, model FLOPs, steady-state
training on the pipeline's bucketed shards, and batched decoding against the textbook
per-sentence loop."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from benchmarks.timing import batch_tokens, throughput, timed_loop
from data_prep.pair_shards import verified_shards, write_pair_shards
from data_prep.parallel_corpus import ParallelCorpus, drop_empty
from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID
from data_prep.text_dataset import make_source_batches
from models.decoding import Translator, max_output_length
from models.seq2seq_translator import Seq2SeqConfig
from pipelines.run_dir import RunDir
from pipelines.translation.config import SPLITS, TranslationConfig
from pipelines.translation.data import (
    drop_long,
    load_split,
    load_tokenizers,
    tokenized_pairs,
    tokenizer_pair,
    train_tokenizers,
    training_batches,
)
from pipelines.translation.inference import greedy, make_translator, translate_texts
from pipelines.translation.stages import build_model

GATES = {"gru": 3, "lstm": 4, "rnn": 1}  # weight blocks per recurrent cell


# -- model FLOPs ---------------------------------------------------------------------------


@dataclass
class TokenStats:
    """Length statistics of a corpus that turn per-sentence costs into per-target-token ones.

    With S_i source tokens (EOS included) and T_i target tokens (the labels: target + EOS)
    in sentence i, sums over the corpus:
    """

    source_per_target: float  # sum S_i / sum T_i
    attended_per_target: float  # sum S_i T_i / sum T_i: source positions per target token
    sentences_per_target: float  # N / sum T_i

    @classmethod
    def from_lengths(cls, source_lengths, target_lengths) -> TokenStats:
        s, t = np.asarray(source_lengths, float), np.asarray(target_lengths, float)
        return cls(float(s.sum() / t.sum()), float((s * t).sum() / t.sum()), float(len(t) / t.sum()))


def rnn_flops(cell: str, inputs: int, units: int) -> int:
    """Multiply-add FLOPs of one recurrent step: 2 * gates * units * (inputs + units)."""
    return 2 * GATES[cell] * units * (inputs + units)


def flops_per_target_token(c: Seq2SeqConfig, stats: TokenStats) -> dict:
    """Analytic FLOPs of ``Seq2SeqTranslator`` per real target token.

    Counts the multiply-adds (2 FLOPs each) of the matrix products only; embedding
    lookups, biases, activations, layer normalization, softmax, the loss and the optimizer
    update are left out (they are O(units) per token against O(units^2) for the
    products). With E = embedding_dim, H_e = encoder_units, H_d = decoder_units, M = 2 H_e
    (encoder output size), A = attention_units, D = attentional_dim, V = target vocabulary,
    g = 3 (GRU), 4 (LSTM), 1 (RNN), and rnn(I, H) = 2 g H (I + H), the forward pass costs

    - encoder, per source token: sum over layers of 2 directions x rnn(I_l, H_e) with
      I_0 = E, I_l = M;
    - bridge (``decoder_init: bridge``), per sentence: 2 M (H_d L_d s), s = 1 (2 for LSTM);
    - decoder RNN, per target token: rnn(E + D if input_feeding else E, H_d) for the first
      layer, rnn(H_d, H_d) for the others;
    - attention keys, per source token: 2 M A (additive, scaled_dot), 2 M H_d (general),
      0 (dot); query 2 H_d A per target token (additive, scaled_dot); per (target, source)
      pair the score (2 A additive and scaled_dot, 2 H_d dot and general) and the
      context 2 M;
    - combine, per target token: 2 (M + H_d) D (``attention_output: tanh``, Luong's
      W_c [context; h]) or 2 M D (``residual_norm``: h + W_c context);
    - output projection 2 D V per target token.

    Per-source-token and per-sentence terms are divided over target tokens with
    ``stats``. Training costs ``3 x`` forward (the backward pass is about twice the
    forward: gradients for both the inputs and the weights of every product).
    """
    M = 2 * c.encoder_units
    encoder = 0
    inputs = c.embedding_dim
    for _ in range(c.encoder_layers):
        encoder += 2 * rnn_flops(c.cell, inputs, c.encoder_units)
        inputs = M
    states = 2 if c.cell == "lstm" else 1
    bridge = 2 * M * c.decoder_units * c.decoder_layers * states if c.decoder_init == "bridge" else 0
    decoder_rnn = 0
    inputs = c.embedding_dim + (c.attentional_dim if c.input_feeding else 0)
    for _ in range(c.decoder_layers):
        decoder_rnn += rnn_flops(c.cell, inputs, c.decoder_units)
        inputs = c.decoder_units
    if c.attention in ("additive", "scaled_dot"):
        keys, query = 2 * M * c.attention_units, 2 * c.decoder_units * c.attention_units
        score = 2 * c.attention_units
    else:
        keys = 2 * M * c.decoder_units if c.attention == "general" else 0
        query, score = 0, 2 * c.decoder_units
    combine_inputs = M + c.decoder_units
    if c.attention_output == "residual_norm":
        combine_inputs = M
    parts = {
        "encoder": encoder * stats.source_per_target,
        "bridge": bridge * stats.sentences_per_target,
        "decoder_rnn": decoder_rnn,
        "attention": keys * stats.source_per_target + query
                     + (score + 2 * M) * stats.attended_per_target,
        "combine": 2 * combine_inputs * c.attentional_dim,
        "projection": 2 * c.attentional_dim * c.target_vocab_size,
    }
    forward = sum(parts.values())
    return {**{k: round(v) for k, v in parts.items()}, "forward": round(forward),
            "training": round(3 * forward)}


# -- translation data ----------------------------------------------------------------------


@dataclass
class TranslationData:
    cfg: TranslationConfig
    source_tok: object
    target_tok: object
    tokenizer_from: str
    train: ParallelCorpus
    val: ParallelCorpus
    test: ParallelCorpus


def load_translation_data(cfg, run_dir, data_dir) -> TranslationData:
    """The config's corpus, and the tokenizers of ``run_dir`` or ones trained here as the
    pipeline's prepare stage does (training pairs too long for ``data.max_length`` dropped)."""
    corpora = {split: load_split(cfg.data, split, data_dir)[0]
               for split in SPLITS}
    train = drop_empty(corpora["train"])
    run = RunDir(run_dir) if run_dir else None
    if run and run.path("tokenizer", "source.model").is_file():
        source_tok, target_tok = load_tokenizers(run)
        origin = str(run.path("tokenizer"))
    else:
        protos = train_tokenizers(cfg.tokenizer, train.source, train.target)
        source_tok, target_tok = tokenizer_pair(protos["source"], protos["target"])
        origin = "trained here on the training split"
    train = drop_long(train, source_tok, target_tok, cfg.data.max_length)
    return TranslationData(cfg, source_tok, target_tok, origin, train, corpora["val"],
                           corpora["test"])


def encode_pairs(data: TranslationData, corpus: ParallelCorpus):
    """Source ids + EOS and target label ids (target + EOS) of every pair, as lists."""
    src = [ids + [EOS_ID] for ids in data.source_tok.encode(corpus.source)]
    tgt = [ids + [EOS_ID] for ids in data.target_tok.encode(corpus.target)]
    return src, tgt


# -- steady-state training throughput -----------------------------------------------------


def training_shards(data: TranslationData, directory) -> list[Path]:
    """The training pairs in TFRecord shards under ``directory``, as ``prepare`` writes
    them for ``train``."""
    pairs = tokenized_pairs(zip(data.train.source, data.train.target), data.source_tok,
                            data.target_tok, data.cfg.data.max_length, {"count": 0})
    write_pair_shards(pairs, directory, "train", data.cfg.data.shard_pairs)
    return verified_shards(directory, "train")


def train_ours(data: TranslationData, warmup: int, steps: int, workdir
               ) -> tuple[dict, keras.Model]:
    """Steady-state training throughput of the config's model on our bucketed batches."""
    cfg, t = data.cfg, data.cfg.training
    keras.utils.set_random_seed(t.seed)
    model = build_model(cfg, data.source_tok, data.target_tok)
    shards = training_shards(data, workdir)

    def dataset():
        return training_batches(cfg, shards, t.seed).repeat()

    # The same seed gives the same batches: count the tokens of the timed ones.
    counts = [batch_tokens(y) for _, y in dataset().take(warmup + steps)][warmup:]
    seconds = timed_loop(model, dataset, warmup, steps)
    tokens, padded, sentences = (sum(c[i] for c in counts) for i in range(3))
    result = {**throughput(tokens, padded, sentences, seconds, steps),
              "parameters": model.count_params(), "batch_tokens": t.batch_tokens}
    return result, model


# -- decoding ------------------------------------------------------------------------------


def textbook_greedy(model, source_ids: list[int], max_length: int) -> list[int]:
    """Greedy decoding the textbook way: one sentence, one eager model call per token.

    Returns the output ids up to and including EOS (at most ``max_length``). PAD and BOS
    are never chosen, the rule of the batched decoder.
    """
    memory, keys, mask, states, attentional = model.encode(tf.constant([source_ids], tf.int32))
    token, output = BOS_ID, []
    for _ in range(max_length):
        logits, states, attentional, _ = model.decoder.step(
            tf.constant([token], tf.int32), states, attentional, memory, keys, mask)
        logits = logits[0].numpy()
        logits[[PAD_ID, BOS_ID]] = -np.inf
        token = int(np.argmax(logits))
        output.append(token)
        if token == EOS_ID:
            break
    return output


def until_eos(ids, max_length: int | None = None) -> list[int]:
    """Ids up to and including the first EOS, cut at ``max_length``."""
    ids = [int(i) for i in ids]
    if EOS_ID in ids:
        ids = ids[:ids.index(EOS_ID) + 1]
    return ids[:max_length]


def batched_decode(translator: Translator, texts: list[str], source_tok, batch_tokens: int):
    """Output ids in input order and the seconds taken, with an already traced translator."""
    dataset, order = make_source_batches(texts, source_tok, batch_tokens)
    batches = list(dataset)  # tokenize outside the timed loop
    start = time.perf_counter()
    outputs = [row for batch in batches for row in translator(batch).numpy()]
    seconds = time.perf_counter() - start
    result = [None] * len(texts)
    for position, ids in zip(order, outputs):
        result[position] = ids
    return result, seconds


def decode(data: TranslationData, model, model_from: str, sentences: int | None,
           reference_sentences: int) -> dict:
    """Batched greedy and beam search against the textbook per-sentence greedy loop."""
    d = data.cfg.decoding
    texts = data.test.source[:sentences] if sentences else data.test.source
    result = {"model": model_from, "sentences": len(texts), "batch_tokens": d.batch_tokens}
    greedy_ids = None
    for beam, decoding in {1: greedy(d), d.beam_size: d}.items():
        name = "greedy" if beam == 1 else f"beam{beam}"
        # As the pipeline does it (evaluate): translate_texts, one graph traced per call.
        start = time.perf_counter()
        hyps = translate_texts(model, data.source_tok, data.target_tok, texts, decoding,
                               progress=False)
        cold = time.perf_counter() - start
        # Steady state: the same batches through an already traced Translator.
        translator = make_translator(model, decoding)
        warm_batch, _ = make_source_batches(texts[:1], data.source_tok, d.batch_tokens)
        translator(next(iter(warm_batch)))
        ids, seconds = batched_decode(translator, texts, data.source_tok, d.batch_tokens)
        # Expected 0: the same model and batches as translate_texts.
        differ = sum(a != b for a, b in zip(data.target_tok.decode(ids), hyps))
        tokens = sum(len(until_eos(x)) for x in ids)
        result[name] = {"beam_size": beam, "seconds": round(seconds, 3),
                        "sentences_per_second": round(len(texts) / seconds, 2),
                        "seconds_with_tracing": round(cold, 3), "output_tokens": tokens,
                        "output_tokens_per_second": round(tokens / seconds, 1),
                        "differences_from_translate_texts": differ}
        if beam == 1:
            greedy_ids = ids
    subset = texts[:reference_sentences]
    source_ids = [ids + [EOS_ID] for ids in data.source_tok.encode(subset)]
    textbook_greedy(model, source_ids[0], 2)  # first eager calls build their kernels
    start = time.perf_counter()
    budgets = [int(max_output_length(len(s), d.max_length_ratio, d.max_length_offset))
               for s in source_ids]
    loop_ids = [textbook_greedy(model, s, budget) for s, budget in zip(source_ids, budgets)]
    seconds = time.perf_counter() - start
    # A batch's budget follows its longest source; greedy is causal, so cutting our output
    # at the sentence's own budget gives what it would have produced alone.
    ours = [until_eos(greedy_ids[i], budget) for i, budget in enumerate(budgets)]
    mismatches = sum(a != b for a, b in zip(ours, loop_ids))
    result["textbook_greedy"] = {
        "sentences": len(subset), "seconds": round(seconds, 3),
        "sentences_per_second": round(len(subset) / seconds, 3),
        "output_tokens": sum(map(len, loop_ids)),
        "output_tokens_per_second": round(sum(map(len, loop_ids)) / seconds, 1),
        "mismatches_vs_batched_greedy": mismatches}
    ref_rate = result["textbook_greedy"]["sentences_per_second"]
    result["greedy_speedup"] = round(result["greedy"]["sentences_per_second"] / ref_rate, 2)
    if d.beam_size > 1:
        beam_name = f"beam{d.beam_size}"
        result["beam_speedup"] = round(result[beam_name]["sentences_per_second"] / ref_rate, 2)
    return result


def load_decode_model(data: TranslationData, run_dir):
    path = Path(run_dir) / "checkpoints" / "best.keras" if run_dir else None
    if path and path.is_file():
        return keras.saving.load_model(path), f"trained checkpoint {path}"
    keras.utils.set_random_seed(data.cfg.training.seed)
    return (build_model(data.cfg, data.source_tok, data.target_tok),
            "freshly built (untrained)")
