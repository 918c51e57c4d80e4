import keras
import numpy as np
import pytest
import tensorflow as tf

from data_prep.special_ids import BOS_ID, EOS_ID, PAD_ID
from models.ctc_decoding import ctc_alignment
from models.decoding import Translator, beam_search, greedy_search
from tests.helpers import batch, tiny


@pytest.mark.parametrize("variant", [dict(cell="gru"), dict(cell="lstm", input_feeding=False,
                                                            attention="additive")])
def test_beam_one_is_exactly_greedy(variant):
    model = tiny(**variant)
    src = batch(batch_size=6)["source"]
    greedy = Translator(model, beam_size=1)(src).numpy()
    beam = tf.function(lambda s: beam_search(model, s, tf.shape(greedy)[1], 1, 0.6))(src).numpy()
    np.testing.assert_array_equal(beam, greedy)


def test_beam_one_is_exactly_greedy_in_mixed_precision():
    """float16 log-probabilities can tie where the logits differ (this model and batch
    reach such a step): greedy search breaks the tie as beam search's top-1 does."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = tiny(cell="lstm", input_feeding=True, decoder_layers=2, decoder_init="bridge")
    finally:
        keras.config.set_dtype_policy(policy)
    src = batch(batch_size=7, src_len=9, seed=1)["source"]
    greedy = tf.function(lambda s: greedy_search(model, s, 12))(src)[0].numpy()
    beam = tf.function(lambda s: beam_search(model, s, 12, 1, 0.0))(src).numpy()
    np.testing.assert_array_equal(beam, greedy)


def well_formed(ids):
    for row in ids:
        assert BOS_ID not in row
        if EOS_ID in row:
            end = list(row).index(EOS_ID)
            assert (row[end + 1:] == PAD_ID).all()
            assert (row[:end] != PAD_ID).all()


def test_outputs_are_well_formed_and_bounded():
    model = tiny()
    src = batch(batch_size=4)["source"]
    for beam in (1, 4):
        out = Translator(model, beam_size=beam, length_penalty=1.0, max_length_ratio=1.0,
                         max_length_offset=3)(src).numpy()
        assert out.shape[0] == 4 and out.shape[1] <= 7 + 3
        well_formed(out)


def test_beam_search_is_per_sentence():
    """A sentence decodes the same alone or inside a batch (padding and tiling are right)."""
    model = tiny()
    src = batch(batch_size=4)["source"]
    together = Translator(model, beam_size=3)(src).numpy()
    alone = Translator(model, beam_size=3)(src[:1, :4]).numpy()
    n = min(alone.shape[1], together.shape[1])
    np.testing.assert_array_equal(alone[0, :n], together[0, :n])


def lengths_before_eos(tokens):
    return [list(row).index(EOS_ID) if EOS_ID in row else len(row) for row in tokens]


def ending_at_different_steps(model, src):
    """Raise EOS's output bias until greedy search ends ``src``'s sentences at three
    different steps or more: the case where the searches drop finished sentences from
    the batch (a random model otherwise writes to the end)."""
    bias = model.decoder.projection.bias
    for eos_bias in np.linspace(0.0, 3.0, 31):
        bias.assign(tf.tensor_scatter_nd_update(bias, [[EOS_ID]], [eos_bias]))
        lengths = lengths_before_eos(Translator(model)(src).numpy())
        if len(set(lengths)) >= 3:
            return
    pytest.fail(f"no EOS bias ends the sentences at different steps: {lengths}")


def test_greedy_rows_leave_the_batch_at_eos_and_decode_as_alone():
    """Sentences that end early leave the loop; every row's tokens and attention are
    still what decoding it alone gives."""
    model, src = tiny(), batch(batch_size=6, src_len=9)["source"]
    ending_at_different_steps(model, src)
    tokens, attention = (x.numpy() for x in Translator(model).greedy_with_attention(src))
    well_formed(tokens)
    np.testing.assert_array_equal(Translator(model)(src).numpy(), tokens)
    for i, length in enumerate(lengths_before_eos(tokens)):
        alone, alone_attention = (x.numpy() for x in
                                  Translator(model).greedy_with_attention(src[i:i + 1]))
        np.testing.assert_array_equal(alone[0], tokens[i])
        np.testing.assert_allclose(alone_attention[0], attention[i], atol=1e-5)
        assert not attention[i, length + 1:].any()  # nothing written after EOS


def test_beam_search_sentences_leave_the_batch_and_decode_as_alone():
    model, src = tiny(), batch(batch_size=6, src_len=9)["source"]
    ending_at_different_steps(model, src)
    together = Translator(model, beam_size=3, length_penalty=0.6)(src).numpy()
    assert len(set(lengths_before_eos(together))) >= 2
    well_formed(together)
    for i in range(len(src)):
        alone = Translator(model, beam_size=3, length_penalty=0.6)(src[i:i + 1]).numpy()
        np.testing.assert_array_equal(alone[0], together[i])


def test_bad_beam_size():
    with pytest.raises(ValueError, match="beam_size"):
        Translator(tiny(), beam_size=0)


def _spikes(frames: int, classes: int, spikes: dict) -> np.ndarray:
    """Log-probabilities: blank (class 0) everywhere but at ``spikes`` {frame: label}."""
    probs = np.full((frames, classes), 1e-4)
    probs[:, 0] = 1.0
    for t, label in spikes.items():
        probs[t] = 1e-4
        probs[t, label] = 1.0
    return np.log(probs / probs.sum(axis=1, keepdims=True))


def test_ctc_alignment_finds_each_label_where_the_model_put_it():
    log_probs = _spikes(12, 5, {2: 1, 5: 2, 6: 2, 9: 3})
    assert ctc_alignment(log_probs, [1, 2, 3], 0) == [2, 6, 9]  # a label's last frame
    # Repeated labels need a blank between them; the alignment keeps both spikes.
    assert ctc_alignment(_spikes(12, 5, {2: 1, 4: 1, 9: 3}), [1, 1, 3], 0) == [2, 4, 9]
    # A transcript the model did not hear is still aligned monotonically, inside the frames.
    frames = ctc_alignment(log_probs, [4, 4, 4], 0)
    assert frames == sorted(frames) and len(set(frames)) == 3 and frames[-1] <= 11


def test_ctc_alignment_needs_enough_frames():
    with pytest.raises(ValueError, match="3 frames cannot hold"):
        ctc_alignment(_spikes(3, 5, {}), [1, 1, 3], 0)
