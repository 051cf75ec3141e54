"""The built-in tools as commands offer them: ``--browser local|web``, ``--python`` and their options.

One place for ``gptoss chat``, ``gptoss generate`` and ``gptoss serve``:

- :func:`add_builtin_arguments` adds the flags to a parser;
- :func:`options_from_args` checks them and returns a frozen :class:`BuiltinOptions` (ValueError with a
  one-line message for a bad combination);
- :func:`make_builtin_tools` builds *fresh* tool instances: call it once per conversation, so that the
  python interpreter and the browser's page stack belong to that conversation only. It also adds the web
  hosts to the process's egress guard (when the guard is on), so the allowlists of the browser and of the
  guard are the same list;
- :func:`system_message_options` says what the system message must declare for a set of tools.

Privacy by default: no flag means no tools; ``--browser local`` never leaves the machine; ``--browser web``
reaches only the hosts named with ``--web-allow`` and the ``--search-url`` endpoint; ``--python`` runs in a
bwrap sandbox without network, and only ``--unsafe-python`` runs model-written code without one.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gptoss.tools.base import Tool

__all__ = ["BROWSER_BACKENDS", "BuiltinOptions", "add_builtin_arguments", "browser_of", "close_tools",
           "make_builtin_tools", "options_from_args", "system_message_options", "web_guard_hosts"]

BROWSER_BACKENDS = ("local", "web")
# A host name (labels of letters, digits, hyphens), optionally "*." / "." for the domain and its subdomains.
_HOST_RE = re.compile(r"(\*\.|\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?)*\.?")


@dataclass(frozen=True)
class BuiltinOptions:
    """Which built-in tools a conversation gets, and how they are configured."""

    browser: str | None = None  # None, "local" or "web"
    index: Path | None = None  # local index file; None = the default (`gptoss index` uses the same)
    web_allow: tuple[str, ...] = ()  # hosts the web browser may open
    search_url: str | None = None  # SearXNG-style JSON search URL template with {query}
    python: bool = False
    unsafe_python: bool = False  # run python without a sandbox (implies python)

    @property
    def any(self) -> bool:
        return self.browser is not None or self.python


def add_builtin_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--browser``, ``--index``, ``--web-allow``, ``--search-url``, ``--python``, ``--unsafe-python``."""
    from gptoss.tools.browser.local import default_index_path

    g = parser.add_argument_group(
        "built-in tools", "The model's own browser and python tools. Off unless asked for; nothing here reaches "
                          "the network unless --browser web names the hosts.")
    g.add_argument("--browser", choices=BROWSER_BACKENDS, default=None,
                   help="let the model search and read: 'local' = documents indexed with `gptoss index add DIR` "
                        "(never leaves this machine); 'web' = opt-in HTTP(S), only to --web-allow hosts and the "
                        "--search-url endpoint")
    g.add_argument("--index", metavar="PATH", type=Path, default=None,
                   help=f"local index file for --browser local (default: {default_index_path()})")
    g.add_argument("--web-allow", metavar="HOST", action="append", default=[],
                   help="with --browser web: a host the browser may open (repeatable); 'example.com' exactly, "
                        "'*.example.com' for the domain and its subdomains, '*' for any host, HOST:PORT for one "
                        "port only. The process's egress guard allows the same hosts")
    g.add_argument("--search-url", metavar="URL", default=None,
                   help="with --browser web: search endpoint returning SearXNG-style JSON, '{query}' marks the "
                        "query, e.g. 'http://127.0.0.1:8888/search?q={query}&format=json'")
    g.add_argument("--python", action="store_true",
                   help="let the model run Python in a persistent interpreter inside a bubblewrap sandbox (no "
                        "network, read-only system, private /mnt/data, CPU/memory/process/time limits)")
    g.add_argument("--unsafe-python", action="store_true",
                   help="like --python but WITHOUT the sandbox: model-written code runs as you, with your files "
                        "and network (only resource limits apply). Use only where bwrap cannot run")


def _check_host(entry: str) -> str:
    """One ``--web-allow`` entry, normalised: ``host``, ``*.domain``, ``*``, an IP, each optionally ``:PORT``."""
    text = entry.strip().lower()
    bad = ValueError(f"--web-allow {entry!r}: expected a host name like example.com or *.example.com, or an IP "
                     "address, optionally with :PORT (no scheme or path)")
    port = ""
    if text.startswith("["):  # [v6] or [v6]:port
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise bad
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        raise bad
    try:
        addr = ipaddress.ip_address(host)
        shown = f"[{addr}]" if addr.version == 6 and port else str(addr)
    except ValueError:
        if host != "*" and ("/" in host or not _HOST_RE.fullmatch(host)):
            raise bad from None
        shown = host.rstrip(".")
    return f"{shown}:{int(port)}" if port else shown


