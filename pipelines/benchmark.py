"""Speed benchmark harness: machine peak, translation training and decoding, speech.

    PIPELINES_DATA_DIR=../shared/data python -m pipelines.benchmark   # -> runs/benchmark.json
    python -m pipelines.benchmark --parts matmul,train --train-steps 50     # a subset
    python -m pipelines.benchmark --quick --out /tmp/bench.json            # minutes, tiny

Everything runs in this one process on the real data of the data directory, and the
results are printed as a table and written as JSON (``--out``). The parts
(``--parts``, comma-separated; default ``matmul,train,decode,speech``):

``matmul``
    The machine's limit: float32 GFLOP/s of a large ``tf.linalg.matmul`` (all threads,
    timed after warm-up).
``train``
    Translation training throughput in steady state: real (non-padding) target tokens
    per second over ``--train-steps`` steps after ``--warmup-steps`` warm-up steps
    (tracing excluded, no validation). "ours": the config's model from
    ``pipelines.translation.stages.build_model`` on the token-bucketed batches of
    ``batch_by_tokens`` from TFRecord shards, trained with the trainer's own compiled
    loop (``pipelines.train_steps``): the input pipeline and loop of ``train``.
    "reference": the textbook Keras recipe (the TensorFlow "NMT with attention"
    tutorial: embeddings, bidirectional GRU encoder, GRU decoder, one-head
    ``MultiHeadAttention`` over the decoder outputs, ``Dense`` to the vocabulary) with
    as many parameters as ours, on the same subword data, every sentence padded to one
    fixed length, batches of 64 sentences, ``model.fit`` on NumPy arrays with a masked
    sparse cross-entropy. Our throughput is also given in model FLOP/s
    (``flops_per_target_token``) as a fraction of the matmul peak.
``train_epoch`` (optional, long)
    One full training epoch of each model from scratch, then validation BLEU (greedy;
    ours through ``translate_texts``, the reference through its own batched greedy loop).
``decode``
    Sentences per second on test2016 for our compiled batched greedy and beam search
    (``models.decoding.Translator``), against the textbook loop: one sentence at a time,
    an eager Python loop calling ``model.encode`` once and ``model.decoder.step`` once per
    output token, argmax until EOS or the length budget. The loop uses the same model
    (``--run-dir``'s ``checkpoints/best.keras`` if there is one, else a freshly built one)
    and runs on the first ``--reference-sentences`` sentences; its outputs are compared
    token by token with our batched greedy outputs for the same sentences.
``speech``
    Feature extraction speed (seconds of audio per second, ``extract_features``),
    training throughput of the speech config's model (input feature frames per second,
    steady state as above) and the inference real-time factor (reading audio, features
    and greedy CTC decoding, batched, per second of audio).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from pipelines.cli import quiet_tensorflow

quiet_tensorflow()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from data_prep.pair_shards import verified_shards, write_pair_shards  # noqa: E402
from data_prep.parallel_corpus import ParallelCorpus, drop_empty  # noqa: E402
from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID  # noqa: E402
from data_prep.text_dataset import make_source_batches  # noqa: E402
from models.decoding import Translator, max_output_length  # noqa: E402
from models.seq2seq_translator import Seq2SeqConfig  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.metrics import bleu_chrf  # noqa: E402
from pipelines.run_dir import RunDir  # noqa: E402
from pipelines.train_steps import Steps, run_epoch  # noqa: E402
from pipelines.translation.config import SPLITS, TranslationConfig  # noqa: E402
from pipelines.translation.data import (  # noqa: E402
    drop_long,
    load_split,
    load_tokenizers,
    tokenized_pairs,
    tokenizer_pair,
    train_tokenizers,
    training_batches,
)
from pipelines.translation.inference import translate_texts  # noqa: E402
from pipelines.translation.stages import build_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "pipelines" / "configs"
DEFAULT_CONFIG = CONFIGS / "translation_demo.yaml"
DEFAULT_SPEECH_CONFIG = CONFIGS / "fsdd_digits.yaml"
PARTS = ("matmul", "train", "train_epoch", "decode", "speech")
DEFAULT_PARTS = "matmul,train,decode,speech"
REFERENCE_BATCH = 64  # sentences per batch of the textbook recipe
GATES = {"gru": 3, "lstm": 4, "rnn": 1}  # weight blocks per recurrent cell


# -- the machine ---------------------------------------------------------------------------


def matmul_peak(n: int = 4096, seconds: float = 3.0, min_repeats: int = 3) -> dict:
    """Float32 GFLOP/s of an [n, n] x [n, n] ``tf.linalg.matmul`` (2 n^3 FLOPs each).

    Two warm-up products, then products until ``seconds`` have passed (at least
    ``min_repeats``); ``gflops`` is the best product, ``gflops_median`` the median.
    """
    a = tf.random.normal((n, n), dtype=tf.float32, seed=1)
    b = tf.random.normal((n, n), dtype=tf.float32, seed=2)
    for _ in range(2):
        tf.linalg.matmul(a, b)[0, 0].numpy()
    rates, start = [], time.perf_counter()
    while len(rates) < min_repeats or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        tf.linalg.matmul(a, b)[0, 0].numpy()  # .numpy() waits for the result
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {"n": n, "repeats": len(rates), "gflops": round(max(rates), 1),
            "gflops_median": round(statistics.median(rates), 1),
            "threads": {"inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
                        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                        "cpu_count": os.cpu_count()}}


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


class StepTimer(keras.callbacks.Callback):
    """Records the wall-clock time at the end of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def trainer_pass(model, make_dataset, limit: int | None = None) -> list[float]:
    """Train ``model`` with the trainer's own compiled loop (``pipelines.train_steps``, as
    ``train`` runs it on one device) over ``make_dataset()``, or its first ``limit``
    steps; the wall-clock time at the end of every step."""
    strategy = tf.distribute.get_strategy()
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    timer = StepTimer()
    run_epoch(Steps(model, strategy), make_dataset,
              keras.callbacks.CallbackList([timer], model=model), training=True,
              stop=lambda: limit is not None and len(timer.times) >= limit)
    return timer.times


