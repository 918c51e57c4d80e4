"""The HTTP and WebSocket application (Starlette): routes, limits and error answers.

Every client error is a 4xx whose JSON body is one line, ``{"error": "..."}``; a server
error is a 500 ``{"error": "internal server error"}`` (the traceback goes to the
server's stderr, never to the client). Nothing in a request names a model or a file:
the models are the ones given on the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import traceback
from dataclasses import asdict
from importlib import resources

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route, WebSocketRoute

from data_prep.audio_features import AudioError
from pipelines.serve.batching import DynamicBatcher
from pipelines.serve.limits import Batching, Limits
from pipelines.serve.streams import StreamEndpoint

# Upload types and the suffix their temporary file gets (the decoders look at it).
AUDIO_TYPES = {"audio/wav": ".wav", "audio/x-wav": ".wav", "audio/wave": ".wav",
               "audio/flac": ".flac", "audio/x-flac": ".flac", "audio/mpeg": ".mp3"}


class ClientError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is a 413, told by its
    Content-Length or found while it is read (a chunked body has no length)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_big = ClientError(413, f"request body over {self.limit} bytes (the limit)")
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            status = 413 if length.isdigit() else 400
            message = too_big.message if length.isdigit() else "bad Content-Length header"
            return await JSONResponse({"error": message}, status)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise too_big
            return message

        await self.app(scope, limited, send)


def create_app(translation, speech, limits: Limits, batching: Batching) -> Starlette:
    """The application serving ``translation`` (a ``models.Translation``) and ``speech``
    (a ``models.Speech``); either may be None."""
    batcher = (DynamicBatcher(translation, batching.max_batch, batching.max_wait_ms / 1000)
               if translation else None)
    stream = StreamEndpoint(speech, limits.streams, limits.audio_seconds, limits.idle_seconds)
    page = resources.files("pipelines.serve").joinpath("static", "index.html").read_text("utf-8")

    async def index(request: Request):
        return HTMLResponse(page)

    async def healthz(request: Request):
        return JSONResponse({"status": "ok"})

    async def models(request: Request):
        return JSONResponse({
            "translation": translation.info if translation else None,
            "speech": speech.info if speech else None,
            "limits": asdict(limits), "batching": asdict(batching),
            "translation_batches": batcher.calls if batcher else 0})

    async def translate(request: Request):
        if batcher is None:
            raise ClientError(404, "no translation model is loaded")
        body = await read_json(request)
        sentences = body.get("sentences") if isinstance(body, dict) else None
        if (not isinstance(sentences, list) or set(body) != {"sentences"}
                or not all(isinstance(s, str) for s in sentences)):
            raise ClientError(400, 'expected a JSON object {"sentences": [string, ...]}')
        if len(sentences) > limits.sentences:
            raise ClientError(413, f"{len(sentences)} sentences (at most {limits.sentences} "
                                   "per request)")
        for i, sentence in enumerate(sentences):
            if len(sentence) > limits.chars:
                raise ClientError(413, f"sentence {i} has {len(sentence)} characters (at most "
                                       f"{limits.chars})")
        # Stripped as the translate stage strips its input lines.
        translations = await batcher.submit([s.strip() for s in sentences])
        return JSONResponse({"translations": translations})

    async def transcribe(request: Request):
        if speech is None:
            raise ClientError(404, "no speech model is loaded")
        data, suffix = await read_audio(request)
        audio = await asyncio.to_thread(speech.read_upload, data, suffix)
        seconds = len(audio) / speech.sample_rate
        if seconds > limits.audio_seconds:
            raise ClientError(413, f"{seconds:.1f} s of audio (at most {limits.audio_seconds:g})")
        return JSONResponse({"text": await asyncio.to_thread(speech.transcribe, audio)})

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(batcher.run()) if batcher else None
        yield
        if task:
            task.cancel()

    routes = [Route("/", index), Route("/healthz", healthz), Route("/v1/models", models),
              Route("/v1/translate", translate, methods=["POST"]),
              Route("/v1/transcribe", transcribe, methods=["POST"]),
              WebSocketRoute("/v1/stream", stream.handle)]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ClientError: lambda request, e: JSONResponse({"error": e.message}, e.status),
        AudioError: lambda request, e: JSONResponse({"error": str(e)}, 422),
        HTTPException: lambda request, e: JSONResponse({"error": e.detail}, e.status_code),
        Exception: server_error})
    app.add_middleware(BodyLimit, limit=limits.body_bytes)
    return app


def server_error(request: Request, error: Exception) -> JSONResponse:
    traceback.print_exception(error, file=sys.stderr)
    return JSONResponse({"error": "internal server error"}, 500)


def media_type(request_or_part) -> str:
    value = request_or_part.headers.get("content-type", "")
    return value.split(";")[0].strip().lower()


async def read_json(request: Request):
    if media_type(request) != "application/json":
        raise ClientError(415, "expected Content-Type: application/json")
    try:
        return json.loads(await request.body())
    except (UnicodeDecodeError, ValueError) as e:
        raise ClientError(400, f"malformed JSON: {e}") from None


async def read_audio(request: Request) -> tuple[bytes, str]:
    """The uploaded file's bytes and its temporary file's suffix: the raw body (an
    ``AUDIO_TYPES`` content type), or the multipart form field ``audio``."""
    kind = media_type(request)
    if kind in AUDIO_TYPES:
        data, suffix = await request.body(), AUDIO_TYPES[kind]
    elif kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            part = form.get("audio")
            if not isinstance(part, UploadFile):
                raise ClientError(400, "expected the audio file in the multipart field 'audio'")
            # A browser's part type is a guess from the file name: the decoders sniff.
            data, suffix = await part.read(), AUDIO_TYPES.get(media_type(part), "")
    else:
        raise ClientError(415, "expected Content-Type audio/wav, audio/flac, audio/mpeg or "
                               "multipart/form-data (field 'audio')")
    if not data:
        raise ClientError(400, "empty audio upload")
    return data, suffix
