"""Server benchmark (loopback; bounded in requests and time): translation throughput and
latency with and without dynamic batching, live streams kept in real time, and a soak
with bad requests mixed in.

    PIPELINES_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.serve \\
        --translation runs/translation_demo --speech runs/fsdd_strings_streaming \\
        [--greedy] [--soak-seconds 600] [--output serve_benchmark.json]

1. Translate: clients (1, 8, 32 at once) each send one-sentence requests (the run's test
   sentences in turn) until ``--requests`` are answered; requests/s, p50/p95 latency and
   the mean batch, against a server that batches (the defaults) and one that does not
   (``--max-batch 1 --batch-wait-ms 0``); and, as the ceiling of what batching can gain,
   the exported model called in this process with batches of 1 and of 32 sentences, and
   the GFLOP/s of its output projection (the largest product of a step) for the beams of
   1 and of 32 sentences. ``--greedy`` serves and measures the export's greedy search
   (``serve --greedy``) instead of the run's beam search.
2. Streams: N clients at once each stream ``--stream-seconds`` of test utterances in
   chunk-sized messages paced in real time, then the end event. A stream is kept in real
   time when its final transcript comes back within one chunk's duration of the end
   event (a server falling behind has a backlog of chunks to run by then). N grows
   until a level fails or ``--max-streams`` is reached.
3. Soak: for ``--soak-seconds``, good clients (translate, transcribe, stream) beside a
   client sending bad requests of every kind; every good answer must be 200 and equal the
   first answer to the same request, every bad one a 4xx; the server's resident memory
   is sampled every 5 s.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before TensorFlow loads

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from data_prep.file_io import read_lines  # noqa: E402
from data_prep.manifest import read_manifest  # noqa: E402
from tests.serve_server import Server  # noqa: E402


def percentiles(seconds) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1)}


class Connection:
    """A keep-alive HTTP/1.1 connection posting JSON. The translate load uses it rather
    than httpx, whose CPU per request (about a millisecond) on the two shared cores would
    make the benchmark measure its own client."""

    def __init__(self, url: str):
        self.host, port = url.split("//")[1].rstrip("/").split(":")
        self.port, self.reader, self.writer = int(port), None, None

    async def post(self, path: str, payload) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        self.writer.write(f"POST /{path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: "
                          f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = next(int(line.split(":")[1]) for line in head
                      if line.lower().startswith("content-length:"))
        return int(head[0].split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


async def translate_load(url, sentences, clients: int, requests: int) -> dict:
    """``clients`` loops sending one sentence per request until ``requests`` are done."""
    todo, latencies = itertools.count(), []
    batches = httpx.get(url + "v1/models").json()["translation_batches"]

    async def client():
        connection = Connection(url)
        try:
            while (i := next(todo)) < requests:
                start = time.perf_counter()
                status, _ = await connection.post("v1/translate", {
                    "sentences": [sentences[i % len(sentences)]]})
                assert status == 200, status
                latencies.append(time.perf_counter() - start)
        finally:
            connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    batches = httpx.get(url + "v1/models").json()["translation_batches"] - batches
    return {"clients": clients, "requests": requests,
            "requests_per_second": round(requests / wall, 1), **percentiles(latencies),
            "mean_batch": round(requests / batches, 1)}


def projection_gain(translation: Path, size: int = 32, repeats: int = 200,
                    greedy: bool = False) -> dict:
    """GFLOP/s of the decoder's output projection alone, the largest product of a decoding
    step ([beam rows, attentional_dim] x [attentional_dim, vocabulary] per sentence), for
    one sentence's beams and for ``size`` sentences': batching cannot gain more on it
    than their ratio."""
    import tensorflow as tf

    from pipelines.serve.models import open_run
    from pipelines.translation.config import TranslationConfig

    cfg, _ = open_run(translation, "translation", TranslationConfig)
    beam = 1 if greedy else cfg.decoding.beam_size
    dim, vocab = cfg.model.attentional_dim, cfg.tokenizer.vocab_size
    weights = tf.random.normal((dim, vocab))

    @tf.function
    def repeated(x):
        # The repeats run in one graph (no Python per product); each product's input
        # depends on the loop counter, so the product cannot be hoisted out of the loop.
        def body(i, total):
            scaled = x * (1.0 + 1e-6 * tf.cast(i, tf.float32))
            return i + 1, total + tf.reduce_sum(tf.matmul(scaled, weights))
        return tf.while_loop(lambda i, _: i < repeats, body, (0, 0.0))[1]

    rates = {}
    for n in (1, size):
        x = tf.random.normal((n * beam, dim))
        repeated(x).numpy()  # traces
        start = time.perf_counter()
        repeated(x).numpy()
        rates[n] = 2 * n * beam * dim * vocab * repeats / (time.perf_counter() - start) / 1e9
    return {"shape": f"[{beam} x sentences, {dim}] x [{dim}, {vocab}]",
            "gflops_batch_1": round(rates[1], 1), f"gflops_batch_{size}": round(rates[size], 1),
            "gain": round(rates[size] / rates[1], 2)}


def model_batch_gain(translation: Path, sentences, size: int = 32, rounds: int = 5,
                     greedy: bool = False) -> dict:
    """Sentences/s of the exported model called in this process with one sentence and
    with ``size``: the most that batching can gain, whatever the server does."""
    from pipelines.serve.models import Translation

    translate = Translation(translation, greedy)  # the server's model, in this process
    rates = {}
    for n in (1, size):
        batches = [[sentences[(i * n + j) % len(sentences)] for j in range(n)]
                   for i in range(rounds)]
        translate(batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            translate(batch)
        rates[n] = n * rounds / (time.perf_counter() - start)
    return {"sentences_per_second_batch_1": round(rates[1], 1),
            f"sentences_per_second_batch_{size}": round(rates[size], 1),
            "gain": round(rates[size] / rates[1], 2)}


async def stream_paced(url, audio: np.ndarray, chunk: int, rate: int) -> tuple[float, str]:
    """Stream int16 ``audio`` in real time; seconds from the end event to the final."""
    async with connect(url + "v1/stream", max_size=2**20) as ws:
        async def pace():
            start = time.perf_counter()
            for n, i in enumerate(range(0, len(audio), chunk)):
                await asyncio.sleep(max(0.0, start + n * chunk / rate - time.perf_counter()))
                await ws.send(audio[i:i + chunk].tobytes())
            await asyncio.sleep(max(0.0, start + len(audio) / rate - time.perf_counter()))
            await ws.send(json.dumps({"event": "end"}))
            return time.perf_counter()

        sent, final = await pace(), None
        async for message in ws:
            final = json.loads(message).get("final", final)
        return time.perf_counter() - sent, final


async def stream_levels(server, audio, chunk, rate, levels) -> list[dict]:
    results = []
    for n in levels:
        outcome = await asyncio.gather(*(stream_paced(server.ws_url, audio, chunk, rate)
                                         for _ in range(n)))
        lags = [lag for lag, _ in outcome]
        kept = sum(lag < chunk / rate for lag in lags)
        results.append({"streams": n, "kept_in_real_time": kept,
                        "final_after_end": percentiles(lags),
                        "same_transcript": len({text for _, text in outcome}) == 1})
        print(f"[streams] {n}: {kept} in real time, {percentiles(lags)}", flush=True)
        if kept < n:
            break
    return results


def bad_requests(wav: bytes) -> list:
    as_json, as_wav = {"Content-Type": "application/json"}, {"Content-Type": "audio/wav"}
    return [("v1/translate", {"content": b'{"sentences": [', "headers": as_json}),
            ("v1/translate", {"json": {"sentences": ["x" * 5000]}}),
            ("v1/translate", {"json": {"sentences": ["Hallo"] * 500}}),
            ("v1/translate", {"content": b"[1, 2]", "headers": {"Content-Type": "text/plain"}}),
            ("v1/transcribe", {"content": wav[:3000], "headers": as_wav}),
            ("v1/transcribe", {"content": b"RIFF garbage", "headers": as_wav}),
            ("v1/transcribe", {"content": b"\0" * (11 * 2**20), "headers": as_wav})]


async def soak(server, sentences, wavs, stream_audio, seconds: float) -> dict:
    wav_bytes = [Path(w).read_bytes() for w in wavs]
    stats = {"good": 0, "good_failed": 0, "bad": 0, "bad_not_4xx": 0, "bad_streams": 0,
             "bad_streams_wrong_close": 0}
    expected, memory = {}, []
    status = Path(f"/proc/{server.process.pid}/status")  # Linux
    deadline = time.monotonic() + seconds

    def check(key, ok, answer):
        stats["good"] += 1
        if not ok or expected.setdefault(key, answer) != answer:
            stats["good_failed"] += 1

    async with httpx.AsyncClient(timeout=300) as http:
        async def translator(k):
            for i in itertools.count(k):
                if time.monotonic() > deadline:
                    return
                s = sentences[i % len(sentences)]
                r = await http.post(server.url + "v1/translate", json={"sentences": [s]})
                check(("t", s), r.status_code == 200, r.text)

        async def transcriber():
            for i in itertools.count():
                if time.monotonic() > deadline:
                    return
                r = await http.post(server.url + "v1/transcribe", content=wav_bytes[i % len(wavs)],
                                    headers={"Content-Type": "audio/wav"})
                check(("a", i % len(wavs)), r.status_code == 200, r.text)

        async def streamer():
            while time.monotonic() < deadline:
                _, final = await stream_paced(server.ws_url, stream_audio, 1600, 8000)
                check(("s",), final is not None, final)

        async def attacker():
            cases = bad_requests(wav_bytes[0])
            for i in itertools.count():
                if time.monotonic() > deadline:
                    return
                if i % 4 == 3:  # a bad stream: odd bytes, a text frame, or too long
                    stats["bad_streams"] += 1
                    async with connect(server.ws_url + "v1/stream") as ws:
                        for message in [[b"\0\0\0"], ["hello"], [b"\0" * 2**20] * 3][i % 3]:
                            await ws.send(message)
                        try:
                            async for _ in ws:
                                pass
                        except Exception:  # noqa: BLE001  (the close is what is checked)
                            pass
                        if ws.close_code not in (1003, 1007, 1008, 1009):
                            stats["bad_streams_wrong_close"] += 1
                    continue
                path, request = cases[i % len(cases)]
                stats["bad"] += 1
                try:
                    r = await http.post(server.url + path, **request)
                except httpx.TransportError:  # a 413 before the body was sent
                    continue
                stats["bad_not_4xx"] += not 400 <= r.status_code < 500
                await asyncio.sleep(0.02)

        async def sampler():
            while time.monotonic() < deadline:
                rss_kb = next(line.split()[1] for line in status.read_text().splitlines()
                              if line.startswith("VmRSS:"))
                memory.append(int(rss_kb) / 1024)
                await asyncio.sleep(5)

        await asyncio.gather(translator(0), translator(7), transcriber(), streamer(),
                             streamer(), attacker(), sampler())
    warm = memory[min(12, len(memory) - 1)]  # after a minute: every kind of call has run
    return {"seconds": seconds, **stats, "rss_mb_start": round(memory[0], 1),
            "rss_mb_after_1_min": round(warm, 1), "rss_mb_max": round(max(memory), 1),
            "rss_mb_last": round(memory[-1], 1),
            "rss_mb_each_minute": [round(m, 1) for m in memory[::12]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--translation", required=True, metavar="RUN_DIR")
    p.add_argument("--speech", required=True, metavar="RUN_DIR", help="a causal (streaming) run")
    p.add_argument("--greedy", action="store_true",
                   help="translate with the export's greedy search (serve --greedy)")
    p.add_argument("--requests", type=int, default=320, help="translate requests per level")
    p.add_argument("--stream-seconds", type=float, default=8.0)
    p.add_argument("--max-streams", type=int, default=80)
    p.add_argument("--soak-seconds", type=float, default=600)
    p.add_argument("--parts", default="translate,streams,soak",
                   help="which parts to run (comma-separated)")
    p.add_argument("--output", help="write the results here as JSON")
    args = p.parse_args()
    translation, speech = Path(args.translation), Path(args.speech)
    sentences = [s for s in read_lines(translation / "data" / "test.src") if s.strip()]
    wavs = [e["audio_filepath"] for e in read_manifest(speech / "data" / "test.jsonl")]
    utterances, rate = [], 8000
    for wav in wavs:
        audio, rate = sf.read(wav, dtype="int16")
        utterances.append(audio)
    audio = np.concatenate(utterances)[:int(args.stream_seconds * rate)].astype("<i2")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.machine())
    results = {"date": time.strftime("%Y-%m-%d"), "machine": f"{cpu}, "
               f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
               "translation": str(translation), "speech": str(speech), "translate": {}}
    parts = args.parts.split(",")
    if "translate" in parts:
        translate_part(results, translation, sentences, args.requests, args.greedy)
    if "streams" in parts:
        streams_part(results, speech, audio, rate, args.max_streams)
    if "soak" in parts:
        soak_part(results, translation, speech, sentences, wavs, audio[:3 * rate],
                  args.soak_seconds)
    print(json.dumps(results, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1) + "\n")


def translate_part(results, translation, sentences, requests, greedy) -> None:
    results["translate"]["greedy"] = greedy
    search = ["--greedy"] if greedy else []
    for name, flags in [("batched", []), ("one_at_a_time", ["--max-batch", 1, "--batch-wait-ms", 0])]:
        server = Server("--translation", translation, *search, *flags)
        try:
            asyncio.run(translate_load(server.url, sentences, 4, 16))  # warm-up
            levels = [asyncio.run(translate_load(server.url, sentences, c, requests))
                      for c in (1, 8, 32)]
        finally:
            server.stop()
        results["translate"][name] = levels
        for level in levels:
            print(f"[translate] {name}: {level}", flush=True)
    # After the servers: the first one exports the run when it has no export yet.
    results["model_batch_gain"] = model_batch_gain(translation, sentences, greedy=greedy)
    print(f"[translate] the model alone: {results['model_batch_gain']}", flush=True)
    results["projection_gain"] = projection_gain(translation, greedy=greedy)
    print(f"[translate] its output projection alone: {results['projection_gain']}", flush=True)


def streams_part(results, speech, audio, rate, max_streams) -> None:
    server = Server("--speech", speech, "--max-streams", max_streams)
    try:
        chunk_ms = httpx.get(server.url + "v1/models").json()["speech"]["streaming"]["chunk_ms"]
        chunk = int(rate * chunk_ms / 1000)
        results["streams"] = {"chunk_ms": chunk_ms, "stream_seconds": len(audio) / rate,
                              "levels": asyncio.run(stream_levels(
                                  server, audio, chunk, rate,
                                  [n for n in (1, 10, 20, 30, 40, 60, 80) if n <= max_streams]))}
    finally:
        server.stop()


def soak_part(results, translation, speech, sentences, wavs, audio, seconds) -> None:
    server = Server("--translation", translation, "--speech", speech)
    try:
        results["soak"] = asyncio.run(soak(server, sentences[:50], wavs[:10], audio, seconds))
        print(f"[soak] {results['soak']}", flush=True)
        results["soak"]["server_errors_logged"] = sum("Traceback" in line for line in server.output)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