def timed_loop(model, make_dataset, warmup: int, steps: int) -> float:
    """Train ``warmup + steps`` steps with the trainer's loop; seconds taken by the last
    ``steps``."""
    times = trainer_pass(model, make_dataset, warmup + steps)
    if len(times) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} training steps, got {len(times)}")
    return times[-1] - times[warmup - 1]


def timed_fit(model, x, warmup: int, steps: int, y=None, **fit_kwargs) -> float:
    """Train ``warmup + steps`` steps with ``model.fit``; seconds taken by the last ``steps``."""
    timer = StepTimer()
    model.fit(x, y, epochs=1, steps_per_epoch=warmup + steps if y is None else None,
              callbacks=[timer], verbose=0, **fit_kwargs)
    if len(timer.times) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} training steps, got {len(timer.times)}")
    return timer.times[-1] - timer.times[warmup - 1]


def throughput(tokens: int, padded: int, sentences: int, seconds: float, steps: int) -> dict:
    return {"steps": steps, "seconds": round(seconds, 3), "target_tokens": int(tokens),
            "padded_target_tokens": int(padded), "sentences": int(sentences),
            "target_tokens_per_second": round(tokens / seconds, 1),
            "padded_target_tokens_per_second": round(padded / seconds, 1),
            "sentences_per_second": round(sentences / seconds, 2),
            "padding_fraction": round(1 - tokens / max(padded, 1), 4)}


def _batch_tokens(labels) -> tuple[int, int, int]:
    labels = np.asarray(labels)
    return int((labels != PAD_ID).sum()), labels.size, labels.shape[0]


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
    counts = [_batch_tokens(y) for _, y in dataset().take(warmup + steps)][warmup:]
    seconds = timed_loop(model, dataset, warmup, steps)
    tokens, padded, sentences = (sum(c[i] for c in counts) for i in range(3))
    result = {**throughput(tokens, padded, sentences, seconds, steps),
              "parameters": model.count_params(), "batch_tokens": t.batch_tokens}
    return result, model


