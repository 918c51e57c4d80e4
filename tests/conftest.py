"""Shared fixtures: the real data directory, a toy parallel corpus, tiny models."""

from __future__ import annotations

import builtins
import itertools
import json
import os
import weakref
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tests.helpers import ROOT, TOY_PAIRS  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Real datasets: $PIPELINES_DATA_DIR, else the shared folder beside the repository."""
    path = Path(os.environ.get("PIPELINES_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"no data directory at {path} (set PIPELINES_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def multi30k_dir(data_dir) -> Path:
    path = data_dir / "multi30k" / "data" / "task1" / "raw"
    if not path.is_dir():
        pytest.skip(f"Multi30k not found under {data_dir}")
    return data_dir


def _smoke_run(pipeline, config_name: str, data_dir: Path, tmp_path_factory) -> Path:
    """Run every stage of ``pipelines/configs/<config_name>.yaml`` in a fresh folder."""
    run_dir = tmp_path_factory.mktemp(config_name) / "run"
    config = ROOT / "pipelines" / "configs" / f"{config_name}.yaml"
    code = pipeline.main(["all", "--config", str(config), "--run-dir", str(run_dir),
                          "--data-dir", str(data_dir)])
    assert code == 0, f"the {config_name} run failed"
    return run_dir


@pytest.fixture(scope="session")
def translation_smoke_run(multi30k_dir, tmp_path_factory) -> Path:
    """A finished run of ``translation_smoke.yaml`` (all stages), made once per session.

    Tests that change the run must work on a copy (``shutil.copytree``).
    """
    from pipelines import translation

    return _smoke_run(translation, "translation_smoke", multi30k_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def speech_smoke_run(data_dir, tmp_path_factory) -> Path:
    """A finished run of ``speech_smoke.yaml`` (all stages), made once per session.

    Tests that change the run must work on a copy (``shutil.copytree``); the copy's
    manifests still point to this run's audio.
    """
    from data_prep import fsdd
    from pipelines import speech

    if not (data_dir / fsdd.RECORDINGS).is_dir():
        pytest.skip(f"FSDD not found under {data_dir} (expected {fsdd.RECORDINGS}/)")
    return _smoke_run(speech, "speech_smoke", data_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def speech_streaming_smoke_run(data_dir, tmp_path_factory) -> Path:
    """A finished run of ``speech_smoke_streaming.yaml`` (a causal model), made once per
    session; tests that change the run must work on a copy."""
    from data_prep import fsdd
    from pipelines import speech

    if not (data_dir / fsdd.RECORDINGS).is_dir():
        pytest.skip(f"FSDD not found under {data_dir} (expected {fsdd.RECORDINGS}/)")
    return _smoke_run(speech, "speech_smoke_streaming", data_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def served(translation_smoke_run, speech_streaming_smoke_run, tmp_path_factory):
    """``python -m pipelines.serve`` on copies of the translation and causal speech smoke
    runs (which it exports first), with small limits for the limit tests:
    (``tests.serve_server.Server``, translation run copy, speech run copy)."""
    import shutil

    from tests.serve_server import Server

    root = tmp_path_factory.mktemp("served")
    runs = [root / "translation", root / "speech"]
    for source, copy in zip((translation_smoke_run, speech_streaming_smoke_run), runs):
        shutil.copytree(source, copy)
    server = Server("--translation", runs[0], "--speech", runs[1], "--max-streams", 3,
                    "--max-sentences", 16, "--max-chars", 300, "--max-body-bytes", 300_000,
                    "--max-audio-seconds", 8, "--idle-seconds", 2)
    yield server, *runs
    server.stop()


@pytest.fixture
def toy_corpus(tmp_path) -> dict:
    """Aligned toy files train/val/test in ``tmp_path``: {split: [source, target]}."""
    paths = {}
    for split in ("train", "val", "test"):
        src, tgt = tmp_path / f"{split}.de", tmp_path / f"{split}.en"
        src.write_text("".join(s + "\n" for s, _ in TOY_PAIRS), encoding="utf-8")
        tgt.write_text("".join(t + "\n" for _, t in TOY_PAIRS), encoding="utf-8")
        paths[split] = [str(src), str(tgt)]
    return paths


@pytest.fixture(scope="session")
def toy_translation_run(tmp_path_factory) -> list[str]:
    """A tiny translation model trained for one epoch on ``TOY_PAIRS`` (seconds, not a
    useful model): the command-line arguments that reach it (config, run dir, overrides).
    Tests that change the run must not use it."""
    from pipelines import translation

    root = tmp_path_factory.mktemp("toy_translation")
    paths = {}
    for split in ("train", "val", "test"):
        paths[split] = [str(root / f"{split}.de"), str(root / f"{split}.en")]
        for side, path in enumerate(paths[split]):
            Path(path).write_text("".join(p[side] + "\n" for p in TOY_PAIRS), encoding="utf-8")
    sets = {"data.corpus": "files", "data.paths": json.dumps(paths), "tokenizer.vocab_size": 60,
            "model.embedding_dim": 8, "model.encoder_units": 8, "model.decoder_units": 8,
            "model.attentional_dim": 8, "training.epochs": 1, "decoding.beam_size": 2}
    args = ["--config", str(ROOT / "pipelines" / "configs" / "translation_smoke.yaml"),
            "--run-dir", str(root / "run")]
    args += [a for key, value in sets.items() for a in ("--set", f"{key}={value}")]
    assert translation.main(["prepare", *args]) == 0 and translation.main(["train", *args]) == 0
    return args


@pytest.fixture
def toy_run_copy(toy_translation_run, tmp_path) -> list[str]:
    """``toy_translation_run``'s arguments with a copy of its run directory, for tests
    that change the run."""
    import shutil

    args = list(toy_translation_run)
    at = args.index("--run-dir") + 1
    shutil.copytree(args[at], tmp_path / "run")
    args[at] = str(tmp_path / "run")
    return args


@pytest.fixture(scope="session")
def toy_tokenizer():
    from data_prep.subword_tokenizer import SubwordTokenizer, train_sentencepiece

    texts = [s for pair in TOY_PAIRS for s in pair]
    return SubwordTokenizer(train_sentencepiece(texts, vocab_size=80, model_type="unigram"))


class _RecyclingIds:
    """``id()`` as CPython's allocator may hand it out, deterministically: the id of a
    garbage-collected object goes to the next new object that asks for one."""

    def __init__(self):
        self.live, self.free, self.fresh = {}, [], itertools.count(1)

    def __call__(self, obj):
        entry = self.live.get(builtins.id(obj))
        if entry is None or entry[0]() is not obj:
            fake = self.free.pop() if self.free else next(self.fresh)
            entry = (weakref.ref(obj, lambda _, fake=fake: self.free.append(fake)), fake)
            self.live[builtins.id(obj)] = entry
        return entry[1]


@pytest.fixture
def loading_scope(monkeypatch):
    """Keras' object-sharing scope of ``load_model``, with ids reused as soon as possible,
    so a layer whose construction depends on ids staying unique fails every time."""
    from keras.src.saving import serialization_lib

    monkeypatch.setattr(serialization_lib, "id", _RecyclingIds(), raising=False)
    with serialization_lib.ObjectSharingScope():
        yield
