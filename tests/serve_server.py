"""``python -m pipelines.serve`` in a child process on a free loopback port, for the
server's tests (``tests/test_serve*.py``) and ``benchmarks/serve.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import soundfile as sf
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
URL = re.compile(r"\[serve\] (http://\S+/) ")


class Server:
    """The server with ``args`` (its run directories and flags), ``--port 0``: it binds a
    free port and prints its URL. ``output``: every line it printed (stdout and stderr)."""

    def __init__(self, *args, timeout: float = 900):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipelines.serve", "--port", "0", *map(str, args)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output: list[str] = []
        started = threading.Event()
        self.url = None

        def read():
            for line in self.process.stdout:
                self.output.append(line.rstrip("\n"))
                if match := URL.match(line):
                    self.url = match.group(1)
                    started.set()
            started.set()  # exited before serving

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        # Exporting the runs first can take minutes on a busy machine.
        if not started.wait(timeout) or self.url is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + "\n".join(self.output[-30:]))
        self.ws_url = self.url.replace("http://", "ws://")

    def stop(self, sig=signal.SIGTERM) -> int:
        """Stop it with ``sig``; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.reader.join(5)  # its last lines
        return code


def stream_wav(server: Server, wav, block_seconds=0.1) -> tuple[list[str], str]:
    """Partials and final transcript of a wav streamed as 16-bit PCM messages."""
    audio, rate = sf.read(wav, dtype="int16")
    block = int(rate * block_seconds)
    partials = []
    with connect(server.ws_url + "v1/stream") as ws:
        for start in range(0, len(audio), block):
            ws.send(audio[start:start + block].astype("<i2").tobytes())
        ws.send(json.dumps({"event": "end"}))
        for message in ws:
            answer = json.loads(message)
            if "final" in answer:
                return partials, answer["final"]
            partials.append(answer["partial"])
    raise AssertionError("no final transcript")