# -- the textbook reference model ----------------------------------------------------------


@keras.saving.register_keras_serializable(package="rnn_toolkit_benchmark")
class ReferenceTranslator(keras.Model):
    """The TensorFlow "Neural machine translation with attention" tutorial's model.

    Embeddings (``mask_zero``), a bidirectional GRU encoder (directions summed), a GRU
    decoder, one-head ``MultiHeadAttention`` from the decoder outputs to the encoder
    outputs followed by a residual ``Add`` and ``LayerNormalization``, and a ``Dense``
    layer to the vocabulary. Teacher forcing: ``call((source, target_in))`` -> logits.
    """

    def __init__(self, source_vocab_size, target_vocab_size, embedding_dim, units, **kwargs):
        super().__init__(**kwargs)
        self.sizes = dict(source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size,
                          embedding_dim=embedding_dim, units=units)
        L = keras.layers
        self.source_embedding = L.Embedding(source_vocab_size, embedding_dim, mask_zero=True)
        self.encoder_rnn = L.Bidirectional(L.GRU(units, return_sequences=True), merge_mode="sum")
        self.target_embedding = L.Embedding(target_vocab_size, embedding_dim, mask_zero=True)
        self.decoder_rnn = L.GRU(units, return_sequences=True, return_state=True)
        self.attention = L.MultiHeadAttention(num_heads=1, key_dim=units)
        self.add = L.Add()
        self.norm = L.LayerNormalization()
        self.output_layer = L.Dense(target_vocab_size)

    def encode(self, source):
        return self.encoder_rnn(self.source_embedding(source))

    def decode(self, target_in, memory, source, state=None):
        """Logits [B, T, V] and the decoder state, for decoder inputs [B, T]."""
        x, state = self.decoder_rnn(self.target_embedding(target_in), initial_state=state)
        mask = ops.repeat(ops.expand_dims(ops.not_equal(source, PAD_ID), 1),
                          ops.shape(target_in)[1], axis=1)
        context = self.attention(query=x, value=memory, attention_mask=mask)
        return self.output_layer(self.norm(self.add([x, context]))), state

    def call(self, inputs, training=False):
        source, target_in = inputs
        return self.decode(target_in, self.encode(source), source)[0]

    def get_config(self):
        return {**super().get_config(), **self.sizes}


def reference_parameters(source_vocab: int, target_vocab: int, embedding_dim: int, units: int) -> int:
    """Parameter count of ``ReferenceTranslator`` (Keras GRUs have two bias vectors)."""
    gru = 3 * units * (embedding_dim + units) + 6 * units
    return ((source_vocab + target_vocab) * embedding_dim + 3 * gru
            + 4 * units * units + 4 * units  # attention: query, key, value, output
            + 2 * units + units * target_vocab + target_vocab)


def reference_units(target_params: int, source_vocab: int, target_vocab: int,
                    embedding_dim: int) -> int:
    """The ``units`` that brings ``ReferenceTranslator`` closest to ``target_params``."""
    return min(range(1, 4097), key=lambda u: abs(
        reference_parameters(source_vocab, target_vocab, embedding_dim, u) - target_params))


def masked_loss(y_true, y_pred):
    """The tutorial's loss: sparse cross-entropy averaged over non-padding tokens."""
    loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
    mask = ops.cast(ops.not_equal(y_true, PAD_ID), loss.dtype)
    return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)


def build_reference(data: TranslationData, params: int) -> ReferenceTranslator:
    e = data.cfg.model.embedding_dim
    sv, tv = data.source_tok.vocab_size, data.target_tok.vocab_size
    model = ReferenceTranslator(sv, tv, e, reference_units(params, sv, tv, e))
    model((np.ones((1, 2), "int32"), np.ones((1, 2), "int32")))
    # The textbook defaults: Adam, compile's jit_compile="auto".
    model.compile(optimizer="adam", loss=masked_loss)
    return model


