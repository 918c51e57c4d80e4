"""The word language model of a speech run: built from its training transcripts, its
weight and word bonus chosen on validation, and the decoder that applies it; and the
decoders evaluate and transcribe use, with or without it.

``lm/words.arpa`` and ``lm/tuning.json`` are made on first use (by ``evaluate`` or
``transcribe``) and reused while the trained model and ``decoding.lm`` are unchanged.
"""

from __future__ import annotations

import itertools
import json

from data_prep.download import sha256_of
from data_prep.file_io import atomic_write_json
from data_prep.manifest import read_manifest
from data_prep.ngram_lm import write_arpa
from models.attention_rescoring import LanguageModelRescoringDecoder
from models.ctc_lm_decoding import CTCLanguageModelDecoder
from pipelines.metrics import wer_cer
from pipelines.quiet import native_stderr_silenced
from pipelines.run_dir import fingerprint
from pipelines.speech.config import RESCORING, SpeechConfig
from pipelines.speech.data import load_labelled, vocabulary
from pipelines.speech.inference import (
    in_batches,
    load_checkpoint,
    load_recognizer,
    with_decoder,
)

LM_STRATEGY = "beam_search_lm"  # evaluate's name for the search with the language model
RESCORING_LM = "attention_rescoring_lm"  # ... and for its N-best rescored by the decoder


def _fingerprint(cfg: SpeechConfig, run) -> str:
    return fingerprint("lm", run.require("train", "the language model"), cfg.decoding.lm)


def _tune(cfg: SpeechConfig, run, decoder: CTCLanguageModelDecoder, vocab, fp: str,
          training_sentences: int) -> dict:
    """Choose the weight and word bonus on validation; the record ``lm/tuning.json``."""
    lm = cfg.decoding.lm
    val_x, val_y, _ = load_labelled(run, "val", vocab, cfg)
    references = [vocab.decode(y) for y in val_y]
    log_probs = in_batches(decoder.log_probs, val_x, cfg.decoding.batch_size)
    grid = []
    for weight, bonus in itertools.product(lm.weights, lm.word_bonuses):
        decoder.set_weights(weight, bonus)
        hyps = [decoder.search(x) for x in log_probs]
        grid.append({"weight": weight, "word_bonus": bonus, **wer_cer(hyps, references)})
        print(f"[lm] weight {weight:g} word bonus {bonus:g}: validation WER "
              f"{grid[-1]['wer']:.2%}", flush=True)
    best = min(grid, key=lambda g: (g["wer"], g["cer"]))
    tuning = {"fingerprint": fp, "weight": best["weight"], "word_bonus": best["word_bonus"],
              "val_wer": best["wer"], "order": lm.order, "arpa": "words.arpa",
              "arpa_sha256": sha256_of(run.path("lm", "words.arpa")),
              "training_sentences": training_sentences, "grid": grid}
    atomic_write_json(run.path("lm", "tuning.json"), tuning)
    return tuning


def _decoder(cfg: SpeechConfig, run, vocab, weight: float, bonus: float, model=None
             ) -> CTCLanguageModelDecoder:
    model = load_checkpoint(run) if model is None else model
    # KenLM tells stderr that a binary file would load faster than the ARPA one: pip's
    # kenlm cannot write one, and the ~100-word AN4 model reads in milliseconds.
    with native_stderr_silenced():
        return CTCLanguageModelDecoder(model, vocab.labels(), vocab.encode,
                                       run.path("lm", "words.arpa"), weight, bonus,
                                       cfg.decoding.lm.beam_width)


def language_model_decoder(cfg: SpeechConfig, run, model=None
                           ) -> tuple[CTCLanguageModelDecoder, dict]:
    """The run's decoder with its language model, built and tuned first if needed, and
    the tuning record (``lm/tuning.json``: the chosen weight and word bonus, the grid).
    ``model``: the run's checkpoint when the caller has loaded it already."""
    fp = _fingerprint(cfg, run)
    record, vocab = run.path("lm", "tuning.json"), vocabulary(cfg, run)
    tuning = json.loads(record.read_text()) if record.is_file() else {}
    arpa = run.path("lm", "words.arpa")
    if tuning.get("fingerprint") == fp:
        if arpa.is_file() and sha256_of(arpa) == tuning.get("arpa_sha256"):
            return _decoder(cfg, run, vocab, tuning["weight"], tuning["word_bonus"],
                            model), tuning
        # Derived from the run's own files: made again rather than read damaged.
        print(f"[lm] {arpa} is missing or not the file that was tuned; making it again")
    print(f"[lm] building the {cfg.decoding.lm.order}-gram word model of the training "
          "transcripts and choosing its weight on validation", flush=True)
    # Training transcripts only: test text must never reach the language model, and
    # validation text neither, so that the choice is made on unseen sentences.
    texts = [e["text"] for e in read_manifest(run.path("data", "train.jsonl"))]
    write_arpa(run.path("lm", "words.arpa"), texts, cfg.decoding.lm.order)
    decoder = _decoder(cfg, run, vocab, 0.0, 0.0, model)
    tuning = _tune(cfg, run, decoder, vocab, fp, len(texts))
    decoder.set_weights(tuning["weight"], tuning["word_bonus"])
    return decoder, tuning


def rescored(cfg: SpeechConfig, run, decoder: CTCLanguageModelDecoder
             ) -> LanguageModelRescoringDecoder:
    """The language model search's ``decoding.beam_width`` best transcripts rescored by
    the attention decoder (its weight and word bonus are those tuned without it)."""
    with_decoder(decoder.model, run)
    return LanguageModelRescoringDecoder(decoder, vocabulary(cfg, run).encode,
                                         cfg.decoding.beam_width, cfg.decoding.ctc_weight)


def configured_decoder(cfg: SpeechConfig, run):
    """The decoder of ``decoding``: its strategy, with the language model if it has one."""
    if cfg.decoding.lm is None:
        return load_recognizer(cfg, run, cfg.decoding.strategy)
    decoder = language_model_decoder(cfg, run)[0]
    return rescored(cfg, run, decoder) if cfg.decoding.strategy == RESCORING else decoder


def evaluation_decoders(cfg: SpeechConfig, run) -> tuple[dict, str, dict | None]:
    """What evaluate reports: ``({name: a function making its decoder}, the configured
    decoder's name, the language model's tuning record or None)``. Greedy decoding is
    always there, the beam search beside the attention rescoring of its N-best, and the
    configured strategy beside the search with the language model."""
    strategy = cfg.decoding.strategy
    names = dict.fromkeys([strategy, "greedy", *(["beam_search"] if strategy == RESCORING
                                                 else [])])
    decoders = {name: (lambda s=name: load_recognizer(cfg, run, s)) for name in names}
    if cfg.decoding.lm is None:
        return decoders, strategy, None
    decoder, tuning = language_model_decoder(cfg, run)
    decoders[LM_STRATEGY] = lambda: decoder
    if strategy != RESCORING:
        return decoders, LM_STRATEGY, tuning
    decoders[RESCORING_LM] = lambda: rescored(cfg, run, decoder)
    return decoders, RESCORING_LM, tuning
