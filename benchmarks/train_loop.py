"""The trainer's compiled loop (``pipelines.train_steps``) against ``model.fit``: steady-state
training throughput on one device, same model, same batches, same process.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.train_loop --rounds 3

The model and batches are ``pipelines/configs/translation_demo.yaml``'s (Multi30k De->En,
the default model; ``--set`` overrides fields). Each round trains a fresh model (same
seed) three ways, in rotating order, for ``--warmup`` untimed and ``--steps`` timed steps:
``fit`` (``model.fit``, the loss on every position's logits), ``loop_all_positions`` (the
trainer's loop, the loss still on every position's logits) and ``loop`` (the trainer's
loop as it is: only real target tokens projected to the vocabulary,
``Seq2SeqTranslator.loss_sum_and_count``, and ``FusedAdam``). ``--variants`` picks some
of them, and: ``loop_keras_adam``, ``loop`` with ``keras.optimizers.Adam`` instead of
``FusedAdam``; ``loop_legacy_rnn``, ``loop`` with the ``keras.layers.RNN``-over-cell layers of older saved
models (``legacy_rnn``) instead of Keras' GRU/LSTM layers. Reports real target
tokens per second (``benchmarks.harness``' measure). Prints JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import keras
import tensorflow as tf

from benchmarks.timing import batch_tokens, timed_fit, timed_loop
from benchmarks.translation_speed import load_translation_data
from data_prep.text_dataset import make_training_dataset
from models.seq2seq_translator import Seq2SeqTranslator
from pipelines import trainer
from pipelines.config import load_config
from pipelines.translation.config import TranslationConfig
from pipelines.translation.stages import build_model


def all_positions(model):
    """``model`` with the trainer's loss computed on ``call``'s logits for every position,
    as before only real tokens were projected."""
    model.loss_sum_and_count = lambda x, y, training=False: model.loss.sum_and_count(
        y, model(x, training=training))
    return model


def with_legacy_rnn(model, config):
    """``model``'s architecture and compilation with ``legacy_rnn`` layers."""
    legacy = Seq2SeqTranslator(legacy_rnn=True, **dataclasses.asdict(model.config))
    return trainer.build_and_compile(legacy, config, loss=model.loss)


VARIANTS = ("fit", "loop_all_positions", "loop", "loop_keras_adam", "loop_legacy_rnn")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="pipelines/configs/translation_demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--data-dir")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--variants", default="fit,loop_all_positions,loop",
                   help=f"comma-separated, from {','.join(VARIANTS)}")
    args = p.parse_args()
    cfg = load_config(TranslationConfig, args.config, args.overrides)
    data = load_translation_data(cfg, None, args.data_dir or os.environ.get("PIPELINES_DATA_DIR"))
    t = cfg.training

    def dataset():
        return make_training_dataset(data.train.source, data.train.target, data.source_tok,
                                     data.target_tok, t.batch_tokens, cfg.data.max_length,
                                     seed=t.seed).repeat()

    counts = [batch_tokens(y) for _, y in dataset().take(args.warmup + args.steps)]
    tokens = sum(c[0] for c in counts[args.warmup:])
    names = args.variants.split(",")
    if not set(names) <= set(VARIANTS):
        p.error(f"--variants: choose from {','.join(VARIANTS)}, got {args.variants}")
    results = {name: [] for name in names}
    for round_ in range(args.rounds):
        first = round_ % len(names)
        for name in names[first:] + names[:first]:
            keras.utils.set_random_seed(t.seed)
            model = build_model(cfg, data.source_tok, data.target_tok)
            start = time.perf_counter()
            if name == "fit":
                seconds = timed_fit(model, dataset(), args.warmup, args.steps, shuffle=False)
            else:
                if name == "loop_all_positions":
                    all_positions(model)
                if name == "loop_keras_adam":
                    model.compile(optimizer=keras.optimizers.Adam(
                        t.learning_rate, epsilon=t.adam_epsilon, global_clipnorm=t.clip_norm),
                        loss=model.loss, jit_compile=False)
                if name == "loop_legacy_rnn":
                    keras.utils.set_random_seed(t.seed)  # the same initial weights
                    model = with_legacy_rnn(model, t)
                seconds = timed_loop(model, dataset, args.warmup, args.steps)
            results[name].append(round(tokens / seconds, 1))
            print(f"round {round_ + 1} {name}: {tokens / seconds:.0f} target tokens/s "
                  f"({time.perf_counter() - start:.0f} s with warm-up)", flush=True)
    print(json.dumps({
        "config": args.config, "overrides": args.overrides, "warmup": args.warmup,
        "steps": args.steps, "timed_target_tokens": tokens,
        "target_tokens_per_second": results,
        "median": {k: statistics.median(v) for k, v in results.items()},
        "machine": f"{platform.processor() or platform.machine()}, "
                   f"{len(tf.config.list_logical_devices('CPU'))} TF CPU device(s)",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }, indent=2))


if __name__ == "__main__":
    main()