def fixed_length_arrays(src, tgt):
    """NumPy arrays, every row padded to the corpus' longest source / target."""
    ls, lt = max(map(len, src)), max(map(len, tgt))
    source = np.zeros((len(src), ls), "int32")
    target_in = np.zeros((len(src), lt), "int32")
    target_out = np.zeros((len(src), lt), "int32")
    for i, (s, t) in enumerate(zip(src, tgt)):
        source[i, :len(s)] = s
        target_in[i, :len(t)] = [BOS_ID] + t[:-1]
        target_out[i, :len(t)] = t
    return source, target_in, target_out


def train_reference(data: TranslationData, params: int, warmup: int, steps: int) -> dict:
    """Steady-state throughput of the textbook recipe at our model's parameter count."""
    keras.utils.set_random_seed(data.cfg.training.seed)
    model = build_reference(data, params)
    source, target_in, target_out = fixed_length_arrays(*encode_pairs(data, data.train))
    # Shuffle once here and not in fit, so the timed batches (and their tokens) are known.
    n = (warmup + steps) * REFERENCE_BATCH
    rows = np.random.default_rng(data.cfg.training.seed).permutation(len(source))
    rows = np.resize(rows, n)  # repeats the corpus if it is smaller than the steps
    x, y = (source[rows], target_in[rows]), target_out[rows]
    seconds = timed_fit(model, x, warmup, steps, y=y, batch_size=REFERENCE_BATCH, shuffle=False)
    tokens, padded, sentences = _batch_tokens(y[warmup * REFERENCE_BATCH:])
    return {**throughput(tokens, padded, sentences, seconds, steps),
            "parameters": model.count_params(), "units": model.sizes["units"],
            "embedding_dim": model.sizes["embedding_dim"], "batch_size": REFERENCE_BATCH,
            "fixed_length": {"source": source.shape[1], "target": target_out.shape[1]},
            "jit_compile": bool(model.jit_compile)}


def reference_greedy(model: ReferenceTranslator, source_ids: list[list[int]], max_length_ratio,
                     max_length_offset, batch_size: int = 128) -> list[list[int]]:
    """Batched greedy decoding for ``ReferenceTranslator`` (compiled step, Python loop)."""

    @tf.function(reduce_retracing=True)
    def step(tokens, state, memory, source):
        logits, state = model.decode(tokens[:, None], memory, source, state)
        log_probs = logits[:, 0]
        banned = (tf.range(tf.shape(log_probs)[-1]) == PAD_ID) | (tf.range(tf.shape(log_probs)[-1])
                                                                   == BOS_ID)
        return tf.argmax(tf.where(banned[None], -1e9, log_probs), -1, output_type=tf.int32), state

    order = np.argsort([-len(s) for s in source_ids], kind="stable")
    outputs = [None] * len(source_ids)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        longest = max(len(source_ids[i]) for i in rows)
        source = np.zeros((len(rows), longest), "int32")
        for j, i in enumerate(rows):
            source[j, :len(source_ids[i])] = source_ids[i]
        source = tf.constant(source)
        memory = model.encode(source)
        state = tf.zeros((len(rows), model.sizes["units"]))
        tokens = tf.fill([len(rows)], BOS_ID)
        steps, done = [], np.zeros(len(rows), bool)
        for _ in range(int(longest * max_length_ratio) + max_length_offset):
            tokens, state = step(tokens, state, memory, source)
            steps.append(tokens.numpy())
            done |= steps[-1] == EOS_ID
            if done.all():
                break
        for j, i in enumerate(rows):
            outputs[i] = [int(s[j]) for s in steps]
    return outputs


