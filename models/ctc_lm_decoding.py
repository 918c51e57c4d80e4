"""CTC prefix beam search with a word n-gram language model (pyctcdecode over KenLM)."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from models.ctc_decoding import batch_spec, log_probs_and_lengths


def _beam_search(labels: list[str], arpa_path: str, weight: float, word_bonus: float):
    """pyctcdecode's search over a KenLM model read quietly: KenLM prints a progress bar
    while reading an ARPA file, and pyctcdecode warns about a vocabulary as small as
    AN4's (about 100 words), which is not a mistake here."""
    try:
        # Imported here: only runs with a language model need it, and pip installs it
        # apart from the other dependencies (its metadata caps numpy below 2, which
        # TensorFlow needs; it runs on numpy 2): see the Makefile.
        import pyctcdecode
        from pyctcdecode.alphabet import Alphabet
        from pyctcdecode.language_model import LanguageModel, load_unigram_set_from_arpa
    except ImportError as e:
        raise ImportError("a word language model needs pyctcdecode: pip install --no-deps "
                          "pyctcdecode==0.5.0 (make install does)") from e
    import kenlm

    logging.getLogger(pyctcdecode.__name__).setLevel(logging.ERROR)
    config = kenlm.Config()
    config.show_progress = False
    language_model = LanguageModel(kenlm.Model(arpa_path, config),
                                   load_unigram_set_from_arpa(arpa_path),
                                   alpha=weight, beta=word_bonus)
    return pyctcdecode.BeamSearchDecoderCTC(Alphabet.build_alphabet(labels), language_model)


class CTCLanguageModelDecoder:
    """Batch decoding of a ``CTCRecognizer`` with a word language model.

    The model's log-probabilities come from one compiled graph; pyctcdecode's CTC prefix
    beam search then scores each word with ``weight`` times its log10 probability under
    the KenLM model of ``arpa_path`` plus ``word_bonus`` (which offsets the LM's bias
    towards fewer, shorter words), and penalizes partial words outside the LM's
    vocabulary. Called like ``CTCDecoder``: a batch in, label ids of each utterance out.

    Args:
        model: a ``CTCRecognizer``.
        labels: the text of every label id as pyctcdecode reads them: characters with
            ``" "`` between words, or SentencePiece pieces with ``▁`` starting a word; the
            blank's is ``""``.
        encode: the label ids of a transcript (the vocabulary's ``encode``).
        arpa_path: the word n-gram model, an ARPA file.
        weight: the language model weight (pyctcdecode's ``alpha``).
        word_bonus: added per word (pyctcdecode's ``beta``).
        beam_width: prefixes kept.
    """

    def __init__(self, model, labels: list[str], encode, arpa_path, weight: float = 0.5,
                 word_bonus: float = 1.0, beam_width: int = 64):
        if " " not in labels and not any(label.startswith("▁") for label in labels):
            raise ValueError("a word language model needs labels that separate words: the "
                             "space character, or SentencePiece pieces")
        self.model, self.labels, self.beam_width = model, list(labels), beam_width
        self._encode = encode
        self._search = _beam_search(self.labels, str(arpa_path), weight, word_bonus)
        spec = batch_spec(model.config)
        self._forward = tf.function(lambda inputs: log_probs_and_lengths(model, inputs),
                                    input_signature=[spec])

    def set_weights(self, weight: float, word_bonus: float) -> None:
        """Change the language model weight and the word bonus (no reloading)."""
        self._search.reset_params(alpha=weight, beta=word_bonus)

    def log_probs(self, inputs) -> list[np.ndarray]:
        """``[frames, classes]`` log-probabilities of each utterance of a batch."""
        log_probs, lengths = self._forward(inputs)
        log_probs, lengths = np.asarray(log_probs), np.asarray(lengths)
        return [row[:n] for row, n in zip(log_probs, lengths, strict=True)]

    def search(self, log_probs: np.ndarray) -> str:
        """The best transcript of one utterance's log-probabilities."""
        return self._search.decode(log_probs, beam_width=self.beam_width)

    def search_nbest(self, log_probs: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` best transcripts of one utterance (fewer if the search kept fewer),
        best first, with their scores: CTC log probability plus the weighted language
        model score and word bonuses (natural log)."""
        beams = self._search.decode_beams(log_probs, beam_width=self.beam_width)
        return [(beam[0], float(beam[-1])) for beam in beams[:n]]

    def __call__(self, inputs) -> list[list[int]]:
        return [self._encode(self.search(x)) for x in self.log_probs(inputs)]
