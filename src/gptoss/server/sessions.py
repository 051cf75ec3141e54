"""Built-in tool sessions (browser page stack, python interpreter) for the server's conversations.

The server is started with the built-ins it may offer (``gptoss serve --browser local|web --python``); a
request gets *fresh* tools for the namespaces it uses. After a stored Responses turn its tools are kept
under the new response id (at most ``keep`` sessions, oldest closed first), so a request continuing with
``previous_response_id`` finds its python variables and the pages its citations point at. A session is
taken out while a turn uses it, so two requests never share an interpreter. Chat requests and
``store: false`` responses close their tools when the turn ends.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptoss.server.errors import APIError
from gptoss.server.protocol import new_id

log = logging.getLogger("gptoss.server")
DEFAULT_KEEP = 16


@dataclass
class ToolSession:
    namespaces: tuple[str, ...]
    tools: list[Any] = field(default_factory=list)
    container_id: str = field(default_factory=lambda: new_id("cntr"))

    def system_options(self) -> dict[str, Any]:
        """``system_message`` keywords declaring these tools."""
        from gptoss.tools.builtin import system_message_options

        return system_message_options(self.tools) if self.tools else {}

    def close(self) -> None:
        from gptoss.tools.builtin import close_tools

        try:
            close_tools(self.tools)
        except Exception:  # closing must not fail a request
            log.exception("closing built-in tools failed")


class ToolSessions:
    def __init__(self, options: Any = None, keep: int = DEFAULT_KEEP,
                 factory: Callable[[tuple[str, ...]], list[Any]] | None = None,
                 available: Sequence[str] = ()) -> None:
        """``options``: a :class:`gptoss.tools.builtin.BuiltinOptions` (None: no built-ins). ``factory`` (tests,
        embedding): builds the tools for a tuple of namespaces instead, offering ``available``."""
        self.options = options
        self.factory = factory
        self._available = tuple(available)
        self.keep = max(0, keep)
        self._kept: OrderedDict[str, ToolSession] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def available(self) -> tuple[str, ...]:
        opts = self.options
        if self.factory is not None:
            return self._available
        if opts is None:
            return ()
        return tuple(ns for ns, on in (("browser", opts.browser is not None), ("python", opts.python)) if on)

    def checkout(self, namespaces: Sequence[str], previous_id: str | None = None) -> ToolSession:
        """Tools for ``namespaces``: the session kept for ``previous_id`` if it has the same ones, else new."""
        wanted = tuple(ns for ns in ("browser", "python") if ns in namespaces)
        if not wanted:
            return ToolSession(())
        if previous_id is not None:
            with self._lock:
                kept = self._kept.pop(previous_id, None)
            if kept is not None:
                if kept.namespaces == wanted:
                    return kept
                kept.close()
        try:
            tools = self._make(wanted)
        except Exception as e:
            log.exception("built-in tools could not be created")
            raise APIError(f"built-in tools are unavailable: {e}", status=503, code="tool_unavailable") from None
        return ToolSession(wanted, tools)

    def _make(self, wanted: tuple[str, ...]) -> list[Any]:
        if self.factory is not None:
            return list(self.factory(wanted))
        from gptoss.tools.builtin import make_builtin_tools

        opts = dataclasses.replace(self.options, browser=self.options.browser if "browser" in wanted else None,
                                   python="python" in wanted,
                                   unsafe_python=self.options.unsafe_python and "python" in wanted)
        return make_builtin_tools(opts)

    def checkin(self, session: ToolSession, response_id: str | None) -> None:
        """Keep ``session`` for a continuation of ``response_id``, or close it (None)."""
        if not session.tools:
            return
        if response_id is None or self.keep == 0:
            session.close()
            return
        with self._lock:
            self._kept[response_id] = session
            evicted = []
            while len(self._kept) > self.keep:
                evicted.append(self._kept.popitem(last=False)[1])
        for s in evicted:
            s.close()

    def close(self) -> None:
        with self._lock:
            sessions, self._kept = list(self._kept.values()), OrderedDict()
        for s in sessions:
            s.close()
