"""A few training steps of a tiny translation model, on one device or under
``MirroredStrategy`` over two logical CPU devices; prints the losses and a weights file.

Run in its own process (logical devices must be set before TensorFlow starts):

    python -m tests.distributed_steps none|mirrored OUT.npz [--mixed-precision NAME]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from data_prep.special_ids import PAD_ID  # noqa: E402
from models.losses import MaskedLabelSmoothingLoss  # noqa: E402
from pipelines import distribute, trainer  # noqa: E402
from pipelines.train_steps import Steps, run_epoch  # noqa: E402
from tests.helpers import SRC_V, TGT_V, tiny  # noqa: E402


def batches(seed=0, count=4):
    """Global batches of different sizes and lengths, padded, odd-sized ones included."""
    rng = np.random.default_rng(seed)
    out = []
    # 1 row: one replica of two gets an empty share.
    for size, src_len, tgt_len in [(5, 7, 6), (4, 9, 5), (1, 6, 8), (3, 5, 4)][:count]:
        src = rng.integers(4, SRC_V, (size, src_len)).astype("int32")
        tgt = rng.integers(4, TGT_V, (size, tgt_len + 1)).astype("int32")
        for row in range(size):  # ragged lengths: pad the ends
            src[row, rng.integers(2, src_len + 1):] = PAD_ID
            tgt[row, rng.integers(2, tgt_len + 2):] = PAD_ID
        out.append(({"source": src, "target_in": tgt[:, :-1]}, tgt[:, 1:]))
    return out


def dataset():
    data = batches()
    return tf.data.Dataset.from_generator(
        lambda: iter(data),
        output_signature=({"source": tf.TensorSpec([None, None], tf.int32),
                           "target_in": tf.TensorSpec([None, None], tf.int32)},
                          tf.TensorSpec([None, None], tf.int32)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("distribution", choices=["none", "mirrored"])
    p.add_argument("out")
    p.add_argument("--mixed-precision", default="none")
    args = p.parse_args()
    config = trainer.TrainingConfig(learning_rate=0.01, clip_norm=1.0,
                                    mixed_precision=args.mixed_precision)
    strategy, _ = distribute.current(args.distribution)
    with strategy.scope(), trainer._dtype_policy(args.mixed_precision):
        model = trainer.build_and_compile(tiny(), config, loss=MaskedLabelSmoothingLoss(0.1))
        model.optimizer.build(model.trainable_variables)
    steps = Steps(model, strategy)
    callbacks = keras.callbacks.CallbackList([], model=model)
    losses = [run_epoch(steps, dataset, callbacks, training=True, stop=lambda: False)["loss"]
              for _ in range(3)]
    np.savez(args.out, losses=np.array(losses), replicas=strategy.num_replicas_in_sync,
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})


if __name__ == "__main__":
    main()
