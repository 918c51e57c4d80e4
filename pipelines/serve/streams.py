"""``WS /v1/stream``: live transcription over a WebSocket.

The client sends binary messages of 16-bit little-endian mono PCM at the model's rate and
the text message ``{"event": "end"}`` when the speaker stops; the server answers
``{"partial": text}`` whenever the greedy prefix changes and ``{"final": text}`` at the
end (the last partial, or with ``streaming.final: lm`` the word language model's search
over the streamed log-probabilities), then closes with 1000. Each utterance runs the
``stream`` stage's own driver, ``stream_utterance``, in a thread of its own fed from the
socket, so a stream gets the ``stream --tflite`` stage's partials and final transcript;
many streams run side by side, each with its own state, and none waits for another.

Protocol errors close the socket with a standard code and a one-line reason: 1003 a text
message other than the end event, 1007 a binary message of an odd number of bytes (not
whole samples), 1008 a limit (audio seconds, idle time) or no streaming model, 1009 a
message over the size limit (uvicorn), 1011 a server error, 1013 too many streams.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

from starlette.websockets import WebSocket, WebSocketDisconnect

from pipelines.speech.streaming import pcm16_samples, stream_utterance

END_EVENT = {"event": "end"}


class StreamClosed(Exception):
    """Close the socket with ``code`` and the one-line ``reason``."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Utterance:
    """One utterance streamed by ``stream_utterance`` in an executor thread: ``push`` PCM
    blocks, ``end``; partial transcripts arrive on ``partials`` (None after the last)."""

    def __init__(self, speech, executor: ThreadPoolExecutor):
        loop = asyncio.get_running_loop()
        self.blocks: queue.Queue = queue.Queue()
        self.partials: asyncio.Queue = asyncio.Queue()

        def blocks():
            while (block := self.blocks.get()) is not None:
                yield block

        def run() -> str:
            runner = speech.acquire_runner()
            try:
                return stream_utterance(
                    speech.step, runner, blocks(), speech.vocab,
                    lambda text: loop.call_soon_threadsafe(self.partials.put_nowait, text),
                    final=speech.final)
            finally:
                speech.release_runner(runner)
                loop.call_soon_threadsafe(self.partials.put_nowait, None)

        self.final = loop.run_in_executor(executor, run)
        # A client that leaves mid-utterance never awaits it: its error is not news.
        self.final.add_done_callback(lambda f: f.cancelled() or f.exception())

    def push(self, samples) -> None:
        self.blocks.put(samples)

    def end(self) -> None:
        self.blocks.put(None)  # the driver pads and finishes the last chunk


class StreamEndpoint:
    """The WebSocket endpoint, with its limits: at most ``max_streams`` at once, each at
    most ``max_seconds`` of audio and ``idle_seconds`` between messages."""

    def __init__(self, speech, max_streams: int, max_seconds: float, idle_seconds: float):
        self.speech, self.max_streams = speech, max_streams
        self.max_seconds, self.idle_seconds = max_seconds, idle_seconds
        self.active = 0
        # One thread per live stream: a stream's thread waits for its audio most of the
        # time, so streams must not share threads with each other or with other requests.
        self.executor = ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="stream")

    async def handle(self, ws: WebSocket) -> None:
        # Accepted before any refusal: a refused handshake cannot carry a close reason.
        await ws.accept()
        try:
            if self.speech is None or self.speech.step is None:
                raise StreamClosed(1008, "no streaming speech model is loaded (it needs a "
                                         "causal model; see /v1/models)")
            if self.active >= self.max_streams:
                raise StreamClosed(1013, f"too many live streams (at most {self.max_streams}); "
                                         "try again later")
            self.active += 1
            try:
                await self._utterance(ws)
            finally:
                self.active -= 1
        except StreamClosed as e:
            await _close(ws, e.code, e.reason)
        except WebSocketDisconnect:
            pass  # the client went away: nothing to answer
        except Exception:  # noqa: BLE001  (logged here; the client gets a one-line reason)
            traceback.print_exc(file=sys.stderr)
            await _close(ws, 1011, "internal server error")

    async def _utterance(self, ws: WebSocket) -> None:
        utterance = Utterance(self.speech, self.executor)
        sender = asyncio.create_task(_send_partials(ws, utterance.partials))
        try:
            await self._receive_audio(ws, utterance)
            utterance.end()
            final = await utterance.final
            await sender  # the partials before the final
            await ws.send_json({"final": final})
            await _close(ws, 1000, "")
        finally:
            utterance.end()  # lets the thread finish when the client failed or left
            sender.cancel()

    async def _receive_audio(self, ws: WebSocket, utterance: Utterance) -> None:
        """Feed the binary messages to ``utterance`` until the end event."""
        max_samples, samples = self.max_seconds * self.speech.sample_rate, 0
        while True:
            try:
                message = await asyncio.wait_for(ws.receive(), self.idle_seconds)
            except asyncio.TimeoutError:
                raise StreamClosed(1008, f"no message for {self.idle_seconds:g} s; "
                                         "closed as idle") from None
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            if message.get("bytes") is not None:
                data = message["bytes"]
                if len(data) % 2:
                    raise StreamClosed(1007, f"a binary message of {len(data)} bytes: expected "
                                             "whole 16-bit samples (an even number of bytes)")
                samples += len(data) // 2
                if samples > max_samples:
                    raise StreamClosed(1008, f"the stream is longer than {self.max_seconds:g} s "
                                             "of audio (the limit); send the end event sooner")
                utterance.push(pcm16_samples(data))
            elif _is_end(message.get("text")):
                return
            else:
                raise StreamClosed(1003, 'text message: expected binary PCM, or {"event": '
                                         '"end"} to finish')


def _is_end(text) -> bool:
    try:
        return json.loads(text) == END_EVENT
    except (TypeError, ValueError):
        return False


async def _send_partials(ws: WebSocket, partials: asyncio.Queue) -> None:
    try:
        while (text := await partials.get()) is not None:
            await ws.send_json({"partial": text})
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass  # the client went away; the receiving side ends the utterance


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason)
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass  # already closed by the client
