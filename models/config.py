"""Architecture configs and the allowed values of their options.

Free of Keras and TensorFlow, so that a pipeline can load and validate an experiment
config (and answer ``--help``) before paying for the TensorFlow import. The layers and
models check their arguments against the same tuples.
"""

from __future__ import annotations

from dataclasses import dataclass

from data_prep.config_checks import ConfigError, at_least, choice, fraction, signature_without

CELL_TYPES = ("gru", "lstm", "rnn")  # models.rnn_cells.CELLS maps them to Keras cells
SCORES = ("additive", "dot", "general", "scaled_dot")  # models.attention.Attention
INITS = ("bridge", "zeros")  # decoder start states (models.attention_decoder)
ATTENTION_OUTPUTS = ("tanh", "residual_norm")  # the attentional vector (attention_decoder)
STRATEGIES = ("greedy", "beam_search", "closed_set")  # models.ctc_decoding.CTCDecoder
CONV_TYPES = ("1d", "2d")  # the speech front end (models.ctc_recognizer)


@dataclass
class Seq2SeqConfig:
    """Architecture hyper-parameters (the ``model:`` section of a translation config)."""

    source_vocab_size: int = 0  # set from the tokenizer by the pipeline
    target_vocab_size: int = 0
    embedding_dim: int = 256
    cell: str = "gru"  # gru | lstm | rnn
    encoder_layers: int = 1
    encoder_units: int = 256  # per direction
    decoder_layers: int = 1
    decoder_units: int = 512
    attention: str = "scaled_dot"  # additive (Bahdanau) | dot | general (Luong) | scaled_dot
    attention_units: int = 256  # additive and scaled_dot scorers only
    attentional_dim: int = 512  # = decoder_units for residual_norm; = embedding_dim if tied
    attention_output: str = "residual_norm"  # residual_norm | tanh (Luong)
    decoder_init: str = "zeros"  # zeros | bridge (from the encoder's final states)
    input_feeding: bool = False
    tie_embeddings: bool = False
    dropout: float = 0.1

    def validate(self, where):
        choice(self.cell, CELL_TYPES, f"{where}.cell")
        choice(self.attention, SCORES, f"{where}.attention")
        choice(self.attention_output, ATTENTION_OUTPUTS, f"{where}.attention_output")
        choice(self.decoder_init, INITS, f"{where}.decoder_init")
        at_least(self, where, 1, "embedding_dim", "encoder_layers", "encoder_units",
                 "decoder_layers", "decoder_units", "attention_units", "attentional_dim")
        fraction(self.dropout, f"{where}.dropout")
        if self.tie_embeddings and self.attentional_dim != self.embedding_dim:
            raise ConfigError(f"{where}.tie_embeddings: needs {where}.attentional_dim "
                              f"({self.attentional_dim}) equal to {where}.embedding_dim "
                              f"({self.embedding_dim})")
        if self.attention_output == "residual_norm" and self.attentional_dim != self.decoder_units:
            raise ConfigError(f"{where}.attentional_dim: must be {where}.decoder_units "
                              f"({self.decoder_units}) for attention_output=residual_norm "
                              f"(h + W context), got {self.attentional_dim}")


