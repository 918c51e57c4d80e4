"""Architecture configs and the allowed values of their options.

Free of Keras and TensorFlow, so that a pipeline can load and validate an experiment
config (and answer ``--help``) before paying for the TensorFlow import. The layers and
models check their arguments against the same tuples.
"""

from __future__ import annotations

from dataclasses import dataclass

CELL_TYPES = ("gru", "lstm", "rnn")  # models.rnn_cells.CELLS maps them to Keras cells
SCORES = ("additive", "dot", "general", "scaled_dot")  # models.attention.Attention
INITS = ("bridge", "zeros")  # decoder start states (models.attention_decoder)
ATTENTION_OUTPUTS = ("tanh", "residual_norm")  # the attentional vector (attention_decoder)
STRATEGIES = ("greedy", "beam_search", "closed_set")  # models.ctc_decoding.CTCDecoder


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


@dataclass
class CTCRecognizerConfig:
    """Architecture hyper-parameters (the ``model:`` section of a speech config)."""

    num_features: int = 0  # set from the feature config by the pipeline
    vocab_size: int = 0  # characters + blank, set from the vocabulary by the pipeline
    blank_index: int = 0  # set from data.blank_index by the pipeline
    conv_layers: int = 1  # convolutional front end layers (0: none)
    conv_channels: int = 128
    conv_kernel: int = 5  # in frames
    conv_stride: int = 2  # time subsampling of each conv layer
    cell: str = "gru"  # gru | lstm | rnn
    rnn_layers: int = 2
    rnn_units: int = 128  # per direction
    dropout: float = 0.2
