"""The training features as TFRecord shards: ``prepare`` writes them (in worker
processes, atomically, resuming after an interruption), ``train`` streams them; the
features, labels and batches are those of the in-memory pipeline."""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from data_prep.audio_features import extract_features, global_stats, normalize_features
from data_prep.file_io import ShardError
from data_prep.manifest import read_manifest
from data_prep.speech_dataset import LABEL_PAD, make_training_dataset
from models.ctc_frames import ctc_frames_needed, min_input_frames
from pipelines import speech
from pipelines.config import load_config
from pipelines.run_dir import RunDir
from pipelines.speech import shards as speech_shards
from pipelines.speech.config import SpeechConfig
from pipelines.speech.data import vocabulary
from pipelines.speech.shards import load_train_features, streaming_dataset, train_shards
from tests.helpers import ROOT, tone_corpus

SMOKE = ROOT / "pipelines" / "configs" / "speech_smoke.yaml"
NO_AUGMENT = ["augment.freq_masks=0", "augment.time_masks=0", "augment.time_stretch=null"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """The tone corpus's manifests: 9 training utterances (3 shards of 4)."""
    return tone_corpus(tmp_path_factory.mktemp("corpus"))


def settings(corpus: dict, *extra: str) -> list[str]:
    return ["data.corpus=manifest", f"data.manifests={json.dumps(corpus)}",
            "shards.utterances=4", "shards.workers=1", *extra]


def run_stage(stage: str, run_dir, overrides: list[str], *args: str) -> int:
    return speech.main([stage, "--config", str(SMOKE), "--run-dir", str(run_dir),
                        *[x for o in overrides for x in ("--set", o)], *args])


def in_memory_features(cfg: SpeechConfig, run: RunDir):
    """The training features as prepare computed them before shards: all at once."""
    entries = read_manifest(run.path("data", "train.jsonl"))
    speeds = cfg.data.speed_perturbation
    raw = [f for speed in speeds for f in
           extract_features([e["audio_filepath"] for e in entries], cfg.features, speed=speed)]
    stats = global_stats(raw) if cfg.features.normalization == "global" else None
    speakers = [None if e.get("speaker") is None else (e["speaker"], speed)
                for speed in speeds for e in entries]
    return normalize_features(raw, cfg.features, stats, speakers), stats


@pytest.mark.parametrize("normalization", ["utterance", "global", "speaker"])
def test_shards_hold_the_in_memory_features_and_labels(tmp_path, corpus, normalization):
    overrides = settings(corpus, f"features.normalization={normalization}",
                         "data.speed_perturbation=[1.0,1.25]")
    assert run_stage("prepare", tmp_path / "r", overrides) == 0
    cfg, run = load_config(SpeechConfig, SMOKE, overrides), RunDir(tmp_path / "r")
    # 2 x 9 utterances, 4 per shard.
    assert len(list(run.path("features").glob("train-*-of-00005.tfrecord"))) == 5
    assert not run.path("features", "train.npz").exists()
    features, labels = load_train_features(cfg, run)
    expected, stats = in_memory_features(cfg, run)
    assert len(features) == len(expected) == 18
    for x, e in zip(features, expected, strict=True):
        # Global statistics add up shard by shard: equal to float rounding.
        np.testing.assert_allclose(x, e, rtol=1e-6, atol=1e-5)
    vocab = vocabulary(cfg)
    assert labels == 2 * [vocab.encode(e["text"])
                          for e in read_manifest(run.path("data", "train.jsonl"))]
    if stats is not None:
        saved = np.load(run.path("features", "stats.npz"))
        np.testing.assert_allclose(saved["mean"], stats[0], rtol=1e-6)
        np.testing.assert_allclose(saved["std"], stats[1], rtol=1e-6)


def test_parallel_extraction_writes_the_shards_one_worker_writes(tmp_path, corpus, capsys):
    overrides = settings(corpus, "features.normalization=speaker")
    for workers in (1, 2):
        assert run_stage("prepare", tmp_path / f"w{workers}", [*overrides,
                                                               f"shards.workers={workers}"]) == 0
    for marker in (tmp_path / "w1" / "features").glob("train-*.json"):
        one, two = (json.loads((tmp_path / w / "features" / marker.name).read_text())
                    for w in ("w1", "w2"))
        assert one == two  # the same bytes (SHA-256), lengths and statistics
    for name in ("train_stats.npz", "val.npz"):
        one, two = (np.load(tmp_path / w / "features" / name) for w in ("w1", "w2"))
        assert all(np.array_equal(one[k], two[k]) for k in one.files)
    capsys.readouterr()
    # The number of workers changes nothing, so it does not make prepare run again.
    assert run_stage("prepare", tmp_path / "w1", [*overrides, "shards.workers=2"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_an_interrupted_prepare_resumes_at_the_missing_shards(tmp_path, corpus, capsys,
                                                               monkeypatch):
    overrides, run_dir = settings(corpus), tmp_path / "r"
    folder = run_dir / "features"
    written = []

    def interrupted(path, *args):
        written.append(path)
        if len(written) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second shard is written
        real_write(path, *args)

    real_write = speech_shards.write_shard
    monkeypatch.setattr(speech_shards, "write_shard", interrupted)
    assert run_stage("prepare", run_dir, overrides) == 130
    monkeypatch.undo()
    # The finished shard and its marker are kept; no partial file is left.
    assert sorted(p.name for p in folder.iterdir()) == ["train-00000-of-00003.json",
                                                       "train-00000-of-00003.tfrecord"]
    first = (folder / "train-00000-of-00003.tfrecord").stat().st_mtime_ns
    capsys.readouterr()
    assert run_stage("prepare", run_dir, overrides) == 0
    out = capsys.readouterr().out
    assert "resuming: 1 of 3 train shards are done" in out
    assert "shard 1 of 3 written" not in out and "shard 3 of 3 written" in out
    assert (folder / "train-00000-of-00003.tfrecord").stat().st_mtime_ns == first

    # A shard without its marker, or cut short, is never trusted: both are written again.
    (folder / "train-00002-of-00003.json").unlink()
    with open(folder / "train-00001-of-00003.tfrecord", "r+b") as f:
        f.truncate(100)
    RunDir(run_dir).invalidate("prepare")  # as if that prepare had not finished
    assert run_stage("prepare", run_dir, overrides) == 0
    out = capsys.readouterr().out
    assert "resuming: 1 of 3 train shards are done" in out and "shard 1 of 3 written" not in out
    assert (folder / "train-00000-of-00003.tfrecord").stat().st_mtime_ns == first
    cfg, run = load_config(SpeechConfig, SMOKE, overrides), RunDir(run_dir)
    features, _ = load_train_features(cfg, run)
    for x, e in zip(features, in_memory_features(cfg, run)[0], strict=True):
        np.testing.assert_array_equal(x, e)
    # --force (changed audio files) trusts no shard.
    assert run_stage("prepare", run_dir, overrides, "--force") == 0
    out = capsys.readouterr().out
    assert "resuming" not in out and "shard 1 of 3 written" in out


def test_a_truncated_shard_is_one_line_naming_it(tmp_path, corpus, capsys):
    overrides = settings(corpus)
    assert run_stage("prepare", tmp_path / "r", overrides) == 0
    shard = tmp_path / "r" / "features" / "train-00001-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    capsys.readouterr()
    assert run_stage("train", tmp_path / "r", overrides) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{shard}: truncated or altered feature shard" in err


def test_a_corrupt_shard_is_named(tmp_path, corpus):
    overrides = settings(corpus)
    assert run_stage("prepare", tmp_path / "r", overrides) == 0
    shard = tmp_path / "r" / "features" / "train-00001-of-00003.tfrecord"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the records' checksums notice
    shard.write_bytes(bytes(data))
    cfg, run = load_config(SpeechConfig, SMOKE, overrides), RunDir(tmp_path / "r")
    shards = train_shards(cfg, run, vocabulary(cfg), run.require("prepare", "train"))
    with pytest.raises(tf.errors.DataLossError):
        for _ in streaming_dataset(shards, cfg, seed=1):
            pass
    with pytest.raises(ShardError, match=rf"{shard}: corrupt feature shard"):
        shards.check()  # what train does on a DataLossError


def utterances(batches) -> list[tuple]:
    """(frames, label ids) of every utterance of ``batches``."""
    return [(int(n), tuple(int(i) for i in y if i != LABEL_PAD))
            for inputs, labels in batches
            for n, y in zip(inputs["feature_lengths"].numpy(), labels.numpy(), strict=True)]


@pytest.mark.parametrize("buffer_mb, same_batches", [(512, True), (0.01, False)])
def test_streamed_epochs(tmp_path, corpus, buffer_mb, same_batches):
    """A buffer that holds the training set gives the in-memory pipeline's batches
    exactly; a small one (shard order shuffled, shards interleaved) other batches of the
    same utterances. Either way an epoch's batches depend only on its seed."""
    overrides = settings(corpus, "features.normalization=global", "training.batch_size=3",
                         f"shards.shuffle_buffer_mb={buffer_mb}",
                         *([] if same_batches else NO_AUGMENT))
    assert run_stage("prepare", tmp_path / "r", overrides) == 0
    cfg, run = load_config(SpeechConfig, SMOKE, overrides), RunDir(tmp_path / "r")
    shards = train_shards(cfg, run, vocabulary(cfg), run.require("prepare", "train"))
    assert shards.skipped == 1 and shards.keep.sum() == 8  # the tone corpus's short one
    features, labels = load_train_features(cfg, run)
    x = [f for f, keep in zip(features, shards.keep, strict=True) if keep]
    y = [ids for ids, keep in zip(labels, shards.keep, strict=True) if keep]
    in_memory = make_training_dataset(
        x, y, cfg.training.batch_size, cfg.augment if cfg.augment.active else None, seed=7,
        min_lengths=[min_input_frames(ctc_frames_needed(ids), cfg.model.conv_layers,
                                     cfg.model.conv_stride) for ids in y])
    streamed = streaming_dataset(shards, cfg, seed=7)
    if same_batches:
        for (a, a_y), (b, b_y) in zip(in_memory, streamed, strict=True):
            np.testing.assert_array_equal(a["features"], b["features"])
            np.testing.assert_array_equal(a_y, b_y)
    else:
        assert shards.shuffle_buffer(buffer_mb, cfg.features.num_features) < 8
        assert sorted(utterances(streamed)) == sorted(utterances(in_memory))
        assert utterances(streaming_dataset(shards, cfg, seed=7)) == utterances(streamed)


def test_bad_audio_in_a_worker_process_is_one_line_naming_it(tmp_path, capsys):
    corpus = tone_corpus(tmp_path / "corpus")
    bad = tmp_path / "corpus" / "train" / "5.wav"
    bad.write_bytes(bad.read_bytes()[:12] + b"\x00garbage" * 10)
    assert run_stage("prepare", tmp_path / "r", settings(corpus, "shards.workers=2")) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"{bad}: cannot read audio" in err
    assert not (tmp_path / "r").exists()


# A prepare's feature extraction in two worker processes, with work for minutes.
BUSY_PREPARE = """
import sys
from data_prep.feature_shards import ShardTask
from data_prep.speech_config import FeatureConfig
from pipelines.speech.shards import computed

tasks = [ShardTask(k, 0, [sys.argv[1]] * 5000, [1.0] * 5000, [-1] * 5000) for k in range(4)]
for _ in computed(tasks, FeatureConfig(), workers=2):
    pass
"""


def _workers_of(pid: int) -> list[int]:
    """The multiprocessing workers whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # not a process, or gone
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_feature_workers_end_when_their_prepare_is_killed(corpus):
    wav = str(Path(corpus["train"]).parent / "train" / "0.wav")
    parent = subprocess.Popen([sys.executable, "-c", BUSY_PREPARE, wav], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while len(workers := _workers_of(parent.pid)) < 2:
            assert time.monotonic() < deadline and parent.poll() is None, "no workers started"
            time.sleep(0.2)
    finally:
        parent.kill()  # SIGKILL: no cleanup of its own
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers)
