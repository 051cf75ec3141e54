"""SSE framing and the bridge between a generation thread and the event loop.

Generation runs in its own thread (the engine blocks); what it produces crosses to the event loop through a
per-stream deque, and one :class:`_Waker` per event loop wakes the loop once for every stream that has new
records (one cross-thread call per loop turn, not one per token per stream); records that are waiting
together are written together. When the client goes away,
Starlette cancels the streaming task; the ``finally`` of
:func:`stream_from_thread` then sets the request's cancel event and the engine stops at its next token.
A non-streaming request polls for a disconnect while it waits (:func:`wait_for_thread`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections import deque
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


class _Waker:
    """Wakes the streams of one event loop that have new records, with one ``call_soon_threadsafe`` per loop
    turn however many streams (and records) arrived meanwhile. Under load the engine hands out a token to
    every stream per decode step; a wake-up (a self-pipe write and a loop iteration) per token per stream
    was a large part of what the server spent per token."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.ready: dict[int, asyncio.Event] = {}
        self.posted = False

    def notify(self, event: asyncio.Event) -> None:
        """From any thread: ``event`` is set on the loop soon."""
        with self.lock:
            self.ready[id(event)] = event
            if self.posted:
                return
            self.posted = True
        _post(self.loop, self._wake)

    def _wake(self) -> None:
        with self.lock:
            ready, self.ready, self.posted = self.ready, {}, False
        for event in ready.values():
            event.set()


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()


def _waker(loop: asyncio.AbstractEventLoop) -> _Waker:
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = _Waker(loop)
    return waker


def stream_from_thread(work: Callable[[Callable[[str], None]], None], cancel: threading.Event,
                       on_exit: Callable[[], None]) -> AsyncIterator[str]:
    """Start ``work(emit)`` in a thread now; the returned iterator yields what it emits."""
    waker = _waker(asyncio.get_running_loop())
    pending: deque[Any] = deque()  # appended by the worker thread, drained by the loop
    ready = asyncio.Event()

    def emit(text: str) -> None:
        pending.append(text)
        waker.notify(ready)

    def target() -> None:
        try:
            work(emit)
        except Exception:
            log.exception("streaming worker failed")
        finally:
            pending.append(_CLOSE)
            waker.notify(ready)
            on_exit()

    threading.Thread(target=target, name="gptoss-request", daemon=True).start()

    async def events() -> AsyncIterator[str]:
        # Records already waiting go out in one write: under load a stream's events pile up between two turns
        # of the event loop, and one send per record costs the loop (and the client) more than the model.
        try:
            while True:
                await ready.wait()
                ready.clear()  # before draining: a record appended after the drain sets it again
                parts: list[str] = []
                closed = False
                while pending:
                    item = pending.popleft()
                    if item is _CLOSE:
                        closed = True
                        break
                    parts.append(item)
                if parts:
                    yield parts[0] if len(parts) == 1 else "".join(parts)
                if closed:
                    return
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
