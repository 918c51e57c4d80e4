"""``python -m pipelines.serve`` against the pipelines: a real server (uvicorn in a child
process, ``served`` in conftest.py) on the smoke runs, its answers checked against the
``translate``, ``transcribe`` and ``stream`` stages, its limits and bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import librosa
import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from data_prep.file_io import read_lines
from data_prep.manifest import read_manifest
from pipelines import serve, speech, translation
from pipelines.config import ConfigError, load_config
from pipelines.translation.config import TranslationConfig
from tests.helpers import ROOT
from tests.serve_server import Server, stream_wav

CONFIGS = ROOT / "pipelines" / "configs"


def post(server, path, **kwargs) -> httpx.Response:
    return httpx.post(server.url + path, timeout=120, **kwargs)


def stage_output(main, capsys, *args) -> tuple[list[str], list[str]]:
    """The stdout and stderr lines of a pipeline stage run in this process."""
    capsys.readouterr()
    assert main([str(a) for a in args]) == 0
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err.splitlines()


def smoke_wavs(run, count=3) -> list[str]:
    return [e["audio_filepath"] for e in read_manifest(run / "data" / "test.jsonl")][:count]


def closed_with(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as e:
        while True:
            ws.recv(timeout=30)
    return e.value.rcvd.code, e.value.rcvd.reason


@pytest.mark.slow
def test_serves_the_exported_runs_and_the_page(served):
    server, translation_run, speech_run = served
    # `all` does not export: the server ran the export stage of both runs first.
    assert sum(line.startswith("[export] SavedModel") for line in server.output) == 2
    assert httpx.get(server.url + "healthz").json() == {"status": "ok"}
    models = httpx.get(server.url + "v1/models").json()
    bleu = json.loads((translation_run / "metrics.json").read_text())["bleu"]
    assert models["translation"]["test"]["bleu"] == bleu
    assert models["speech"]["sample_rate"] == 8000
    assert models["speech"]["streaming"]["step"] == "TFLite int8"
    page = httpx.get(server.url)
    assert page.headers["content-type"].startswith("text/html") and "/v1/stream" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched elsewhere


@pytest.mark.slow
def test_translations_equal_the_translate_stage_and_are_batched(served, capsys, tmp_path):
    server, run, _ = served
    sentences = read_lines(run / "data" / "test.src")[:10] + ["", "  "]
    listing = tmp_path / "input.de"
    listing.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    expected, _ = stage_output(translation.main, capsys, "translate", "--config",
                               CONFIGS / "translation_smoke.yaml", "--run-dir", run,
                               "--input", listing)
    assert expected[-2:] == ["", ""] and all(expected[:-2])
    assert post(server, "v1/translate", json={"sentences": sentences}).json() == {
        "translations": expected}
    # One request per sentence, all at once: the same answers, in fewer model calls.
    before = httpx.get(server.url + "v1/models").json()["translation_batches"]
    with ThreadPoolExecutor(len(sentences)) as pool:
        answers = list(pool.map(lambda s: post(server, "v1/translate", json={
            "sentences": [s]}).json()["translations"][0], sentences))
    assert answers == expected
    calls = httpx.get(server.url + "v1/models").json()["translation_batches"] - before
    assert calls < len(sentences), calls


@pytest.mark.slow
def test_transcripts_equal_the_transcribe_stage(served, capsys, tmp_path):
    server, _, run = served
    wavs = smoke_wavs(run)
    # Resampled as `transcribe` resamples: a 16 kHz copy; a FLAC and an MP3 copy.
    audio, rate = sf.read(wavs[0], dtype="float32")
    sf.write(tmp_path / "16k.wav", librosa.resample(audio, orig_sr=rate, target_sr=16000), 16000)
    sf.write(tmp_path / "copy.flac", audio, rate)
    sf.write(tmp_path / "copy.mp3", audio, rate, format="MP3")
    files = [*wavs, tmp_path / "16k.wav", tmp_path / "copy.flac", tmp_path / "copy.mp3"]
    listing = tmp_path / "audio.txt"
    listing.write_text("".join(f"{f}\n" for f in files))
    expected, _ = stage_output(speech.main, capsys, "transcribe", "--config",
                               CONFIGS / "speech_smoke_streaming.yaml", "--run-dir", run,
                               "--input", listing)
    assert any(expected)
    kinds = ["audio/wav"] * len(wavs) + ["audio/x-wav", "audio/flac", "audio/mpeg"]
    raw = [post(server, "v1/transcribe", content=open(f, "rb").read(),
                headers={"Content-Type": kind}).json()["text"] for f, kind in zip(files, kinds)]
    assert raw == expected
    form = post(server, "v1/transcribe", files={"audio": ("x.wav", open(files[-3], "rb"))})
    assert form.json() == {"text": expected[-3]}


@pytest.mark.slow
def test_streams_equal_the_stream_stage_side_by_side(served, capsys):
    server, _, run = served
    wavs = smoke_wavs(run)
    common = ["--config", CONFIGS / "speech_smoke_streaming.yaml", "--run-dir", run,
              "--tflite", "--int8"]
    expected = [stage_output(speech.main, capsys, "stream", *common, wav) for wav in wavs]
    assert any(final for (final,), _ in expected)
    # As many streams as the server takes at once (3), each in 100 ms messages.
    with ThreadPoolExecutor(len(wavs)) as pool:
        streamed = list(pool.map(lambda wav: stream_wav(server, wav), wavs))
    for (partials, final), ((stage_final,), stage_partials) in zip(streamed, expected):
        assert final == stage_final
        # The stage writes a line per change of the prefix (not on a terminal), as the
        # server sends a message per change.
        assert partials == stage_partials


@pytest.mark.slow
def test_bad_requests_get_a_one_line_4xx_and_others_are_served(served, tmp_path):
    server, _, run = served
    wav = open(smoke_wavs(run, 1)[0], "rb").read()
    sf.write(tmp_path / "long.wav", np.zeros(9 * 8000, np.int16), 8000)  # over 8 s
    as_json = {"Content-Type": "application/json"}
    as_wav = {"Content-Type": "audio/wav"}

    def chunked():  # no Content-Length: the limit is found while reading
        for _ in range(40):
            yield b"\0" * 10_000

    cases = [
        ("v1/translate", {"content": b'{"sentences": [', "headers": as_json}, 400),
        ("v1/translate", {"content": b'\xff\xfe', "headers": as_json}, 400),
        ("v1/translate", {"content": b'{"sentences": []}', "headers": {
            "Content-Type": "text/plain"}}, 415),
        ("v1/translate", {"json": {"sentence": ["Hallo"]}}, 400),
        ("v1/translate", {"json": {"sentences": "Hallo"}}, 400),
        ("v1/translate", {"json": {"sentences": [1]}}, 400),
        ("v1/translate", {"json": ["Hallo"]}, 400),
        ("v1/translate", {"json": {"sentences": ["Hallo"] * 17}}, 413),
        ("v1/translate", {"json": {"sentences": ["a" * 301]}}, 413),
        ("v1/transcribe", {"content": b"not audio at all", "headers": as_wav}, 422),
        ("v1/transcribe", {"content": b"/etc/hostname", "headers": as_wav}, 422),
        ("v1/transcribe", {"content": wav[:2000], "headers": as_wav}, 422),  # truncated
        ("v1/transcribe", {"content": b"", "headers": as_wav}, 400),
        ("v1/transcribe", {"content": wav, "headers": {"Content-Type": "text/plain"}}, 415),
        ("v1/transcribe", {"content": b"\0" * 400_000, "headers": as_wav}, 413),
        ("v1/transcribe", {"content": chunked(), "headers": as_wav}, 413),
        ("v1/transcribe", {"content": open(tmp_path / "long.wav", "rb").read(),
                           "headers": as_wav}, 413),
        ("v1/transcribe", {"files": {"file": ("a.wav", wav)}}, 400),
        ("v1/transcribe", {"content": b"--x\r\nbroken", "headers": {
            "Content-Type": "multipart/form-data; boundary=x"}}, 400),
    ]
    for path, request, status in cases:
        answer = post(server, path, **request)
        assert answer.status_code == status, (path, request.get("headers"), answer.text)
        assert answer.headers["content-type"] == "application/json"
        assert list(answer.json()) == ["error"] and "\n" not in answer.text, answer.text
    for method, path, status in [("GET", "v1/translate", 405), ("GET", "nowhere", 404),
                                 ("DELETE", "v1/models", 405)]:
        answer = httpx.request(method, server.url + path)
        assert answer.status_code == status and list(answer.json()) == ["error"]
    assert post(server, "v1/translate", json={"sentences": ["Hallo"]}).status_code == 200
    assert "Traceback" not in "\n".join(server.output)


@pytest.mark.slow
def test_bad_streams_are_closed_with_a_code_and_reason(served):
    server, _, run = served
    url = server.ws_url + "v1/stream"
    with connect(url) as ws:
        ws.send(b"\0\0\0")
        assert closed_with(ws)[0] == 1007
    with connect(url) as ws:
        ws.send("hello")
        assert closed_with(ws)[0] == 1003
    with connect(url) as ws:
        ws.send(json.dumps({"event": "stop"}))
        assert closed_with(ws)[0] == 1003
    with connect(url) as ws:  # idle for longer than --idle-seconds 2
        code, reason = closed_with(ws)
        assert code == 1008 and "idle" in reason
    with connect(url) as ws:  # more than --max-audio-seconds 8
        for _ in range(9):
            ws.send(b"\0\0" * 8000)
        code, reason = closed_with(ws)
        assert code == 1008 and "longer than 8 s" in reason
    with contextlib.ExitStack() as held:
        for _ in range(3):  # --max-streams 3
            held.enter_context(connect(url))
        with connect(url) as ws:
            assert closed_with(ws)[0] == 1013
    partials, final = stream_wav(server, smoke_wavs(run, 1)[0])  # others still served
    assert partials and final == partials[-1]


@pytest.mark.slow
def test_greedy_serves_the_exports_greedy_search(served, capsys, tmp_path):
    _, run, _ = served
    sentences = read_lines(run / "data" / "test.src")[:10]
    listing = tmp_path / "input.de"
    listing.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    expected, _ = stage_output(translation.main, capsys, "translate", "--config",
                               CONFIGS / "translation_smoke.yaml", "--run-dir", run,
                               "--input", listing, "--set", "decoding.beam_size=1")
    server = Server("--translation", run, "--greedy")  # exported by `served`
    try:
        assert post(server, "v1/translate", json={"sentences": sentences}).json() == {
            "translations": expected}
        model = httpx.get(server.url + "v1/models").json()["translation"]
        greedy = json.loads((run / "metrics.json").read_text())["greedy"]
        assert model["beam_size"] == 1 and model["test"]["bleu"] == greedy["bleu"]
    finally:
        server.stop()
    # Scores from an evaluate that did not record greedy search's: one line at start-up.
    from pipelines.serve.models import Translation

    shutil.copytree(run, tmp_path / "old")
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["greedy"]
    (tmp_path / "old" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ConfigError, match=r"^\S+/old/metrics.json: no greedy-search scores "):
        Translation(tmp_path / "old", greedy=True)


@pytest.mark.slow
def test_ctrl_c_stops_the_server_with_one_line(served):
    _, translation_run, _ = served
    server = Server("--translation", translation_run)  # exported by `served`
    assert "[export] up to date" in server.output[0]
    assert post(server, "v1/translate", json={"sentences": ["Hallo"]}).status_code == 200
    assert httpx.get(server.url + "v1/models").json()["speech"] is None
    assert server.stop(signal.SIGINT) == 0
    assert server.output[-2].startswith("[serve] http://127.0.0.1:")
    assert server.output[-1] == "[serve] stopped (SIGINT)"


def test_command_line_refusals(capsys, tmp_path):
    assert serve.main([]) == 2
    assert "nothing to serve" in capsys.readouterr().err
    assert serve.main(["--speech", "runs/x", "--max-streams", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-streams: expected a positive number\n"
    assert serve.main(["--translation", "runs/x", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--allow-remote" in err and len(err.splitlines()) == 1
    assert serve.main(["--speech", str(tmp_path), "--host", "0.0.0.0", "--allow-remote",
                       "--port", "0"]) == 1
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith("warning: serving on 0.0.0.0") and "no run.json" in error


def test_dynamic_batcher_gathers_requests_without_splitting_them():
    from pipelines.serve.batching import DynamicBatcher

    calls = []

    def upper(items):
        calls.append(list(items))
        if "boom" in items:
            raise ValueError("boom")
        return [item.upper() for item in items]

    async def scenario():
        batcher = DynamicBatcher(upper, max_batch=4, max_wait=0.05)
        loop = asyncio.create_task(batcher.run())
        requests = [["a"], ["b", "c"], ["d", "e"], ["f"]]  # arrive together
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit(["boom"])
        lone = await batcher.submit(["g"])
        loop.cancel()
        return answers, lone, await batcher.submit([])

    answers, lone, empty = asyncio.run(scenario())
    assert answers == [["A"], ["B", "C"], ["D", "E"], ["F"]] and lone == ["G"] and empty == []
    # At most 4 items a call, a request never split: [a b c] then [d e f]; then the others.
    assert calls == [["a", "b", "c"], ["d", "e", "f"], ["boom"], ["g"]]


class UpperCase:
    """A stand-in translation model: the app needs only a callable with ``info``."""

    info = {"run": "upper"}

    def __call__(self, texts):
        return [t.upper() for t in texts]


def test_a_server_without_a_speech_model_says_so():
    import threading
    import time

    import uvicorn

    from pipelines.serve.app import create_app
    from pipelines.serve.limits import Batching, Limits

    app = create_app(UpperCase(), None, Limits(), Batching())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    sock = serve.bind("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    try:
        answer = httpx.post(url + "v1/translate", json={"sentences": ["ein hund", " "]})
        assert answer.json() == {"translations": ["EIN HUND", ""]}
        answer = httpx.post(url + "v1/transcribe", content=b"RIFF",
                            headers={"Content-Type": "audio/wav"})
        assert answer.status_code == 404 and answer.json() == {
            "error": "no speech model is loaded"}
        assert httpx.get(url + "v1/models").json()["speech"] is None
        with connect(url.replace("http", "ws") + "v1/stream") as ws:
            code, reason = closed_with(ws)
        assert code == 1008 and reason.startswith("no streaming speech model is loaded")
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_damaged_export_is_one_line(tmp_path):
    from pipelines.config import ConfigError
    from pipelines.run_dir import RunDir
    from pipelines.serve.models import load_export

    run = RunDir(tmp_path / "run")
    run.path("export").mkdir(parents=True)
    run.path("export", "saved_model.pb").write_bytes(b"not a SavedModel")
    with pytest.raises(ConfigError, match=r"export: a damaged SavedModel") as error:
        load_export(run)
    assert "\n" not in str(error.value)


def test_the_benchmark_measures_the_batch_gains_of_the_model_and_its_projection(served):
    from benchmarks.serve import model_batch_gain, projection_gain

    _, run, _ = served  # exported by the server
    sentences = [s for s in read_lines(run / "data" / "test.src") if s.strip()]
    cfg = load_config(TranslationConfig, run / "config.yaml", recorded=True)
    for greedy, beam in [(False, cfg.decoding.beam_size), (True, 1)]:
        model = model_batch_gain(run, sentences, size=4, rounds=1, greedy=greedy)
        assert model["sentences_per_second_batch_1"] > 0 and model["gain"] > 0
        projection = projection_gain(run, size=4, repeats=3, greedy=greedy)
        assert projection["gflops_batch_1"] > 0 and projection["gain"] > 0
        assert projection["shape"] == (f"[{beam} x sentences, {cfg.model.attentional_dim}] x "
                                       f"[{cfg.model.attentional_dim}, "
                                       f"{cfg.tokenizer.vocab_size}]")
