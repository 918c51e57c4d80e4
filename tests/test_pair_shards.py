import gzip
import json

import pytest

from data_prep.file_io import ShardError, iter_lines, read_lines
from data_prep.pair_shards import (
    index_path,
    pair_dataset,
    verified_shards,
    write_pair_shards,
)
from data_prep.subword_tokenizer import reservoir_sample

PAIRS = [([i, i + 1] * (i % 3 + 1), [100 + i] * (i % 4 + 1)) for i in range(1, 24)]


def read_back(paths, **kwargs):
    return [tuple(x.numpy().tolist() for x in pair) for pair in pair_dataset(paths, **kwargs)]


def test_shards_round_trip_every_pair_once(tmp_path):
    shards = write_pair_shards(iter(PAIRS), tmp_path, "train", pairs_per_shard=5)
    assert [s["pairs"] for s in shards] == [5, 5, 5, 5, 3]
    paths = verified_shards(tmp_path, "train")
    assert [p.name for p in paths] == [f"train-{i:05d}.tfrecord" for i in range(5)]
    read = read_back(paths, seed=None, shuffle=False, shuffle_buffer=1)
    assert sorted(read) == sorted(PAIRS)


def test_shuffled_order_is_seeded(tmp_path):
    paths = [tmp_path / s["file"] for s in write_pair_shards(PAIRS, tmp_path, "train", 4)]
    first = read_back(paths, seed=7, shuffle=True, shuffle_buffer=10)
    assert first == read_back(paths, seed=7, shuffle=True, shuffle_buffer=10)
    assert first != read_back(paths, seed=8, shuffle=True, shuffle_buffer=10)
    assert sorted(first) == sorted(PAIRS)


def test_rewriting_removes_stale_shards(tmp_path):
    write_pair_shards(PAIRS, tmp_path, "train", 2)
    write_pair_shards(PAIRS[:3], tmp_path, "train", 2)
    assert sorted(p.name for p in tmp_path.glob("train-*.tfrecord")) == [
        "train-00000.tfrecord", "train-00001.tfrecord"]
    assert sorted(read_back(verified_shards(tmp_path, "train"), seed=None, shuffle=False,
                            shuffle_buffer=1)) == sorted(PAIRS[:3])


def test_a_failing_stream_leaves_no_partial_shard(tmp_path):
    def pairs():
        yield from PAIRS[:7]
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError):
        write_pair_shards(pairs(), tmp_path, "train", 5)
    # The complete first shard stays, the half-written second never appears, and without
    # an index nothing is trusted.
    assert [p.name for p in tmp_path.iterdir()] == ["train-00000.tfrecord"]
    with pytest.raises(ShardError, match="missing or unreadable shard index"):
        verified_shards(tmp_path, "train")


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_shard_is_named(tmp_path, damage):
    write_pair_shards(PAIRS, tmp_path, "train", 10)
    shard = tmp_path / "train-00001.tfrecord"
    data = shard.read_bytes()
    if damage == "truncate":
        shard.write_bytes(data[:-3])
    elif damage == "flip":
        shard.write_bytes(data[:20] + bytes([data[20] ^ 1]) + data[21:])
    else:
        shard.unlink()
    with pytest.raises(ShardError) as e:
        verified_shards(tmp_path, "train")
    assert str(shard) in str(e.value)


def test_index_lists_counts_and_checksums(tmp_path):
    write_pair_shards(PAIRS, tmp_path, "train", 10)
    index = json.loads(index_path(tmp_path, "train").read_text())
    assert sum(s["pairs"] for s in index["shards"]) == len(PAIRS)
    assert all(len(s["sha256"]) == 64 for s in index["shards"])


def test_reservoir_sample_keeps_small_inputs_whole_and_samples_large_ones():
    assert reservoir_sample(iter(range(10)), 10) == list(range(10))
    assert reservoir_sample(range(10), 50) == list(range(10))
    sample = reservoir_sample(iter(range(10_000)), 100, seed=3)
    assert len(sample) == len(set(sample)) == 100
    assert sample == reservoir_sample(range(10_000), 100, seed=3)
    # Uniform: the sample is spread over the whole stream, not its head.
    assert max(sample) > 5_000 and min(sample) < 5_000


def test_iter_lines_streams_what_read_lines_reads(tmp_path):
    text = "eins\r\nzwei\u2028drei\n\nvier"
    plain, packed = tmp_path / "a.txt", tmp_path / "a.txt.gz"
    plain.write_bytes(text.encode("utf-8"))
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    assert list(iter_lines(plain)) == read_lines(packed) == ["eins", "zwei\u2028drei", "", "vier"]
