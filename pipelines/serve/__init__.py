"""A server for trained models: translation, transcription, live streaming speech, and a
page to try them.

    python -m pipelines.serve --translation runs/translation_demo \\
        --speech runs/fsdd_strings_streaming [--greedy] [--host 127.0.0.1] [--port 8000]

Endpoints: ``POST /v1/translate``, ``POST /v1/transcribe``, ``WS /v1/stream``,
``GET /v1/models``, ``GET /healthz``, and ``GET /`` (the page). See docs/serving.md.

Modules: ``models`` (the runs' exported models), ``batching`` (dynamic batching),
``streams`` (the WebSocket stream), ``app`` (routes, limits, errors), ``static/`` (the page).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import sys

from pipelines import cli
from pipelines.config import ConfigError

LOOPBACK = ("localhost", "127.0.0.1", "::1")
POSITIVE = ("max_batch", "max_body_bytes", "max_sentences", "max_chars", "max_audio_seconds",
            "max_streams", "idle_seconds")


def parser() -> argparse.ArgumentParser:
    from pipelines.serve.limits import Batching, Limits

    limits, batching = Limits(), Batching()
    p = argparse.ArgumentParser(prog="python -m pipelines.serve", description=(
        "Serve a translation run and/or a speech run over HTTP and WebSocket, with a page "
        "to try them (GET /)."))
    p.add_argument("--translation", metavar="RUN_DIR", help="a translation run directory")
    p.add_argument("--speech", metavar="RUN_DIR", help="a speech run directory (streaming "
                   "needs a causal model)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host other than loopback (no authentication, no TLS)")
    p.add_argument("--greedy", action="store_true",
                   help="translation: greedy search instead of the run's beam search (about "
                        "a BLEU point lower; batches several times better under load)")
    p.add_argument("--stream-model", choices=("int8", "float16", "float32"), default="int8",
                   help="the TFLite streaming step to run (default: int8)")
    p.add_argument("--max-batch", type=int, default=batching.max_batch,
                   help="translation: most sentences per model call")
    p.add_argument("--batch-wait-ms", type=float, default=batching.max_wait_ms,
                   help="translation: how long a request waits for others to batch with")
    p.add_argument("--max-body-bytes", type=int, default=limits.body_bytes)
    p.add_argument("--max-sentences", type=int, default=limits.sentences,
                   help="sentences per translate request")
    p.add_argument("--max-chars", type=int, default=limits.chars, help="characters per sentence")
    p.add_argument("--max-audio-seconds", type=float, default=limits.audio_seconds,
                   help="seconds of audio per upload or stream")
    p.add_argument("--max-streams", type=int, default=limits.streams,
                   help="live streams at once")
    p.add_argument("--idle-seconds", type=float, default=limits.idle_seconds,
                   help="close a stream after this long without a message")
    p.add_argument("--verbose", action="store_true", help="TensorFlow's and uvicorn's logging")
    return p


def is_loopback(host: str) -> bool:
    try:
        return host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound here, so that ``--port 0`` can print its port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    return sock


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    problem = next((f"--{name.replace('_', '-')}: expected a positive number"
                    for name in POSITIVE if getattr(args, name) <= 0), None)
    if args.batch_wait_ms < 0:
        problem = "--batch-wait-ms: expected 0 or more"
    if not 0 <= args.port <= 65535:
        problem = f"--port {args.port}: expected 0 to 65535"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if not (args.translation or args.speech):
        print("error: nothing to serve: give --translation RUN_DIR and/or --speech RUN_DIR",
              file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        if not args.allow_remote:
            print(f"error: --host {args.host} is not a loopback address; add --allow-remote "
                  "to serve other machines", file=sys.stderr)
            return 2
        print(f"warning: serving on {args.host}: anyone who can reach it can use the models "
              "(no authentication, no TLS)", file=sys.stderr)
    if not args.verbose:
        cli.quiet_tensorflow()
    import uvicorn

    from pipelines.serve.app import create_app
    from pipelines.serve.limits import Batching, Limits
    from pipelines.serve.models import Speech, Translation

    sock = None
    try:
        sock = bind(args.host, args.port)  # first: a busy port fails before minutes of export
        translation = Translation(args.translation, args.greedy) if args.translation else None
        speech = Speech(args.speech, args.stream_model) if args.speech else None
    except cli.USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        if sock:
            sock.close()
        return 1
    limits = Limits(args.max_body_bytes, args.max_sentences, args.max_chars,
                    args.max_audio_seconds, args.max_streams, args.idle_seconds)
    app = create_app(translation, speech, limits, Batching(args.max_batch, args.batch_wait_ms))
    config = uvicorn.Config(app, log_level="info" if args.verbose else "warning",
                            access_log=args.verbose, ws_max_size=args.max_body_bytes,
                            timeout_graceful_shutdown=2)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"[serve] http://{host}:{sock.getsockname()[1]}/ (Ctrl-C to stop)", flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal here.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stopped)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def stopped(signum, frame):
    print(f"[serve] stopped ({signal.Signals(signum).name})", flush=True)
    sys.stderr.flush()
    os._exit(0)  # TensorFlow's threads could keep the process alive for seconds