def options_from_args(args: argparse.Namespace) -> BuiltinOptions:
    """Check the flags of :func:`add_builtin_arguments`; ValueError names the flag at fault."""
    browser = getattr(args, "browser", None)
    index = getattr(args, "index", None)
    web_allow = list(getattr(args, "web_allow", None) or [])
    search_url = getattr(args, "search_url", None)
    unsafe = bool(getattr(args, "unsafe_python", False))
    python = bool(getattr(args, "python", False)) or unsafe
    if browser is not None and browser not in BROWSER_BACKENDS:
        raise ValueError(f"--browser must be one of {', '.join(BROWSER_BACKENDS)}, got {browser!r}")
    if browser != "web" and (web_allow or search_url):
        flag = "--web-allow" if web_allow else "--search-url"
        raise ValueError(f"{flag} only applies to --browser web (the local browser never uses the network)")
    if index is not None and browser != "local":
        raise ValueError("--index only applies to --browser local")
    hosts = tuple(dict.fromkeys(_check_host(h) for h in web_allow))
    if browser == "web":
        if not hosts and not search_url:
            raise ValueError("--browser web needs --web-allow HOST (sites it may open) and/or --search-url URL "
                             "(a search endpoint); nothing else is ever contacted")
        if search_url is not None:
            parsed = urlparse(search_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or "{query}" not in search_url:
                raise ValueError(f"--search-url must be an http(s) URL containing {{query}}, e.g. "
                                 f"'http://127.0.0.1:8888/search?q={{query}}&format=json'; got {search_url!r}")
    if browser == "local":
        from gptoss.tools.browser.local import IndexFileError, default_index_path

        path = Path(index).expanduser() if index is not None else default_index_path()
        if not path.is_file():
            raise IndexFileError(f"--browser local: no local index at {path}; build one with "
                                 f"`gptoss index add DIR`" + (f" --index {path}" if index is not None else ""))
        index = path
    return BuiltinOptions(browser=browser, index=Path(index) if index is not None else None, web_allow=hosts,
                          search_url=search_url, python=python, unsafe_python=unsafe)


def web_guard_hosts(opts: BuiltinOptions) -> list[str]:
    """What the egress guard must allow for these options: the web hosts and the search endpoint's host."""
    if opts.browser != "web":
        return []
    hosts = list(opts.web_allow)
    if opts.search_url:
        host = urlparse(opts.search_url).hostname
        if host:
            hosts.append(host.lower())
    return list(dict.fromkeys(hosts))


def make_builtin_tools(opts: BuiltinOptions) -> list[Tool]:
    """Fresh tools for one conversation (python state and browser pages are never shared between calls)."""
    from gptoss import guard

    tools: list[Tool] = []
    if opts.browser == "local":
        from gptoss.tools.browser.local import LocalBackend
        from gptoss.tools.browser.tool import BrowserTool

        tools.append(BrowserTool(LocalBackend(opts.index)))
    elif opts.browser == "web":
        from gptoss.tools.browser.tool import BrowserTool
        from gptoss.tools.browser.web import WebBackend

        guard.allow(web_guard_hosts(opts))  # the guard and the browser allow the same hosts
        # No $HTTP(S)_PROXY: a proxy would see every URL (and a loopback search endpoint would go through it).
        tools.append(BrowserTool(WebBackend(opts.web_allow, search_url=opts.search_url, use_env_proxies=False)))
    if opts.python:
        from gptoss.tools.python_tool import PythonTool

        tools.append(PythonTool(unsafe=opts.unsafe_python))
    return tools


def close_tools(tools: Iterable[Any]) -> None:
    """End what tools hold (the python interpreter and its scratch directory)."""
    for tool in tools:
        close = getattr(tool, "close", None)
        if callable(close):
            close()


def browser_of(tools: Iterable[Any]) -> Any | None:
    """The conversation's BrowserTool (for citations), or None."""
    return next((t for t in tools if getattr(t, "namespace", None) == "browser"), None)


def system_message_options(tools: Sequence[Any]) -> dict[str, Any]:
    """Keyword arguments for ``harmony.render.system_message``: which built-ins to declare and the python
    tool's description (the trained text with this tool's real timeout, data path and network access)."""
    namespaces = {getattr(t, "namespace", None): t for t in tools}
    out: dict[str, Any] = {"browser": "browser" in namespaces, "python": "python" in namespaces}
    python = namespaces.get("python")
    if python is not None and callable(getattr(python, "instruction", None)):
        out["python_description"] = python.instruction()
    return out
