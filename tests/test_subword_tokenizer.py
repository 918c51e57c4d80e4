import numpy as np
import pytest
import tensorflow as tf

from data_prep.subword_tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    SubwordTokenizer,
    train_sentencepiece,
)
from tests.helpers import TOY_PAIRS


def test_special_ids(toy_tokenizer):
    assert toy_tokenizer.id_to_piece([PAD_ID, UNK_ID, BOS_ID, EOS_ID]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_graph_and_python_tokenization_agree(toy_tokenizer):
    texts = [s for s, _ in TOY_PAIRS]
    graph = toy_tokenizer.tokenize(tf.constant(texts)).to_list()
    assert graph == toy_tokenizer.encode(texts)
    assert all(PAD_ID not in ids for ids in graph)


def test_round_trip_in_graph_and_python(toy_tokenizer):
    texts = [t for _, t in TOY_PAIRS]
    ids = toy_tokenizer.tokenize(tf.constant(texts))
    assert [s.decode() for s in toy_tokenizer.detokenize(ids).numpy()] == texts
    padded = ids.to_tensor()  # 0-padded dense ids detokenize the same way
    assert [s.decode() for s in toy_tokenizer.detokenize(padded).numpy()] == texts
    with_eos = [x + [EOS_ID, 17, 18] for x in ids.to_list()]  # decode stops at EOS
    assert toy_tokenizer.decode(with_eos) == texts


def test_tokenize_inside_tf_function(toy_tokenizer):
    @tf.function
    def f(x):
        return toy_tokenizer.tokenize(x).to_tensor()

    out = f(tf.constant(["a dog runs ."]))
    np.testing.assert_array_equal(out.numpy()[0], toy_tokenizer.encode(["a dog runs ."])[0])


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_training_is_deterministic(model_type):
    texts = [s for pair in TOY_PAIRS for s in pair]
    a = train_sentencepiece(texts, 60, model_type)
    assert a == train_sentencepiece(texts, 60, model_type)
    assert SubwordTokenizer(a).vocab_size <= 60


def test_bad_model_type():
    with pytest.raises(ValueError, match="unigram' or 'bpe'"):
        train_sentencepiece(["a b c"], 10, "wordpiece")