def train_epoch(data: TranslationData, params: int, workdir) -> dict:
    """One epoch from scratch for both models, then greedy validation BLEU."""
    cfg, t = data.cfg, data.cfg.training
    val_src, _ = encode_pairs(data, data.val)
    results = {}
    keras.utils.set_random_seed(t.seed)
    model = build_model(cfg, data.source_tok, data.target_tok)
    start = time.perf_counter()
    shards = training_shards(data, workdir)
    trainer_pass(model, lambda: training_batches(cfg, shards, t.seed))
    seconds = time.perf_counter() - start
    hyps = translate_texts(model, data.source_tok, data.target_tok, data.val.source,
                                       cfg.decoding, 1, progress=False)
    results["ours"] = {"seconds": round(seconds, 1),
                       "val_bleu": bleu_chrf(hyps, data.val.target)["bleu"]}
    keras.utils.set_random_seed(t.seed)
    ref = build_reference(data, params)
    source, target_in, target_out = fixed_length_arrays(*encode_pairs(data, data.train))
    start = time.perf_counter()
    ref.fit((source, target_in), target_out, batch_size=REFERENCE_BATCH, epochs=1, verbose=0,
            shuffle=True)
    seconds = time.perf_counter() - start
    outputs = reference_greedy(ref, val_src, cfg.decoding.max_length_ratio,
                               cfg.decoding.max_length_offset)
    hyps = data.target_tok.decode(outputs)
    results["reference"] = {"seconds": round(seconds, 1),
                            "val_bleu": bleu_chrf(hyps, data.val.target)["bleu"]}
    results["real_target_tokens"] = int((target_out != PAD_ID).sum())
    for side in ("ours", "reference"):
        results[side]["target_tokens_per_second"] = round(
            results["real_target_tokens"] / results[side]["seconds"], 1)
    results["val_sentences"] = len(data.val)
    return results


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
    for beam in dict.fromkeys((1, d.beam_size)):
        name = "greedy" if beam == 1 else f"beam{beam}"
        # As the pipeline does it (evaluate): translate_texts, one graph traced per call.
        start = time.perf_counter()
        hyps = translate_texts(model, data.source_tok, data.target_tok, texts, d,
                                           beam, progress=False)
        cold = time.perf_counter() - start
        # Steady state: the same batches through an already traced Translator.
        translator = Translator(model, beam, d.length_penalty, d.max_length_ratio,
                                d.max_length_offset)
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


# -- speech --------------------------------------------------------------------------------


