"""SSE framing and the bridge between a generation thread and the event loop.

Generation runs in its own thread (the engine blocks); what it produces crosses to the event loop through
an ``asyncio.Queue``; records that are waiting together are written together. When the client goes away,
Starlette cancels the streaming task; the ``finally`` of
:func:`stream_from_thread` then sets the request's cancel event and the engine stops at its next token.
A non-streaming request polls for a disconnect while it waits (:func:`wait_for_thread`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from starlette.requests import Request

log = logging.getLogger("gptoss.server")
T = TypeVar("T")
DONE = "data: [DONE]\n\n"
_CLOSE = object()


def sse_event(event: str, data: dict[str, Any]) -> str:
    """A named SSE record (Responses API)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def sse_data(data: dict[str, Any]) -> str:
    """An unnamed SSE record (Chat Completions chunks)."""
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _post(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
        pass


def stream_from_thread(work: Callable[[Callable[[str], None]], None], cancel: threading.Event,
                       on_exit: Callable[[], None]) -> AsyncIterator[str]:
    """Start ``work(emit)`` in a thread now; the returned iterator yields what it emits."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def emit(text: str) -> None:
        _post(loop, queue.put_nowait, text)

    def target() -> None:
        try:
            work(emit)
        except Exception:
            log.exception("streaming worker failed")
        finally:
            _post(loop, queue.put_nowait, _CLOSE)
            on_exit()

    threading.Thread(target=target, name="gptoss-request", daemon=True).start()

    async def events() -> AsyncIterator[str]:
        # Records already waiting go out in one write: under load a stream's events pile up between two turns
        # of the event loop, and one send per record costs the loop (and the client) more than the model.
        try:
            while (item := await queue.get()) is not _CLOSE:
                parts = [item]
                while not queue.empty():
                    nxt = queue.get_nowait()
                    if nxt is _CLOSE:
                        yield "".join(parts)
                        return
                    parts.append(nxt)
                yield item if len(parts) == 1 else "".join(parts)
        finally:
            cancel.set()  # normal end: harmless; disconnect: stops generation

    return events()


async def wait_for_thread(work: Callable[[], T], cancel: threading.Event, request: Request,
                          on_exit: Callable[[], None], poll: float = 0.5) -> T:
    """Run ``work()`` in a thread; cancel it if the client disconnects meanwhile."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            result = work()
            _post(loop, settle, True, result)
        except Exception as e:
            _post(loop, settle, False, e)
        finally:
            on_exit()

    threading.Thread(target=target, name="gptoss-request", daemon=True).start()
    while True:
        done, _ = await asyncio.wait({future}, timeout=poll)
        if done:
            return future.result()
        if not cancel.is_set() and await request.is_disconnected():
            cancel.set()
