"""The translation stages: prepare, train, evaluate, translate, export and report."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time

from data_prep.download import sha256_of
from data_prep.file_io import (
    CorpusError,
    atomic_write_bytes,
    atomic_write_json,
    write_lines,
)
from data_prep.pair_shards import verified_shards, write_pair_shards
from data_prep.parallel_corpus import ParallelCorpus
from data_prep.subword_tokenizer import TokenizerError, reservoir_sample
from data_prep.text_dataset import make_training_dataset
from models.losses import MaskedLabelSmoothingLoss
from models.seq2seq_translator import Seq2SeqTranslator
from pipelines import cli, trainer
from pipelines.metrics import bleu_chrf
from pipelines.report_stage import ReportError, report_stage
from pipelines.run_dir import fingerprint
from pipelines.translation import STAGE_NAMES
from pipelines.translation.config import SPLITS, TranslationConfig
from pipelines.translation.data import (
    iter_split,
    load_prepared,
    load_tokenizers,
    split_files,
    tokenized_pairs,
    tokenizer_pair,
    train_tokenizers,
    training_batches,
)
from pipelines.translation.inference import (
    export_signatures,
    export_translator,
    greedy,
    load_checkpoint,
    make_translator,
    translate_texts,
    translate_with,
)


def made_from(cfg: TranslationConfig) -> dict:
    """The config sections each stage's output is made from, as its fingerprint counts
    them (``cli.Context``): what a later stage may not change, but decoding."""
    training = trainer.made_from(cfg.training)
    return {"prepare": {"data": cfg.data, "tokenizer": cfg.tokenizer},
            "train": {"model": cfg.model, "training": training},
            "evaluate": {"decoding": cfg.decoding}, "export": {"decoding": cfg.decoding}}


def prepare(ctx: cli.Context) -> None:
    """Tokenizers and data: val and test as text; the training pairs, streamed in two
    passes (a sample for SentencePiece, then tokenized into TFRecord shards), so a corpus
    of any size never has to fit in memory."""
    cfg, run = ctx.config, ctx.run
    files = {split: split_files(cfg.data, split, ctx.data_dir) for split in SPLITS}
    held_out = {split: ParallelCorpus.from_pairs(iter_split(cfg.data, split, files[split]))
                for split in ("val", "test")}
    for split, corpus in held_out.items():
        if not len(corpus):
            raise _no_lines(split, files[split])
    inputs = list(dict.fromkeys(f for split in SPLITS for f in files[split]))
    fp = fingerprint("prepare", cfg.data, cfg.tokenizer, [sha256_of(f) for f in inputs])
    if not ctx.start(fp, run.path("data")):
        return
    counts = {}

    def train_pairs():
        """The non-empty training pairs, streamed; counts what it read and skipped."""
        counts.update(read=0, empty=0)
        for source, target in iter_split(cfg.data, "train", files["train"]):
            counts["read"] += 1
            if source and target:
                yield source, target
            else:
                counts["empty"] += 1

    sample = reservoir_sample(train_pairs(), cfg.tokenizer.sample_pairs)
    if not counts["read"]:
        raise _no_lines("train", files["train"])
    if not sample:
        raise CorpusError(f"every one of the {counts['read']} training pairs has an "
                          "empty source or target side")
    protos = train_tokenizers(cfg.tokenizer, [s for s, _ in sample], [t for _, t in sample])
    del sample
    tok_dir = run.path("tokenizer")
    for side, proto in protos.items():
        atomic_write_bytes(tok_dir / f"{side}.model", proto)
    source_tok, target_tok = tokenizer_pair(protos["source"], protos["target"])
    sizes = {side: tok.vocab_size for side, tok in (("source", source_tok), ("target", target_tok))
             if tok.vocab_size < cfg.tokenizer.vocab_size}
    if sizes:  # SentencePiece stops at the pieces the text has (hard_vocab_limit off)
        print(f"[prepare] warning: tokenizer.vocab_size={cfg.tokenizer.vocab_size}, but the "
              "training text gives only " + ", ".join(f"{n} ({side})" for side, n in sizes.items())
              + " pieces", file=sys.stderr)
    too_long = {"count": 0}
    shards = write_pair_shards(
        tokenized_pairs(train_pairs(), source_tok, target_tok, cfg.data.max_length, too_long),
        run.path("data"), "train", cfg.data.shard_pairs)
    kept = sum(shard["pairs"] for shard in shards)
    if not kept:
        raise CorpusError(f"every one of the {counts['read'] - counts['empty']} non-empty "
                          f"training pairs is longer than data.max_length={cfg.data.max_length}"
                          " subwords on some side; raise data.max_length")
    dropped = {"empty": counts["empty"], "too_long": too_long["count"]}
    report = {"files": [str(f) for f in inputs],
              "source_vocab_size": source_tok.vocab_size,
              "target_vocab_size": target_tok.vocab_size,
              "train": {"pairs": kept, "dropped": dropped, "shards": len(shards)}}
    for split, corpus in held_out.items():
        write_lines(run.path("data", f"{split}.src"), corpus.source)
        write_lines(run.path("data", f"{split}.tgt"), corpus.target)
        report[split] = {"pairs": len(corpus), "dropped": corpus.dropped}
    atomic_write_json(run.path("data", "report.json"), report)
    ctx.done()
    print(f"[prepare] train {kept} pairs in {len(shards)} shards (dropped {dropped['empty']} "
          f"empty, {dropped['too_long']} longer than {cfg.data.max_length} subwords), "
          f"val {len(held_out['val'])}, test {len(held_out['test'])}; vocab "
          f"{source_tok.vocab_size}/{target_tok.vocab_size}")


def _no_lines(split, files) -> CorpusError:
    return CorpusError(f"{' and '.join(map(str, files))}: the {split} split has no lines")


def build_model(cfg: TranslationConfig, source_tok, target_tok) -> Seq2SeqTranslator:
    model_cfg = dataclasses.replace(cfg.model, source_vocab_size=source_tok.vocab_size,
                                    target_vocab_size=target_tok.vocab_size)
    model = Seq2SeqTranslator(**dataclasses.asdict(model_cfg))
    return trainer.build_and_compile(model, cfg.training,
                                     loss=MaskedLabelSmoothingLoss(cfg.training.label_smoothing))


def train(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    checkpoint_fp = trainer.start_stage(ctx, ctx.require("prepare"), cfg.model)
    if checkpoint_fp is None:
        return
    source_tok, target_tok = load_tokenizers(run)
    shards = verified_shards(run.path("data"), "train")
    val_src, val_tgt = load_prepared(run, "val")
    t = cfg.training

    def train_dataset(epoch):
        return training_batches(cfg, shards, t.seed + epoch)

    val_dataset = make_training_dataset(val_src, val_tgt, source_tok, target_tok, t.batch_tokens,
                                        cfg.data.max_length, shuffle=False)

    def validate(model):
        hyps = translate_texts(model, source_tok, target_tok, val_src, greedy(cfg.decoding),
                               progress=False)
        return {"val_bleu": bleu_chrf(hyps, val_tgt)["bleu"]}

    state = trainer.train(
        run, lambda: build_model(cfg, source_tok, target_tok), train_dataset, val_dataset,
        validate, trainer.ValidationMetric("val_bleu", higher_is_better=True), t, checkpoint_fp,
    )
    ctx.done(best_val_bleu=state["best"], epochs=state["epoch"],
             train_seconds=state["train_seconds"])


def evaluate(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("evaluate", ctx.require("train"), cfg.decoding)
    if not ctx.start(fp, run.path("metrics.json")):
        return
    source_tok, target_tok = load_tokenizers(run)
    model = load_checkpoint(run)
    test_src, test_tgt = load_prepared(run, "test")
    results = {}
    # The configured search and greedy (one run when the config's is greedy).
    for beam, decoding in {cfg.decoding.beam_size: cfg.decoding, 1: greedy(cfg.decoding)}.items():
        start = time.time()
        hyps = translate_texts(model, source_tok, target_tok, test_src, decoding)
        seconds = time.time() - start
        name = "greedy" if beam == 1 else f"beam{beam}"
        write_lines(run.path("hyps", f"test.{name}.txt"), hyps)
        results[beam] = {**bleu_chrf(hyps, test_tgt), "beam_size": beam,
                         "decode_seconds": round(seconds, 2),
                         "sentences_per_second": round(len(hyps) / max(seconds, 1e-9), 1)}
    main = results[cfg.decoding.beam_size]
    metrics = {**main, "test_sentences": len(test_src), "length_penalty": cfg.decoding.length_penalty,
               "greedy": results[1], "decoding": dataclasses.asdict(cfg.decoding),
               "config_fingerprint": ctx.config_fingerprint()}
    atomic_write_json(run.path("metrics.json"), metrics)
    ctx.done()
    print(f"[evaluate] test BLEU {main['bleu']} chrF {main['chrf']} (beam {main['beam_size']}); "
          f"greedy BLEU {results[1]['bleu']}\n[evaluate] {main['signature']}")


def translate(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    ctx.require("train")
    source_tok, target_tok = load_tokenizers(run)
    model = load_checkpoint(run)
    translator = make_translator(model, cfg.decoding)
    from_file = ctx.input not in (None, "-")
    for lines in cli.input_batches(ctx.input):
        texts = [line.strip() for line in lines]
        for line in translate_with(translator, source_tok, target_tok, texts,
                                   cfg.decoding.batch_tokens, progress=from_file):
            print(line)
        sys.stdout.flush()  # typed input: each translation as soon as it is ready


def export(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    # The signatures' names are part of the fingerprint: an export from before
    # translate_greedy existed is redone, not served without it.
    signatures = list(export_signatures(cfg.decoding))
    fp = fingerprint("export", ctx.require("train"), cfg.decoding, signatures)
    target = run.path("export")
    if not ctx.start(fp, target):
        return
    source_tok, target_tok = load_tokenizers(run)
    model = load_checkpoint(run)
    staging = run.path(".export.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    export_translator(model, source_tok, target_tok, cfg.decoding, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    ctx.done()
    print(f"[export] SavedModel with signatures {', '.join(signatures)} (strings -> "
          f"strings; translate: beam {cfg.decoding.beam_size}) in {target}")


def report(ctx: cli.Context) -> None:
    """Execute notebooks/translation_report.ipynb for this run into ``report/``."""
    report_stage(ctx, "translation_report")


# Besides cli.USER_ERRORS, the errors reported as one line (no traceback).
USER_ERRORS = (ReportError, TokenizerError)
# The stages: the functions named in the package's STAGE_NAMES, in that order (the names
# are declared there, where the command line reads them before TensorFlow is imported).
STAGES = {name: globals()[name] for name in STAGE_NAMES}