def speech(cfg_path, overrides, data_dir, utterances: int | None, test_utterances: int | None,
           warmup: int, steps: int) -> dict:
    """Feature extraction speed, training frames per second and inference real-time factor."""
    from data_prep.audio_features import extract_features, global_stats
    from data_prep.char_vocabulary import normalize_transcript
    from data_prep.speech_dataset import make_training_dataset as speech_dataset
    from models.ctc_decoding import CTCDecoder, ctc_frames_needed
    from models.ctc_recognizer import subsampled_length
    from pipelines.speech.config import SpeechConfig
    from pipelines.speech.data import (
        load_entries,
        min_input_frames,
        normalize_features,
        vocabulary,
    )
    from pipelines.speech.inference import transcribe_files
    from pipelines.speech.stages import build_model as build_speech_model

    cfg = load_config(SpeechConfig, cfg_path, overrides)
    vocab = vocabulary(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        entries = load_entries(cfg, RunDir(tmp), data_dir)
        train, test = entries["train"][:utterances], entries["test"][:test_utterances]
        audio = sum(e["duration"] for e in train)
        extract_features([train[0]["audio_filepath"]], cfg.features)  # first-call set-up
        start = time.perf_counter()
        raw = extract_features([e["audio_filepath"] for e in train], cfg.features)
        seconds = time.perf_counter() - start
        result = {"config": str(cfg_path), "features": {
            "utterances": len(train), "audio_seconds": round(audio, 1), "seconds": round(seconds, 3),
            "audio_seconds_per_second": round(audio / seconds, 1)}}
        stats = global_stats(raw) if cfg.features.normalization == "global" else None
        features = normalize_features(raw, cfg.features, stats,
                                      [e.get("speaker") for e in train])
        labels = [vocab.encode(normalize_transcript(e["text"], cfg.data.lowercase,
                                                   cfg.data.remove_punctuation))
                  for e in train]
        # As the pipeline's load_labelled: drop utterances too short for their transcript.
        keep = [i for i, (f, y) in enumerate(zip(features, labels)) if ctc_frames_needed(y)
                <= subsampled_length(len(f), cfg.model.conv_layers, cfg.model.conv_stride)]
        features, labels = [features[i] for i in keep], [labels[i] for i in keep]
        min_lengths = [min_input_frames(ctc_frames_needed(y), cfg.model) for y in labels]
        t = cfg.training
        keras.utils.set_random_seed(t.seed)
        model = build_speech_model(cfg, vocab)
        augment = cfg.augment if cfg.augment.active else None

        def dataset():
            return speech_dataset(features, labels, t.batch_size, augment, seed=t.seed,
                                  min_lengths=min_lengths).repeat()

        counts = [(int(np.sum(x["feature_lengths"])), int(np.prod(x["features"].shape[:2])),
                   int(x["features"].shape[0])) for x, _ in dataset().take(warmup + steps)][warmup:]
        seconds = timed_loop(model, dataset, warmup, steps)
        frames, padded, utts = (sum(c[i] for c in counts) for i in range(3))
        hop = cfg.features.hop_ms / 1000
        result["train"] = {
            "steps": steps, "seconds": round(seconds, 3), "frames": frames, "utterances": utts,
            "frames_per_second": round(frames / seconds, 1),
            "padded_frames_per_second": round(padded / seconds, 1),
            "audio_seconds_per_second": round(frames * hop / seconds, 1),
            "parameters": model.count_params(), "batch_size": t.batch_size}
        decoder = CTCDecoder(model, "greedy")
        paths = [e["audio_filepath"] for e in test]
        test_audio = sum(e["duration"] for e in test)
        speakers = [e.get("speaker") for e in test]
        transcribe_files(decoder, vocab, paths[:1], cfg, stats, speakers[:1])  # traces the graph
        _, times = transcribe_files(decoder, vocab, paths, cfg, stats, speakers)
        total = times["feature_seconds"] + times["decode_seconds"]
        result["inference"] = {
            "strategy": "greedy", "utterances": len(test), "audio_seconds": round(test_audio, 1),
            "feature_seconds": round(times["feature_seconds"], 3),
            "decode_seconds": round(times["decode_seconds"], 3),
            "rtf": round(total / test_audio, 5)}
    return result


# -- the command ---------------------------------------------------------------------------


def table(results: dict) -> str:
    """The headline numbers as a plain-text table."""
    rows = []

    def add(section, name, value, unit=""):
        rows.append((section, name, f"{value:,}" if isinstance(value, (int, float)) else
                     str(value), unit))

    if "matmul" in results:
        m = results["matmul"]
        add("machine", f"float32 matmul {m['n']}x{m['n']}", m["gflops"], "GFLOP/s (best)")
    if "model" in results:
        m = results["model"]
        add("model", "parameters (ours)", m["parameters"])
        add("model", "training FLOPs per target token", m["flops_per_target_token"]["training"])
    if "train" in results:
        tr = results["train"]
        add("train", "ours", tr["ours"]["target_tokens_per_second"], "target tokens/s")
        add("train", "reference (textbook)", tr["reference"]["target_tokens_per_second"],
            "target tokens/s")
        add("train", "speedup", tr["speedup"], "x")
        add("train", "parameters ours / reference",
            f"{tr['ours']['parameters']:,} / {tr['reference']['parameters']:,}")
        if tr["ours"].get("fraction_of_peak") is not None:
            add("train", "ours, model FLOP/s", tr["ours"]["model_gflops"], "GFLOP/s")
            add("train", "ours, fraction of matmul peak", f"{tr['ours']['fraction_of_peak']:.1%}")
    if "train_epoch" in results:
        te = results["train_epoch"]
        for side in ("ours", "reference"):
            add("train_epoch", f"{side}: one epoch", te[side]["seconds"], "s")
            add("train_epoch", f"{side}: val BLEU (greedy)", te[side]["val_bleu"])
    if "decode" in results:
        de = results["decode"]
        beam = next((k for k in de if k.startswith("beam") and k != "beam_speedup"), None)
        add("decode", "ours, greedy", de["greedy"]["sentences_per_second"], "sentences/s")
        if beam:
            add("decode", f"ours, {beam}", de[beam]["sentences_per_second"], "sentences/s")
        tb = de["textbook_greedy"]
        add("decode", "textbook greedy loop", tb["sentences_per_second"], "sentences/s")
        add("decode", "greedy speedup", de["greedy_speedup"], "x")
        if beam:
            add("decode", f"{beam} speedup", de["beam_speedup"], "x")
        add("decode", "greedy mismatches", f"{tb['mismatches_vs_batched_greedy']} of "
            f"{tb['sentences']}")
        add("decode", "model", de["model"])
    if "speech" in results:
        s = results["speech"]
        add("speech", "feature extraction", s["features"]["audio_seconds_per_second"],
            "audio s/s")
        add("speech", "training", s["train"]["frames_per_second"], "frames/s")
        add("speech", "inference real-time factor", s["inference"]["rtf"])
    widths = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}".rstrip()
                     for a, b, c, d in rows)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--parts", default=DEFAULT_PARTS,
                   help=f"comma-separated, of {', '.join(PARTS)} (default {DEFAULT_PARTS})")
    p.add_argument("--config", help="translation config (default: the --run-dir's config.yaml, "
                   f"else {DEFAULT_CONFIG.relative_to(ROOT)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a translation config field")
    p.add_argument("--speech-config", default=str(DEFAULT_SPEECH_CONFIG))
    p.add_argument("--speech-set", dest="speech_overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override a speech config field")
    p.add_argument("--run-dir", help="a trained translation run: its tokenizers, and its "
                   "checkpoints/best.keras for the decode part (default: a fresh model)")
    p.add_argument("--data-dir", help="dataset directory (default: $PIPELINES_DATA_DIR)")
    p.add_argument("--out", default="runs/benchmark.json",
                   help="write the results as JSON to this file (default: %(default)s)")
    p.add_argument("--matmul-size", type=int, default=4096)
    p.add_argument("--matmul-seconds", type=float, default=3.0, help="timed matmul seconds")
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed training steps")
    p.add_argument("--train-steps", type=int, default=100, help="timed training steps")
    p.add_argument("--decode-sentences", type=int, default=None,
                   help="test2016 sentences for batched decoding (default: all 1000)")
    p.add_argument("--reference-sentences", type=int, default=100,
                   help="sentences for the textbook greedy loop")
    p.add_argument("--limit-train", type=int, default=None,
                   help="use only the first N translation training pairs")
    p.add_argument("--limit-val", type=int, default=None,
                   help="use only the first N validation pairs (train_epoch's BLEU)")
    p.add_argument("--speech-utterances", type=int, default=None,
                   help="training utterances for feature and training speed (default: all)")
    p.add_argument("--speech-test-utterances", type=int, default=None,
                   help="test utterances for the real-time factor (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke run: 2 warm-up + 3 timed steps, 500 training "
                   "and 100 validation pairs, 40 test sentences, 5 for the loop, a 1024 matmul "
                   "for 0.5 s, 64 + 16 utterances")
    args = p.parse_args(argv)
    if args.quick:
        args.matmul_size, args.matmul_seconds, args.warmup_steps, args.train_steps = 1024, 0.5, 2, 3
        args.limit_train = args.limit_train or 500
        args.limit_val = args.limit_val or 100
        args.decode_sentences = args.decode_sentences or 40
        args.reference_sentences = min(args.reference_sentences, 5)
        args.speech_utterances = args.speech_utterances or 64
        args.speech_test_utterances = args.speech_test_utterances or 16
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        p.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    if args.warmup_steps < 1 or args.train_steps < 1:
        p.error("--warmup-steps and --train-steps must be at least 1")
    return args


