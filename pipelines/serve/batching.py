"""Dynamic batching, as TF Serving and Triton do it: the sentences of requests that
arrive together are translated in one model call.

A beam search over a batch of 32 sentences costs little more than over one (the matrix
products are wider, the number of steps is the longest sentence's), so under load one
call per gathered batch multiplies throughput; a lone request waits at most
``max_wait`` seconds for company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class DynamicBatcher:
    """Gathers requests (lists of items) into calls of ``fn(items) -> results``, run one
    at a time in a worker thread.

    A batch closes when it holds ``max_batch`` items, when adding the next request would
    overflow it (that request starts the next batch; a request is never split), or
    ``max_wait`` seconds after its first request. Requests that arrive while a batch runs
    queue up and make the next one, so batches grow with the load by themselves.
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int, max_wait: float):
        self.fn, self.max_batch, self.max_wait = fn, max_batch, max_wait
        self.queue: asyncio.Queue = asyncio.Queue()
        self.calls = 0  # model calls made (for /v1/models and the tests)

    async def submit(self, items: list) -> list:
        if not items:
            return []
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def run(self) -> None:
        """The batching loop; runs until cancelled."""
        loop, carry = asyncio.get_running_loop(), None
        while True:
            batch = [carry or await self.queue.get()]
            carry, size = None, len(batch[0][0])
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                if self.queue.empty():
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        request = await asyncio.wait_for(self.queue.get(), timeout)
                    except asyncio.TimeoutError:  # not the builtin one before Python 3.11
                        break
                else:  # already waiting: taken even with max_wait 0
                    request = self.queue.get_nowait()
                if size + len(request[0]) > self.max_batch:
                    carry = request
                    break
                batch.append(request)
                size += len(request[0])
            await self._call(batch)

    async def _call(self, batch) -> None:
        items = [item for request, _ in batch for item in request]
        self.calls += 1
        try:
            results = await asyncio.to_thread(self.fn, items)
        except Exception as e:  # noqa: BLE001  (each waiting request gets the error)
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for request, future in batch:
            if not future.done():  # the client may have gone
                future.set_result(results[start:start + len(request)])
            start += len(request)
