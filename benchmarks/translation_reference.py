"""The textbook reference translator of ``benchmarks.harness``, at our model's size.

The TensorFlow "Neural machine translation with attention" tutorial's recipe: its model,
fixed-length NumPy batches of 64 sentences, ``model.fit`` with a masked loss, and its own
batched greedy loop; ``train_epoch`` trains it and ours one epoch each from scratch.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from benchmarks.timing import batch_tokens, throughput, timed_fit, trainer_pass
from benchmarks.translation_speed import TranslationData, encode_pairs, training_shards
from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID
from pipelines.metrics import bleu_chrf
from pipelines.translation.data import training_batches
from pipelines.translation.inference import greedy, translate_texts
from pipelines.translation.stages import build_model

REFERENCE_BATCH = 64  # sentences per batch of the textbook recipe


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
    tokens, padded, sentences = batch_tokens(y[warmup * REFERENCE_BATCH:])
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
                           greedy(cfg.decoding), progress=False)
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
