"""Translation data: corpora, the prepared splits and the SentencePiece tokenizers."""

from __future__ import annotations

from data_prep.file_io import read_lines
from data_prep.multi30k import load_multi30k, multi30k_file
from data_prep.parallel_corpus import ParallelCorpus, read_parallel, read_tsv
from data_prep.subword_tokenizer import SubwordTokenizer
from pipelines.translation.config import DataConfig


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
