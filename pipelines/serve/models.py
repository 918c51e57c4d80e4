"""What the server loads from run directories: the exported SavedModels (exported first
when a run has none, or an outdated one), and the streaming step of a causal speech model.

Every model call goes through the pipelines' own code or exports: the SavedModels'
``translate`` and ``transcribe`` signatures (which ``export`` proves equal to the
``translate`` and ``transcribe`` stages), ``load_audio`` to read uploads as
``transcribe`` reads files, and ``stream_utterance`` with a TFLite ``tflite_runner``
as ``stream --tflite`` runs it.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from data_prep.audio_features import AudioError, load_audio
from pipelines import cli
from pipelines.config import ConfigError, load_config
from pipelines.run_dir import RunDir
from pipelines.speech.config import SpeechConfig
from pipelines.translation.config import TranslationConfig
from pipelines.translation.inference import export_signatures

STREAM_VARIANTS = ("int8", "float16", "float32")  # the TFLite step models export writes


def open_run(root, pipeline: str, config_cls):
    """The validated config and RunDir of a ``pipeline`` run; ConfigError otherwise."""
    run = RunDir(root)
    info = run.path("run.json")
    if not info.is_file():
        raise ConfigError(f"{root}: not a run directory (no run.json); train a model first")
    owner = json.loads(info.read_text())["pipeline"]
    if owner != pipeline:
        raise ConfigError(f"{root}: a {owner} run, not a {pipeline} one")
    return load_config(config_cls, run.path("config.yaml"), recorded=True), run


def exported(pipeline: str, cfg, run: RunDir) -> None:
    """Run the pipeline's export stage (a no-op, printing "up to date", when current)."""
    import importlib

    stages = importlib.import_module(f"pipelines.{pipeline}.stages")
    run.lock()  # as the command line's export would: no other stage may change the run
    try:
        ctx = cli.Context(cfg, run, None, False, pipeline=pipeline,
                          made_from=stages.made_from(cfg))
        ctx.run_stage("export", stages.export)
    finally:
        run.unlock()


def load_export(run: RunDir):
    """The run's exported SavedModel; ConfigError naming it when it cannot be loaded."""
    path = run.path("export")
    try:
        return tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{path}: a damaged SavedModel ({first}); rerun the export stage "
                          "with --force") from None


def read_metrics(run: RunDir, keys) -> dict | None:
    """The test scores of ``metrics.json`` (None before the evaluate stage)."""
    path = run.path("metrics.json")
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return {k: metrics[k] for k in keys if k in metrics}


class Translation:
    """The ``translate`` signature of a translation run's SavedModel (strings -> strings),
    or with ``greedy`` its ``translate_greedy`` one (greedy search instead of the run's
    beam search: about a BLEU point lower, several times the throughput under load)."""

    def __init__(self, root, greedy: bool = False):
        cfg, run = open_run(root, "translation", TranslationConfig)
        exported("translation", cfg, run)
        greedy = greedy and "translate_greedy" in export_signatures(cfg.decoding)
        scores = ("bleu", "chrf", "beam_size")
        test = read_metrics(run, (*scores, "test_sentences", "greedy"))
        # evaluate scores both searches: report the served one (None before evaluate).
        greedy_test = test.pop("greedy", None) if test else None
        if greedy and test is not None:
            if greedy_test is None:
                raise ConfigError(f"{run.path('metrics.json')}: no greedy-search scores (an "
                                  "evaluate from before they were recorded); rerun evaluate "
                                  "with --force, or serve without --greedy")
            test.update({k: greedy_test[k] for k in scores})
        # The loaded object owns the variables its functions read: keep it alive.
        self.model = load_export(run)
        self._translate = self.model.translate_greedy if greedy else self.model.translate
        m = cfg.model
        self.info = {
            "run": cfg.name, "source_lang": cfg.data.source_lang,
            "target_lang": cfg.data.target_lang,
            "model": f"{m.cell} {m.encoder_layers}x{m.encoder_units} bidirectional encoder, "
                     f"{m.decoder_layers}x{m.decoder_units} decoder, {m.attention} attention",
            "beam_size": 1 if greedy else cfg.decoding.beam_size,
            "test": test,
        }

    def __call__(self, texts: list[str]) -> list[str]:
        output = self._translate(tf.constant(texts, tf.string)).numpy()
        return [t.decode("utf-8") for t in output]


class Speech:
    """A speech run's SavedModel (``transcribe``) and, for a causal model, its streaming
    step and a pool of TFLite interpreters (one per live stream at a time)."""

    def __init__(self, root, stream_variant: str = "int8"):
        from pipelines.speech.data import vocabulary
        from pipelines.speech.streaming import final_search, stream_step

        cfg, run = open_run(root, "speech", SpeechConfig)
        exported("speech", cfg, run)
        self.model = load_export(run)
        self.sample_rate = cfg.features.sample_rate
        self.vocab = vocabulary(cfg, run)
        self.step = stream_step(cfg, run) if cfg.model.causal else None
        run.lock()  # the language model may be built into the run first, as evaluate would
        try:
            self.final = final_search(cfg, run, self.step) if self.step else None
        finally:
            run.unlock()
        self.tflite = run.path("tflite", f"stream_{stream_variant}.tflite")
        # LiteRT interpreters are not thread-safe, and making one briefly silences the
        # process's stderr (tflite_runner): made under a lock, reused stream after stream.
        self._free: list[Callable] = []
        self._lock = threading.Lock()
        m = cfg.model
        self.info = {
            "run": cfg.name, "corpus": cfg.data.corpus, "sample_rate": self.sample_rate,
            "features": f"{cfg.features.n_mels} {cfg.features.kind}, "
                        f"{cfg.features.normalization} normalization",
            "model": f"{m.conv_layers} {m.conv_type} conv + {m.rnn_layers}x{m.rnn_units} "
                     f"{'causal ' if m.causal else 'bidirectional '}{m.cell}",
            "decoding": cfg.decoding.strategy,
            "streaming": ({"chunk_ms": cfg.streaming.chunk_ms, "step": f"TFLite {stream_variant}",
                           "decoding": "greedy", "final": cfg.streaming.final}
                          if self.step else None),
            "test": read_metrics(run, ("wer", "cer", "utterance_accuracy", "strategy",
                                       "test_utterances")),
        }

    def read_upload(self, data: bytes, suffix: str) -> np.ndarray:
        """Samples of an uploaded file at the model's rate, read as ``transcribe`` reads
        files (``load_audio``, from a private temporary file: its decoders want a path);
        AudioError with the message naming "the upload", not the temporary file."""
        fd, path = tempfile.mkstemp(suffix=suffix, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return load_audio(path, self.sample_rate)
        except AudioError as e:
            raise AudioError(str(e).replace(path, "the upload")) from None
        finally:
            Path(path).unlink(missing_ok=True)

    def transcribe(self, audio: np.ndarray) -> str:
        text = self.model.transcribe(tf.constant(audio[None, :], tf.float32),
                                     tf.constant([len(audio)], tf.int32))
        return text.numpy()[0].decode("utf-8")

    def acquire_runner(self) -> Callable:
        from pipelines.speech.streaming import tflite_runner

        with self._lock:
            return self._free.pop() if self._free else tflite_runner(self.tflite, self.step)

    def release_runner(self, runner: Callable) -> None:
        with self._lock:
            self._free.append(runner)