@dataclass
class CTCRecognizerConfig:
    """Architecture hyper-parameters (the ``model:`` section of a speech config)."""

    num_features: int = 0  # set from the feature config by the pipeline
    vocab_size: int = 0  # characters + blank, set from the vocabulary by the pipeline
    blank_index: int = 0  # set from data.blank_index by the pipeline
    conv_layers: int = 1  # convolutional front end layers (0: none)
    # 1d: over time, the feature bins are the input channels. 2d: over time and frequency
    # (3 bins, frequency subsampled 2x per layer), so a pattern shifted in frequency
    # (another speaker's formants) meets the same filters; the RNN reads each frame's
    # frequency x channel map, flattened.
    conv_type: str = "1d"
    conv_channels: int = 128
    conv_kernel: int = 5  # in frames
    conv_stride: int = 2  # time subsampling of each conv layer
    cell: str = "gru"  # gru | lstm | rnn
    rnn_layers: int = 2
    rnn_units: int = 128  # per direction
    dropout: float = 0.2
    # Streaming: forward-only RNNs and convolutions that see no future frames beyond
    # ``lookahead`` input frames (of each conv layer), so the model can run on a stream.
    causal: bool = False
    lookahead: int = 0  # causal only: right context of each conv layer, in its input frames
    # Intermediate CTC (Lee & Watanabe 2021; ESPnet's interctc_weight): training also
    # scores the outputs of RNN layer ``intermediate_ctc_layer`` (1-based; 0: off) with CTC
    # through an output layer of their own, the loss (1 - w) x top CTC + w x that one with
    # w = ``intermediate_ctc_weight``. A regularizer: inference reads the top layer only.
    intermediate_ctc_layer: int = 0
    intermediate_ctc_weight: float = 0.3

    # Fields added after runs were made: left out of train's fingerprint while they have
    # their default values, so those runs keep their fingerprints.
    LATER_FIELDS = ("conv_type", "intermediate_ctc_layer", "intermediate_ctc_weight")

    def signature(self) -> dict:
        """The fields, for train's fingerprint (``LATER_FIELDS`` only when changed)."""
        return signature_without(self, self.LATER_FIELDS)

    def validate(self, where):
        choice(self.cell, CELL_TYPES, f"{where}.cell")
        choice(self.conv_type, CONV_TYPES, f"{where}.conv_type")
        at_least(self, where, 1, "conv_channels", "conv_kernel", "conv_stride", "rnn_layers",
                 "rnn_units")
        at_least(self, where, 0, "conv_layers", "lookahead", "intermediate_ctc_layer")
        fraction(self.dropout, f"{where}.dropout")
        if self.intermediate_ctc_layer >= self.rnn_layers:
            raise ConfigError(f"{where}.intermediate_ctc_layer: an RNN layer below the top "
                              f"one (1 to {self.rnn_layers - 1}; 0: off), got "
                              f"{self.intermediate_ctc_layer}")
        if not 0.0 < self.intermediate_ctc_weight < 1.0:
            raise ConfigError(f"{where}.intermediate_ctc_weight: must be in (0, 1), got "
                              f"{self.intermediate_ctc_weight!r}")
        if self.lookahead and not self.causal:
            raise ConfigError(f"{where}.lookahead: only for causal models (a bidirectional "
                              "model sees the whole utterance)")
        if self.causal and self.conv_layers and self.lookahead > self.conv_kernel - 1:
            raise ConfigError(f"{where}.lookahead: at most conv_kernel - 1 "
                              f"({self.conv_kernel - 1}), got {self.lookahead}")
        if self.causal and self.conv_layers and self.conv_kernel < self.conv_stride:
            # A stream keeps the last kernel - stride frames of each conv layer's input.
            raise ConfigError(f"{where}.conv_kernel: a causal model needs conv_kernel >= "
                              f"conv_stride ({self.conv_stride}), got {self.conv_kernel}")


@dataclass
class AttentionDecoderConfig:
    """An attention decoder over a speech encoder (the ``attention_decoder:`` section of a
    speech config; ``models.ctc_attention_recognizer``): a hybrid CTC/attention model.

    The decoder is ``models.attention_decoder.AttentionDecoder`` (the translator's) with
    zero start states and the residual attentional vector ``LayerNorm(h + W context)``;
    its tokens are the CTC label ids plus one id for <sos/eos>.
    """

    cell: str = "lstm"  # gru | lstm | rnn
    layers: int = 1
    units: int = 320
    embedding_dim: int = 128
    attention: str = "scaled_dot"  # additive (Bahdanau) | dot | general (Luong) | scaled_dot
    attention_units: int = 256  # additive and scaled_dot scorers only
    input_feeding: bool = False  # feed each step's attentional vector to the next step
    dropout: float = 0.1
    label_smoothing: float = 0.1  # of the decoder's cross-entropy
    # Training loss: ctc_weight * CTC + (1 - ctc_weight) * cross-entropy, both summed over
    # an utterance's tokens and averaged over utterances. Above 0: the CTC head makes the
    # N-best lists that attention rescoring reorders.
    ctc_weight: float = 0.3

    def validate(self, where):
        choice(self.cell, CELL_TYPES, f"{where}.cell")
        choice(self.attention, SCORES, f"{where}.attention")
        at_least(self, where, 1, "layers", "units", "embedding_dim", "attention_units")
        fraction(self.dropout, f"{where}.dropout")
        fraction(self.label_smoothing, f"{where}.label_smoothing")
        if not 0.0 < self.ctc_weight <= 1.0:
            raise ConfigError(f"{where}.ctc_weight: must be in (0, 1] (the CTC head makes "
                              f"the hypotheses the decoder rescores), got {self.ctc_weight!r}")
