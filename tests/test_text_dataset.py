import numpy as np

from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID
from data_prep.text_dataset import make_source_batches, make_training_dataset
from tests.helpers import TOY_PAIRS

SRC = [s for s, _ in TOY_PAIRS] * 8
TGT = [t for _, t in TOY_PAIRS] * 8


def batches(tok, **kw):
    ds = make_training_dataset(SRC, TGT, tok, tok, max_tokens=kw.pop("max_tokens", 64),
                               max_length=40, **kw)
    return [(x["source"].numpy(), x["target_in"].numpy(), y.numpy()) for x, y in ds]


def test_every_pair_once_with_bos_eos_and_shift(toy_tokenizer):
    out = batches(toy_tokenizer, seed=1)
    assert sum(len(s) for s, _, _ in out) == len(SRC)
    seen = []
    for src, tin, tout in out:
        assert (tin[:, 0] == BOS_ID).all()
        # target_out is target_in shifted left by one; EOS ends every real target.
        np.testing.assert_array_equal(tin[:, 1:], np.where(tout[:, :-1] == EOS_ID, tin[:, 1:], tout[:, :-1]))
        for row_src, row_out in zip(src, tout):
            real = row_out[row_out != PAD_ID]
            assert real[-1] == EOS_ID and (real[:-1] != EOS_ID).all()
            assert row_src[row_src != PAD_ID][-1] == EOS_ID
            seen.append(toy_tokenizer.decode([row_src])[0])
    assert sorted(seen) == sorted(SRC)


def test_batches_respect_token_budget(toy_tokenizer):
    for src, tin, _ in batches(toy_tokenizer, seed=1, max_tokens=64):
        longest = max(src.shape[1], tin.shape[1] + 1)
        # A bucket's batch size is budget // bucket bound, so padded tokens stay near it.
        assert src.shape[0] * longest <= 64 + src.shape[0] * 4


def test_same_seed_same_batches_other_seed_other_order(toy_tokenizer):
    a, b, c = (batches(toy_tokenizer, seed=s) for s in (3, 3, 4))
    assert all((x[0] == y[0]).all() for x, y in zip(a, b)) and len(a) == len(b)
    assert any(x[0].shape != y[0].shape or (x[0] != y[0]).any() for x, y in zip(a, c))


def test_source_batches_sorted_and_order_restores_input(toy_tokenizer):
    ds, order = make_source_batches(SRC[:8], toy_tokenizer, max_tokens=24)
    rows = [row for batch in ds for row in batch.numpy()]
    decoded = toy_tokenizer.decode(rows)
    restored = [""] * 8
    for position, text in zip(order, decoded):
        restored[position] = text
    assert restored == SRC[:8]
    lengths = [int((r != PAD_ID).sum()) for r in rows]
    assert lengths == sorted(lengths, reverse=True)
