"""Translation pipeline: prepare -> train -> evaluate, plus translate.

    python -m pipelines.translation all --config pipelines/configs/translation_smoke.yaml
    echo "Ein Hund läuft." | python -m pipelines.translation translate --config ...

Files in ``runs/<name>/``: ``config.yaml`` (resolved), ``data/`` (cleaned splits),
``tokenizer/`` (SentencePiece models), ``checkpoints/``, ``logs/`` (TensorBoard and
``history.json``), ``hyps/`` (test translations), ``metrics.json`` and, after the
``export`` stage, ``export/`` (a SavedModel translating strings to strings).
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from dataclasses import dataclass, field

from pipelines import cli

DESCRIPTION = "Train and evaluate RNN attention translation models."
STAGE_NAMES = ("prepare", "train", "evaluate", "translate", "export", "report")

if __name__ == "__main__":
    cli.preflight("translation", DESCRIPTION, STAGE_NAMES)
else:
    cli.quiet_tensorflow()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data_prep.download import sha256_of  # noqa: E402
from data_prep.file_io import (  # noqa: E402
    CorpusError,
    atomic_write_bytes,
    atomic_write_json,
    read_lines,
    write_lines,
)
from data_prep.multi30k import LANGUAGES as MULTI30K_LANGUAGES  # noqa: E402
from data_prep.multi30k import load_multi30k, multi30k_file  # noqa: E402
from data_prep.parallel_corpus import (  # noqa: E402
    ParallelCorpus,
    drop_empty,
    read_parallel,
    read_tsv,
)
from data_prep.special_ids import EOS_ID, PAD_ID  # noqa: E402
from data_prep.subword_tokenizer import (  # noqa: E402
    SubwordTokenizer,
    TokenizerError,
    train_sentencepiece,
)
from data_prep.text_dataset import make_source_batches, make_training_dataset  # noqa: E402
from models.attention import SCORES  # noqa: E402
from models.attention_decoder import ATTENTION_OUTPUTS, INITS  # noqa: E402
from models.decoding import Translator  # noqa: E402
from models.losses import MaskedLabelSmoothingLoss  # noqa: E402
from models.rnn_cells import CELLS  # noqa: E402
from models.seq2seq_translator import Seq2SeqConfig, Seq2SeqTranslator  # noqa: E402
from pipelines import trainer  # noqa: E402
from pipelines.config import (  # noqa: E402
    ConfigError,
    at_least,
    choice,
    fraction,
    positive,
)
from pipelines.metrics import bleu_chrf  # noqa: E402
from pipelines.reports.notebooks import ReportError, report_stage  # noqa: E402
from pipelines.run_dir import fingerprint  # noqa: E402

SPLITS = ("train", "val", "test")
DOWNSTREAM_STAGES = ("train", "evaluate", "export")  # stages built on prepare's output
UNUSED_TRAINING_FIELDS = ("batch_size",)  # speech's; batches here are sized in tokens


@dataclass
class DataConfig:
    corpus: str = "multi30k"  # multi30k | files (two aligned files per split) | tsv
    source_lang: str = "de"
    target_lang: str = "en"
    # For corpus=files: {split: [source_path, target_path]}; for corpus=tsv: {split: path}.
    paths: dict | None = None
    max_length: int = 80  # training pairs with more subwords on either side are dropped
    limit_train: int | None = None  # use only the first N pairs (quick experiments)
    limit_val: int | None = None
    limit_test: int | None = None

    def validate(self, where):
        choice(self.corpus, ("multi30k", "files", "tsv"), f"{where}.corpus")
        at_least(self, where, 1, "max_length", "limit_train", "limit_val", "limit_test")
        if self.corpus == "multi30k":
            choice(self.source_lang, MULTI30K_LANGUAGES, f"{where}.source_lang")
            choice(self.target_lang, MULTI30K_LANGUAGES, f"{where}.target_lang")
            if self.source_lang == self.target_lang:
                raise ConfigError(f"{where}.target_lang: must differ from source_lang "
                                  f"({self.source_lang!r})")
        else:
            paths = self.paths or {}
            for split in SPLITS:
                value = paths.get(split)
                ok = (isinstance(value, list) and len(value) == 2) if self.corpus == "files" \
                    else isinstance(value, str)
                if not ok:
                    want = "[source_path, target_path]" if self.corpus == "files" else "a path"
                    raise ConfigError(f"{where}.paths.{split}: expected {want} for "
                                      f"corpus={self.corpus}, got {value!r}")


@dataclass
class TokenizerConfig:
    model_type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000
    joint: bool = True  # one vocabulary for both languages
    character_coverage: float = 1.0

    def validate(self, where):
        choice(self.model_type, ("unigram", "bpe"), f"{where}.model_type")
        # SentencePiece reserves 4 ids (pad, unk, bos, eos) and needs room for pieces.
        at_least(self, where, 8, "vocab_size")
        if not 0.0 < self.character_coverage <= 1.0:
            raise ConfigError(f"{where}.character_coverage: must be in (0, 1], "
                              f"got {self.character_coverage!r}")


@dataclass
class DecodingConfig:
    beam_size: int = 5
    length_penalty: float = 0.6  # GNMT alpha
    batch_tokens: int = 6000  # source tokens per decoding batch
    max_length_ratio: float = 1.5  # output budget: ratio * source length + offset
    max_length_offset: int = 10

    def validate(self, where):
        at_least(self, where, 1, "beam_size", "batch_tokens")
        at_least(self, where, 0, "length_penalty", "max_length_offset")
        positive(self, where, "max_length_ratio")


@dataclass
class TranslationConfig:
    name: str = "translation"
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    training: trainer.TrainingConfig = field(default_factory=trainer.TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    SET_BY_PIPELINE = ("model.source_vocab_size", "model.target_vocab_size")

    def validate(self, where):
        for name in self.SET_BY_PIPELINE:
            if getattr(self.model, name.split(".")[1]):
                raise ConfigError(f"{name}: set from the trained tokenizer; configure "
                                  "tokenizer.vocab_size instead")
        # Seq2SeqConfig lives with the model, free of pipeline code; checked here.
        m = self.model
        choice(m.cell, tuple(CELLS), "model.cell")
        choice(m.attention, SCORES, "model.attention")
        choice(m.attention_output, ATTENTION_OUTPUTS, "model.attention_output")
        choice(m.decoder_init, INITS, "model.decoder_init")
        at_least(m, "model", 1, "embedding_dim", "encoder_layers", "encoder_units",
                 "decoder_layers", "decoder_units", "attention_units", "attentional_dim")
        fraction(m.dropout, "model.dropout")
        if m.tie_embeddings and m.attentional_dim != m.embedding_dim:
            raise ConfigError(f"model.tie_embeddings: needs model.attentional_dim "
                              f"({m.attentional_dim}) equal to model.embedding_dim "
                              f"({m.embedding_dim})")
        if m.attention_output == "residual_norm" and m.attentional_dim != m.decoder_units:
            raise ConfigError(f"model.attentional_dim: must be model.decoder_units "
                              f"({m.decoder_units}) for attention_output=residual_norm "
                              f"(h + W context), got {m.attentional_dim}")


# -- data -------------------------------------------------------------------------------


def load_split(data: DataConfig, split: str, data_dir) -> tuple[ParallelCorpus, list]:
    """One split as a corpus, and the files it came from (for the stage fingerprint)."""
    if data.corpus == "multi30k":
        name = "test2016" if split == "test" else split
        files = [multi30k_file(name, lang, data_dir) for lang in (data.source_lang, data.target_lang)]
        corpus = load_multi30k(name, data.source_lang, data.target_lang, data_dir)
    elif data.corpus == "files":
        files = list(data.paths[split])
        corpus = read_parallel(*files)
    else:
        files = [data.paths[split]]
        corpus = read_tsv(files[0])
    limit = getattr(data, f"limit_{split}")
    if limit is not None:
        corpus = ParallelCorpus(corpus.source[:limit], corpus.target[:limit])
    return corpus, files


def drop_long(corpus: ParallelCorpus, source_tok, target_tok, max_length) -> ParallelCorpus:
    """Drop pairs with more than ``max_length`` subwords on either side (counted)."""
    src_len = [len(x) for x in source_tok.encode(corpus.source)]
    tgt_len = [len(x) for x in target_tok.encode(corpus.target)]
    keep = [i for i in range(len(corpus)) if src_len[i] <= max_length and tgt_len[i] <= max_length]
    dropped = {**corpus.dropped, "too_long": len(corpus) - len(keep)}
    return ParallelCorpus([corpus.source[i] for i in keep], [corpus.target[i] for i in keep], dropped)


def tokenizer_pair(source_proto: bytes, target_proto: bytes):
    """Source and target tokenizers; one shared object for a joint vocabulary."""
    source = SubwordTokenizer(source_proto)
    return source, source if target_proto == source_proto else SubwordTokenizer(target_proto)


def load_tokenizers(run):
    return tokenizer_pair(run.path("tokenizer", "source.model").read_bytes(),
                          run.path("tokenizer", "target.model").read_bytes())


def load_prepared(run, split) -> tuple[list[str], list[str]]:
    return (read_lines(run.path("data", f"{split}.src")),
            read_lines(run.path("data", f"{split}.tgt")))


def make_translator(model, decoding: DecodingConfig, beam_size: int) -> Translator:
    return Translator(model, beam_size, decoding.length_penalty, decoding.max_length_ratio,
                      decoding.max_length_offset)


def translate_texts(model, source_tok, target_tok, texts, decoding: DecodingConfig,
                    beam_size: int, progress: bool = True) -> list[str]:
    """Translate ``texts`` in length-sorted, token-sized batches; output in input order."""
    return translate_with(make_translator(model, decoding, beam_size), source_tok, target_tok,
                          texts, decoding.batch_tokens, progress)


def translate_with(translator: Translator, source_tok, target_tok, texts, batch_tokens: int,
                   progress: bool = True) -> list[str]:
    """``translate_texts`` with a given translator (its compiled search is reused).

    An empty (or blank) text translates to an empty string: the model, given only EOS,
    would still write its likeliest sentence.
    """
    result = [""] * len(texts)
    todo = [i for i, text in enumerate(texts) if text.strip()]
    if not todo:
        return result
    dataset, order = make_source_batches([texts[i] for i in todo], source_tok, batch_tokens)
    outputs = []
    for batch in tqdm(dataset, desc=f"translate (beam {translator.beam_size})", unit="batch",
                      disable=None if progress else True, file=sys.stderr):  # None: on a tty
        outputs.extend(translator(batch).numpy())
    for position, text in zip(order, target_tok.decode(outputs)):
        result[todo[position]] = text
    return result


# -- stages -----------------------------------------------------------------------------


def prepare(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    corpora, files = {}, []
    for split in SPLITS:
        corpora[split], split_files = load_split(cfg.data, split, ctx.data_dir)
        if not len(corpora[split]):
            raise CorpusError(f"{' and '.join(map(str, split_files))}: the {split} split "
                              "has no lines")
        files += [str(f) for f in split_files]
    fp = fingerprint("prepare", cfg.data, cfg.tokenizer, [sha256_of(f) for f in files])
    if run.up_to_date("prepare", fp, ctx.force, run.path("data")):
        return
    ctx.begin()
    # New data or tokenizers: what was trained on the old ones must not be reused.
    run.invalidate("prepare", *DOWNSTREAM_STAGES)
    train = drop_empty(corpora["train"])
    if not len(train):
        raise CorpusError(f"every one of the {len(corpora['train'])} training pairs has an "
                          "empty source or target side")
    tok_dir = run.path("tokenizer")
    tok_dir.mkdir(parents=True, exist_ok=True)
    if cfg.tokenizer.joint:
        proto = train_sentencepiece(train.source + train.target, cfg.tokenizer.vocab_size,
                                    cfg.tokenizer.model_type, cfg.tokenizer.character_coverage)
        protos = {"source": proto, "target": proto}
    else:
        protos = {side: train_sentencepiece(getattr(train, side), cfg.tokenizer.vocab_size,
                                            cfg.tokenizer.model_type,
                                            cfg.tokenizer.character_coverage)
                  for side in ("source", "target")}
    for side, proto in protos.items():
        atomic_write_bytes(tok_dir / f"{side}.model", proto)
    source_tok, target_tok = tokenizer_pair(protos["source"], protos["target"])
    corpora["train"] = drop_long(train, source_tok, target_tok, cfg.data.max_length)
    if not len(corpora["train"]):
        raise CorpusError(f"every one of the {len(train)} non-empty training pairs is longer "
                          f"than data.max_length={cfg.data.max_length} subwords on some side; "
                          "raise data.max_length")
    report = {"files": files, "source_vocab_size": source_tok.vocab_size,
              "target_vocab_size": target_tok.vocab_size}
    for split, corpus in corpora.items():
        write_lines(run.path("data", f"{split}.src"), corpus.source)
        write_lines(run.path("data", f"{split}.tgt"), corpus.target)
        report[split] = {"pairs": len(corpus), "dropped": corpus.dropped}
    atomic_write_json(run.path("data", "report.json"), report)
    run.mark_done("prepare", fp)
    dropped = corpora["train"].dropped
    print(f"[prepare] train {len(corpora['train'])} pairs (dropped {dropped.get('empty', 0)} "
          f"empty, {dropped['too_long']} longer than {cfg.data.max_length} subwords), "
          f"val {len(corpora['val'])}, test {len(corpora['test'])}; vocab "
          f"{source_tok.vocab_size}/{target_tok.vocab_size}")


def build_model(cfg: TranslationConfig, source_tok, target_tok) -> Seq2SeqTranslator:
    model_cfg = dataclasses.replace(cfg.model, source_vocab_size=source_tok.vocab_size,
                                    target_vocab_size=target_tok.vocab_size)
    model = Seq2SeqTranslator(**dataclasses.asdict(model_cfg))
    return trainer.build_and_compile(model, cfg.training,
                                     loss=MaskedLabelSmoothingLoss(cfg.training.label_smoothing))


def train(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    training = trainer.without_unused(cfg.training, UNUSED_TRAINING_FIELDS)
    checkpoint_fp = fingerprint("train", run.require("prepare", "train"), cfg.model,
                                trainer.resumable_config(training))
    fp = fingerprint(checkpoint_fp, training)
    if run.up_to_date("train", fp, ctx.force, run.path("checkpoints", "best.keras")):
        return
    ctx.begin()
    if ctx.force:
        trainer.discard_checkpoints(run)
    source_tok, target_tok = load_tokenizers(run)
    train_src, train_tgt = load_prepared(run, "train")
    val_src, val_tgt = load_prepared(run, "val")
    t = cfg.training

    def train_dataset(epoch):
        return make_training_dataset(train_src, train_tgt, source_tok, target_tok,
                                     t.batch_tokens, cfg.data.max_length, seed=t.seed + epoch)

    val_dataset = make_training_dataset(val_src, val_tgt, source_tok, target_tok, t.batch_tokens,
                                        cfg.data.max_length, shuffle=False)

    def validate(model):
        hyps = translate_texts(model, source_tok, target_tok, val_src, cfg.decoding, 1,
                               progress=False)
        return {"val_bleu": bleu_chrf(hyps, val_tgt)["bleu"]}

    state = trainer.train(
        run, lambda: build_model(cfg, source_tok, target_tok), train_dataset, val_dataset,
        validate, trainer.ValidationMetric("val_bleu", higher_is_better=True), t, checkpoint_fp,
    )
    run.mark_done("train", fp, best_val_bleu=state["best"], epochs=state["epoch"],
                  train_seconds=state["train_seconds"])


def evaluate(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("evaluate", run.require("train", "evaluate"), cfg.decoding)
    if run.up_to_date("evaluate", fp, ctx.force, run.path("metrics.json")):
        return
    ctx.begin()
    source_tok, target_tok = load_tokenizers(run)
    model = keras.saving.load_model(run.path("checkpoints", "best.keras"))
    test_src, test_tgt = load_prepared(run, "test")
    results = {}
    for beam in dict.fromkeys([cfg.decoding.beam_size, 1]):
        start = time.time()
        hyps = translate_texts(model, source_tok, target_tok, test_src, cfg.decoding, beam)
        seconds = time.time() - start
        name = "greedy" if beam == 1 else f"beam{beam}"
        write_lines(run.path("hyps", f"test.{name}.txt"), hyps)
        results[beam] = {**bleu_chrf(hyps, test_tgt), "beam_size": beam,
                         "decode_seconds": round(seconds, 2),
                         "sentences_per_second": round(len(hyps) / max(seconds, 1e-9), 1)}
    main = results[cfg.decoding.beam_size]
    metrics = {**main, "test_sentences": len(test_src), "length_penalty": cfg.decoding.length_penalty,
               "greedy": results[1]}
    atomic_write_json(run.path("metrics.json"), metrics)
    run.mark_done("evaluate", fp)
    print(f"[evaluate] test BLEU {main['bleu']} chrF {main['chrf']} (beam {main['beam_size']}); "
          f"greedy BLEU {results[1]['bleu']}\n[evaluate] {main['signature']}")


def translate(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    run.require("train", "translate")
    source_tok, target_tok = load_tokenizers(run)
    model = keras.saving.load_model(run.path("checkpoints", "best.keras"))
    translator = make_translator(model, cfg.decoding, cfg.decoding.beam_size)
    from_file = ctx.input not in (None, "-")
    for lines in cli.input_batches(ctx.input):
        texts = [line.strip() for line in lines]
        for line in translate_with(translator, source_tok, target_tok, texts,
                                   cfg.decoding.batch_tokens, progress=from_file):
            print(line)
        sys.stdout.flush()  # typed input: each translation as soon as it is ready


def export_translator(model, source_tok, target_tok, decoding: DecodingConfig, path) -> None:
    """Write a SavedModel whose ``translate`` signature maps strings to strings.

    Tokenization (tensorflow-text SentencePiece), decoding and detokenization all run in
    the graph, so serving needs only TensorFlow and tensorflow-text, not this package.
    """
    translator = make_translator(model, decoding, decoding.beam_size)

    def translate_strings(texts):
        ids = source_tok.tokenize(texts)
        eos = tf.fill([ids.nrows(), 1], EOS_ID)
        output = translator(tf.concat([ids, eos], axis=1).to_tensor(default_value=PAD_ID))
        # Keep the tokens before each row's first EOS (padding follows it).
        before_eos = tf.equal(tf.cumsum(tf.cast(output == EOS_ID, tf.int32), axis=1), 0)
        translations = target_tok.detokenize(tf.ragged.boolean_mask(output, before_eos))
        # As translate_texts: a blank source gets an empty translation.
        blank = tf.equal(tf.strings.length(tf.strings.strip(texts)), 0)
        return tf.where(blank, tf.constant(""), translations)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("translate", translate_strings,
                         input_signature=[tf.TensorSpec([None], tf.string)])
    archive.write_out(str(path), verbose=False)


def export(ctx: cli.Context) -> None:
    cfg, run = ctx.config, ctx.run
    fp = fingerprint("export", run.require("train", "export"), cfg.decoding)
    target = run.path("export")
    if run.up_to_date("export", fp, ctx.force, target):
        return
    ctx.begin()
    source_tok, target_tok = load_tokenizers(run)
    model = keras.saving.load_model(run.path("checkpoints", "best.keras"))
    staging = run.path(".export.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    export_translator(model, source_tok, target_tok, cfg.decoding, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    run.mark_done("export", fp)
    print(f"[export] SavedModel with a 'translate' signature (strings -> strings) in {target}")


def report(ctx: cli.Context) -> None:
    """Execute notebooks/translation_report.ipynb for this run into ``report/``."""
    report_stage(ctx, "translation_report")


STAGES = {"prepare": prepare, "train": train, "evaluate": evaluate, "translate": translate,
          "export": export, "report": report}


def main(argv=None) -> int:
    return cli.main(
        argv, "translation", DESCRIPTION, TranslationConfig,
        STAGES, pipeline=["prepare", "train", "evaluate"],
        user_errors=(ReportError, TokenizerError),
    )


if __name__ == "__main__":
    cli.exit_with(main())
