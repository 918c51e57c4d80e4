"""Helpers shared by the tests (fixtures live in ``conftest.py``): toy data (text, and a
tone "speech" corpus), tiny translation models and the ``.keras`` round-trip check."""

from __future__ import annotations

import io
import json
from pathlib import Path

import keras
import numpy as np
import soundfile as sf

from models.seq2seq_translator import Seq2SeqTranslator
from pipelines.speech.config import SPLITS

ROOT = Path(__file__).resolve().parent.parent

TOY_PAIRS = [
    ("ein hund läuft im park .", "a dog runs in the park ."),
    ("eine katze schläft auf dem sofa .", "a cat sleeps on the sofa ."),
    ("zwei männer spielen fußball .", "two men play soccer ."),
    ("ein kind isst einen apfel .", "a child eats an apple ."),
    ("die frau liest ein buch .", "the woman reads a book ."),
    ("ein mann fährt fahrrad .", "a man rides a bike ."),
    ("der hund spielt mit einem ball .", "the dog plays with a ball ."),
    ("kinder schwimmen im see .", "children swim in the lake ."),
]


def assert_keras_round_trip(obj, call, tmp_path, atol=0.0):
    """Save ``obj`` (a model) as .keras, load it back, and compare configs and ``call``
    outputs. Configs are compared as JSON (the .keras file stores tuples as lists, which
    matters for functional models).

    ``call(model)`` returns a tensor or a list/tuple of tensors.
    """
    path = tmp_path / "round_trip.keras"
    obj.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(obj)
    assert _as_json(loaded.get_config()) == _as_json(obj.get_config())
    before, after = call(obj), call(loaded)
    before = before if isinstance(before, (list, tuple)) else [before]
    after = after if isinstance(after, (list, tuple)) else [after]
    for b, a in zip(before, after):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b),
                                   atol=atol)
    return loaded


def _as_json(config):
    return json.loads(json.dumps(config, sort_keys=True, default=str))


SRC_V, TGT_V = 40, 50


def tiny(**overrides):
    config = dict(source_vocab_size=SRC_V, target_vocab_size=TGT_V, embedding_dim=24,
                  encoder_units=12, decoder_units=24, attention_units=8, attentional_dim=24,
                  dropout=0.0)
    config.update(overrides)
    keras.utils.set_random_seed(0)
    model = Seq2SeqTranslator(**config)
    model.build()
    return model


def batch(seed=0, batch_size=3, src_len=7, tgt_len=5):
    rng = np.random.default_rng(seed)
    src = rng.integers(4, SRC_V, (batch_size, src_len)).astype("int32")
    src[0, 4:] = 0  # a shorter sentence, right-padded
    tgt = rng.integers(4, TGT_V, (batch_size, tgt_len)).astype("int32")
    return {"source": src, "target_in": tgt}


def saved_model_client(*args, stdin: str = ""):
    """Run ``tests/saved_model_client.py`` in a fresh Python that cannot import this
    project (only TensorFlow), from outside the repository; its JSON answer."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "saved_model_client.py"),
                           *map(str, args)], input=stdin, capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(os.path.abspath(args[1])), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def tone_corpus(root: Path) -> dict:
    """Manifests of two "words" (a 300 Hz and a 1200 Hz tone) for every split, plus one
    training utterance far too short for its transcript."""
    rng = np.random.default_rng(0)
    t = np.arange(2400) / 8000
    words = {"lo": np.sin(2 * np.pi * 300 * t), "hi": np.sin(2 * np.pi * 1200 * t)}
    manifests = {}
    for split in SPLITS:
        lines = []
        for i in range(8):
            names = [["lo", "hi"][j] for j in rng.integers(2, size=1 + i % 2)]
            audio = np.concatenate([np.r_[words[n], np.zeros(800)] for n in names])
            path = root / split / f"{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.3 * audio, 8000)
            lines.append({"audio_filepath": f"{split}/{i}.wav", "duration": len(audio) / 8000,
                          "text": " ".join(names).upper(), "speaker": f"s{i % 2}"})
        if split == "train":
            sf.write(root / "short.wav", 0.3 * words["lo"][:400], 8000)
            lines.append({"audio_filepath": "short.wav", "duration": 0.05,
                          "text": "lo hi lo hi lo hi"})
        manifests[split] = str(root / f"{split}.jsonl")
        Path(manifests[split]).write_text("".join(json.dumps(x) + "\n" for x in lines))
    return manifests


def serve_downloads(monkeypatch, cache: Path, payload: bytes) -> list[str]:
    """Every download answers ``payload`` and lands in the cache folder ``cache``, with no
    data directory; returns the list the requested URLs are appended to."""
    from data_prep import download

    requested = []

    def fake_urlopen(url, timeout):
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setenv(download.CACHE_DIR_ENV, str(cache))
    monkeypatch.delenv(download.DATA_DIR_ENV, raising=False)
    return requested


def assert_weights_saved_once(export_dir: Path, model) -> None:
    """A SavedModel's variables hold the model's float32 weights once (Keras'
    ``ExportArchive.track`` stored a second copy of every weight)."""
    stored = sum(p.stat().st_size for p in (Path(export_dir) / "variables").iterdir())
    assert stored < 1.25 * 4 * model.count_params() + 2**20, (stored, model.count_params())
