"""Translation data: corpora, the prepared splits and the SentencePiece tokenizers."""

from __future__ import annotations

import itertools

from data_prep import iwslt14
from data_prep.file_io import read_lines
from data_prep.multi30k import multi30k_file
from data_prep.pair_shards import pair_dataset
from data_prep.parallel_corpus import ParallelCorpus, iter_parallel, iter_tsv
from data_prep.subword_tokenizer import SubwordTokenizer, train_sentencepiece
from data_prep.text_dataset import batch_by_tokens
from pipelines.translation.config import DataConfig, TokenizerConfig, TranslationConfig


def split_files(data: DataConfig, split: str, data_dir) -> list:
    """The files one split is read from (Multi30k's are fetched if absent)."""
    if data.corpus == "multi30k":
        name = "test2016" if split == "test" else split
        return [multi30k_file(name, lang, data_dir) for lang in (data.source_lang, data.target_lang)]
    if data.corpus == "iwslt14":
        return iwslt14.split_files(split, data.source_lang, data.target_lang, data_dir)
    return list(data.paths[split]) if data.corpus == "files" else [data.paths[split]]


def iter_split(data: DataConfig, split: str, files: list):
    """The ``(source, target)`` pairs of one split from its ``files``, streamed (at most
    ``data.limit_<split>`` of them)."""
    if data.corpus == "iwslt14":
        pairs = iwslt14.iter_pairs(split, files)
    else:
        pairs = iter_tsv(files[0]) if data.corpus == "tsv" else iter_parallel(*files)
    return itertools.islice(pairs, getattr(data, f"limit_{split}"))


def load_split(data: DataConfig, split: str, data_dir) -> tuple[ParallelCorpus, list]:
    """One split as a corpus in memory, and the files it came from."""
    files = split_files(data, split, data_dir)
    return ParallelCorpus.from_pairs(iter_split(data, split, files)), files


def train_tokenizers(tok: TokenizerConfig, sources: list[str], targets: list[str]
                     ) -> dict[str, bytes]:
    """SentencePiece model protos ``{"source", "target"}`` trained on these sentences:
    one model on both sides for a joint vocabulary (the same bytes twice)."""
    if tok.joint:
        proto = train_sentencepiece(sources + targets, tok.vocab_size, tok.model_type,
                                    tok.character_coverage)
        return {"source": proto, "target": proto}
    return {side: train_sentencepiece(text, tok.vocab_size, tok.model_type,
                                      tok.character_coverage)
            for side, text in (("source", sources), ("target", targets))}


def tokenized_pairs(pairs, source_tok, target_tok, max_length: int, too_long: dict,
                    chunk: int = 10_000):
    """``(source ids, target ids)`` of text pairs, streamed (tokenized ``chunk`` pairs at
    a time); pairs with more than ``max_length`` subwords on either side are dropped and
    counted in ``too_long["count"]``."""
    pairs = iter(pairs)
    while block := list(itertools.islice(pairs, chunk)):
        sources = source_tok.encode([s for s, _ in block])
        targets = target_tok.encode([t for _, t in block])
        for source, target in zip(sources, targets, strict=True):
            if _within(max_length, source, target):
                yield source, target
            else:
                too_long["count"] += 1


def training_batches(cfg: TranslationConfig, shards: list, seed: int):
    """One epoch of training batches from the prepared shards: pairs streamed and shuffled
    with ``seed`` (``pair_dataset``), then token-count batches (``batch_by_tokens``)."""
    pairs = pair_dataset(shards, seed, True, cfg.data.shuffle_buffer)
    return batch_by_tokens(pairs, cfg.training.batch_tokens, cfg.data.max_length, seed=seed)


def _within(max_length: int, *sequences) -> bool:
    return all(len(ids) <= max_length for ids in sequences)


def drop_long(corpus: ParallelCorpus, source_tok, target_tok, max_length) -> ParallelCorpus:
    """Drop pairs with more than ``max_length`` subwords on either side (counted)."""
    lengths = zip(source_tok.encode(corpus.source), target_tok.encode(corpus.target))
    keep = [i for i, (s, t) in enumerate(lengths) if _within(max_length, s, t)]
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