def run(args) -> dict:
    data_dir = args.data_dir or os.environ.get("PIPELINES_DATA_DIR")
    # Bucketed datasets have unknown length, so Keras warns at the end of every epoch.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    clock = {"start": time.perf_counter()}

    def lap(name):
        now = time.perf_counter()
        results["part_seconds"][name] = round(now - clock["start"], 1)
        clock["start"] = now
        print(f"[benchmark] {name} done ({results['part_seconds'][name]} s)", file=sys.stderr)

    results = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "cpu_count": os.cpu_count(), "python": platform.python_version(),
                           "tensorflow": tf.__version__, "keras": keras.__version__},
               "parts": args.parts,
               "settings": {k: v for k, v in vars(args).items() if k not in ("parts",)},
               "part_seconds": {}}
    if "matmul" in args.parts:
        results["matmul"] = matmul_peak(args.matmul_size, args.matmul_seconds)
        lap("matmul")
    if {"train", "train_epoch", "decode"} & set(args.parts):
        config = args.config
        if config is None:
            run_config = Path(args.run_dir or "", "config.yaml")
            config = run_config if args.run_dir and run_config.is_file() else DEFAULT_CONFIG
        overrides = list(args.overrides)
        if args.limit_train:
            overrides.append(f"data.limit_train={args.limit_train}")
        if args.limit_val:
            overrides.append(f"data.limit_val={args.limit_val}")
        cfg = load_config(TranslationConfig, config, overrides)
        data = load_translation_data(cfg, args.run_dir, data_dir)
        src, tgt = encode_pairs(data, data.train)
        stats = TokenStats.from_lengths(list(map(len, src)), list(map(len, tgt)))
        model_cfg = dataclasses.replace(cfg.model, source_vocab_size=data.source_tok.vocab_size,
                                        target_vocab_size=data.target_tok.vocab_size)
        keras.utils.set_random_seed(cfg.training.seed)
        params = build_model(cfg, data.source_tok, data.target_tok).count_params()
        results["translation"] = {
            "config": str(config), "overrides": overrides, "train_pairs": len(data.train),
            "tokenizer": data.tokenizer_from,
            "vocab_size": {"source": data.source_tok.vocab_size,
                           "target": data.target_tok.vocab_size}}
        results["model"] = {"parameters": params, "architecture": dataclasses.asdict(model_cfg),
                            "token_stats": dataclasses.asdict(stats),
                            "flops_per_target_token": flops_per_target_token(model_cfg, stats)}
        lap("translation_data")
        if "train" in args.parts:
            with tempfile.TemporaryDirectory() as shards:
                ours, _ = train_ours(data, args.warmup_steps, args.train_steps, shards)
            reference = train_reference(data, params, args.warmup_steps, args.train_steps)
            flops = results["model"]["flops_per_target_token"]["training"]
            ours["model_gflops"] = round(ours["target_tokens_per_second"] * flops / 1e9, 2)
            peak = results.get("matmul", {}).get("gflops")
            ours["fraction_of_peak"] = round(ours["model_gflops"] / peak, 4) if peak else None
            results["train"] = {
                "warmup_steps": args.warmup_steps, "timed_steps": args.train_steps,
                "ours": ours, "reference": reference,
                "speedup": round(ours["target_tokens_per_second"]
                                 / reference["target_tokens_per_second"], 2)}
            lap("train")
        if "train_epoch" in args.parts:
            with tempfile.TemporaryDirectory() as shards:
                results["train_epoch"] = train_epoch(data, params, shards)
            lap("train_epoch")
        if "decode" in args.parts:
            model, model_from = load_decode_model(data, args.run_dir)
            results["decode"] = decode(data, model, model_from, args.decode_sentences,
                                       args.reference_sentences)
            lap("decode")
    if "speech" in args.parts:
        results["speech"] = speech(args.speech_config, args.speech_overrides, data_dir,
                                   args.speech_utterances, args.speech_test_utterances,
                                   args.warmup_steps, args.train_steps)
        lap("speech")
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    results = run(args)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    print(table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"[benchmark] wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
