"""The ``browser`` tool (SPEC §5.1): search, open and find over an injected backend, with a page stack.

Every call pushes a page and answers with a display of it::

    [{cursor}] {title} ({url})
    **viewing lines [{first} - {last}] of {last_line_index}**

    L{first}: ...

Backends are injected (:class:`SearchBackend`): the local full-text index (``local.py``), the opt-in web backend
(``web.py``) or a fake in tests. Nothing here touches the network or the disk. Errors (a bad cursor, ``loc`` past
the end, an unknown link id, a failed fetch) come back as ordinary text, and every output is length-bounded and free
of harmony control-token literals.

One :class:`BrowserTool` holds one conversation's page stack: create one per conversation.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote, unquote

from gptoss.tools.base import Tool, ToolCall
from gptoss.tools.browser.page import (
    BrowserPage,
    Page,
    Result,
    build_page,
    neutralize,
    one_line,
    search_page,
    truncate,
)

VIEW_TOKENS = 1024
MAX_SEARCH_RESULTS = 20
MAX_OUTPUT_CHARS = 24_000
FIND_MAX_RESULTS = 50
FIND_SHOW_LINES = 4
PAGE_CACHE_SIZE = 64
VIEW_SOURCE_PREFIX = "view-source:"

_LINK_RE = re.compile(r"【\d+†(?P<content>[^†】]+)(?P<rest>†[^†】]+)?】")


class BrowserError(Exception):
    """A browsing failure the model should read (bad cursor, fetch error, refused host ...)."""


@runtime_checkable
class SearchBackend(Protocol):
    """Where pages come from. Exceptions raised here become error text for the model."""

    def search(self, query: str, topn: int) -> list[Result]: ...

    def fetch(self, url: str) -> Page: ...


class BrowserState:
    """The page stack (cursor = index, from 0) and a small cache of rendered pages by URL."""

    def __init__(self) -> None:
        self.pages: list[BrowserPage] = []
        self.cache: OrderedDict[str, BrowserPage] = OrderedDict()

    @property
    def current_cursor(self) -> int:
        return len(self.pages) - 1

    def push(self, page: BrowserPage) -> int:
        self.pages.append(page)
        return len(self.pages) - 1

    def pop(self) -> None:
        self.pages.pop()

    def get(self, cursor: int = -1) -> BrowserPage:
        if not self.pages:
            raise BrowserError("No pages to access! Use `search` or open a URL first.")
        if cursor == -1:
            return self.pages[-1]
        if not 0 <= cursor < len(self.pages):
            raise BrowserError(f"Cursor `{cursor}` is out of range. "
                               f"Available cursor indices: [0 - {len(self.pages) - 1}].")
        return self.pages[cursor]

    def page_at(self, cursor: int) -> BrowserPage | None:
        return self.pages[cursor] if 0 <= cursor < len(self.pages) else None

    def remember(self, page: BrowserPage) -> None:
        self.cache[page.url] = page
        self.cache.move_to_end(page.url)
        while len(self.cache) > PAGE_CACHE_SIZE:
            self.cache.popitem(last=False)


def strip_links(text: str) -> str:
    """Link markup -> anchor text, keeping line breaks inside wrapped links (so line numbers survive)."""
    def sub(m: re.Match[str]) -> str:
        return m.group("content") + "\n" * (m.group("rest") or "").count("\n")

    return _LINK_RE.sub(sub, text)


def word_count(text: str) -> int:
    """A tokenizer-free token estimate (words and punctuation runs)."""
    return len(re.findall(r"\w+|[^\w\s]+", text))


def _tokenizer_count() -> Callable[[str], int]:
    from gptoss.tokenizer import get_tokenizer

    tok = get_tokenizer()
    return lambda text: len(tok.encode(text))


# --- argument checking -------------------------------------------------------------------------------------------

_SIGNATURES: dict[str, dict[str, Any]] = {
    "search": {"query": None, "topn": 10, "source": None},
    "open": {"id": -1, "cursor": -1, "loc": -1, "num_lines": -1, "view_source": False, "source": None},
    "find": {"pattern": None, "cursor": -1},
}
_REQUIRED = {"search": ("query",), "find": ("pattern",)}


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise BrowserError(f"`{name}` must be a number, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    raise BrowserError(f"`{name}` must be an integer, got {json.dumps(value)}")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise BrowserError(f"`{name}` must be true or false, got {json.dumps(value)}")


def _as_text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BrowserError(f"`{name}` must be a string, got {json.dumps(value)}")
    text = str(value)
    if not text.strip():
        raise BrowserError(f"`{name}` must not be empty")
    return text


def parse_arguments(function: str, text: str) -> dict[str, Any]:
    """JSON argument text -> checked keyword arguments (empty text = ``{}``)."""
    try:
        args = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as e:
        raise BrowserError(f"Error: arguments are not valid JSON ({e.msg} at position {e.pos})") from None
    if not isinstance(args, dict):
        raise BrowserError("Error: arguments must be a JSON object")
    signature = _SIGNATURES[function]
    if "top_n" in args and function == "search":  # a common spelling slip
        args.setdefault("topn", args.pop("top_n"))
    unknown = sorted(set(args) - set(signature))
    if unknown:
        raise BrowserError(f"Error: `{function}` got unknown argument(s) {', '.join(unknown)}; "
                           f"accepted: {', '.join(signature)}")
    for name in _REQUIRED.get(function, ()):
        if args.get(name) is None:
            raise BrowserError(f"Error: `{function}` needs `{name}`")
    out = {**signature, **{k: v for k, v in args.items() if v is not None}}
    for name in ("topn", "cursor", "loc", "num_lines"):
        if name in out:
            out[name] = _as_int(name, out[name])
    if "view_source" in out:
        out["view_source"] = _as_bool("view_source", out["view_source"])
    for name in ("query", "pattern"):
        if name in out:
            out[name] = _as_text(name, out[name])
    if "id" in out and not isinstance(out["id"], str):
        out["id"] = _as_int("id", out["id"])
    elif "id" in out and re.fullmatch(r"\s*-?\d+\s*", out["id"]):
        out["id"] = int(out["id"])  # "3" means link 3, not a URL
    return out


# --- the tool ----------------------------------------------------------------------------------------------------

class BrowserTool(Tool):
    """``browser.search`` / ``browser.open`` / ``browser.find`` over ``backend``.

    ``count_tokens`` measures display size (default: the o200k_harmony tokenizer); ``view_tokens`` is the display
    budget when ``num_lines`` is not given; ``max_output_chars`` bounds any one output.
    """

    namespace = "browser"

    def __init__(self, backend: SearchBackend, *, view_tokens: int = VIEW_TOKENS,
                 max_search_results: int = MAX_SEARCH_RESULTS, max_output_chars: int = MAX_OUTPUT_CHARS,
                 count_tokens: Callable[[str], int] | None = None, state: BrowserState | None = None) -> None:
        self.backend = backend
        self.view_tokens = view_tokens
        self.max_search_results = max_search_results
        self.max_output_chars = max_output_chars
        self._count_tokens = count_tokens
        self.state = state or BrowserState()

    # Tool interface
    def _process(self, call: ToolCall) -> str:
        function = call.name if "." in call.recipient else ""
        if function not in _SIGNATURES:
            return (f"Error: unknown browser function {call.recipient!r}; "
                    "available: browser.search, browser.open, browser.find")
        try:
            args = parse_arguments(function, call.arguments)
            output = getattr(self, function)(**args)
        except BrowserError as e:
            output = str(e)
        return self._bound(neutralize(output))

    def error_message(self, call: ToolCall, error: Exception) -> str:
        return self._bound(neutralize(super().error_message(call, error)))

    def _bound(self, text: str) -> str:
        if len(text) <= self.max_output_chars:
            return text
        return text[: self.max_output_chars - 40].rstrip() + "\n[... output truncated ...]"

    # functions the model calls
    def search(self, query: str, topn: int = 10, source: str | None = None) -> str:
        topn = max(1, min(topn, self.max_search_results))
        try:
            results = list(self.backend.search(query, topn))[:topn]
        except Exception as e:
            raise BrowserError(f"Error during search for `{truncate(one_line(query), 200)}`: {_describe(e)}") from e
        cursor = self.state.push(search_page(query, results))
        return self.show(cursor, 0)

    def open(self, id: int | str = -1, cursor: int = -1, loc: int = -1, num_lines: int = -1,
             view_source: bool = False, source: str | None = None) -> str:
        line_hint: int | None = None
        if isinstance(id, str):
            new_page = self._load(id.strip(), refresh=True, view_source=view_source)
        else:
            current = self.state.get(cursor)
            if id >= 0:
                if id >= len(current.links):
                    have = f"links 0-{len(current.links) - 1}" if current.links else "no links"
                    raise BrowserError(f"Invalid link id `{id}`: page [{self._cursor_of(cursor)}] has {have}.")
                if current.kind == "find" and current.origin is not None:
                    new_page, line_hint = current.origin, current.link_lines.get(id)
                    if view_source:
                        new_page = self._load(new_page.url, refresh=False, view_source=True)
                else:
                    new_page = self._load(current.links[id], refresh=False, view_source=view_source)
            elif view_source:
                if current.kind in ("search", "find"):
                    raise BrowserError("Search and find results pages have no source to view.")
                new_page = self._load(current.url, refresh=False, view_source=True)
            else:
                new_page = current  # scroll: the same page again, on a new cursor
        new_cursor = self.state.push(new_page)
        if loc < 0:
            loc = max(0, line_hint - 4) if line_hint is not None and line_hint > 4 else (line_hint or 0)
        return self.show(new_cursor, loc, num_lines)

    def find(self, pattern: str, cursor: int = -1) -> str:
        page = self.state.get(cursor)
        if page.kind in ("search", "find"):
            raise BrowserError("Cannot run `find` on search results page or find results page")
        cursor = self.state.push(find_page(pattern, page))
        return self.show(cursor, 0)

    # display
    def show(self, cursor: int, loc: int = 0, num_lines: int = -1) -> str:
        """Render page ``cursor`` from line ``loc``; on a bad ``loc`` the page just pushed is popped again."""
        page = self.state.pages[cursor]
        lines = page.lines
        total = len(lines)
        if loc >= total:
            self.state.pop()
            raise BrowserError(f"Invalid location parameter: `{loc}`. Cannot exceed page maximum of {total - 1}.")
        header = f"[{cursor}] {truncate(page.title, 300)}"
        if page.url:
            header += f" ({truncate(unquote(page.url), 300)})"
        budget = self.max_output_chars - len(header) - 100
        body: list[str] = []
        used_tokens = 0
        end = loc
        while end < total:
            if num_lines > 0 and end - loc >= num_lines:
                break
            if num_lines <= 0 and used_tokens >= self.view_tokens:
                break
            line = f"L{end}: {lines[end]}"
            budget -= len(line) + 1
            if budget < 0 and body:
                break
            if num_lines <= 0:
                used_tokens += self.count_tokens(line + "\n")
            body.append(line)
            end += 1
        return f"{header}\n**viewing lines [{loc} - {end - 1}] of {total - 1}**\n\n" + "\n".join(body)

    def count_tokens(self, text: str) -> int:
        if self._count_tokens is None:
            try:
                self._count_tokens = _tokenizer_count()
            except Exception:  # a broken vocabulary install must not break browsing
                self._count_tokens = word_count
        return self._count_tokens(text)

    # helpers
    def _cursor_of(self, cursor: int) -> int:
        return self.state.current_cursor if cursor == -1 else cursor

    def _load(self, url: str, refresh: bool, view_source: bool) -> BrowserPage:
        if url.startswith(VIEW_SOURCE_PREFIX):
            url, view_source = url[len(VIEW_SOURCE_PREFIX):], True
        if not url:
            raise BrowserError("Cannot open an empty URL.")
        key = VIEW_SOURCE_PREFIX + url if view_source else url
        if not refresh and key in self.state.cache:
            return self.state.cache[key]
        try:
            fetched = self.backend.fetch(url)
        except Exception as e:
            raise BrowserError(f"Error fetching URL `{truncate(url, 300)}`: {_describe(e)}") from e
        page = build_page(fetched, view_source=view_source)
        self.state.remember(page)
        return page


def _describe(error: Exception) -> str:
    text = one_line(str(error)) or type(error).__name__
    return truncate(text, 500)


def find_page(pattern: str, page: BrowserPage, max_results: int = FIND_MAX_RESULTS,
              show_lines: int = FIND_SHOW_LINES) -> BrowserPage:
    """Exact, case-insensitive matches of ``pattern`` per (wrapped, link-stripped) line of ``page``."""
    needle = pattern.lower()
    lines = strip_links("\n".join(page.lines)).split("\n")
    chunks: list[str] = []
    link_lines: dict[int, int] = {}
    i = 0
    while i < len(lines) and len(chunks) < max_results:
        if needle not in lines[i].lower():
            i += 1
            continue
        k = len(chunks)
        link_lines[k] = i
        chunks.append(f"# 【{k}†match at L{i}】\n" + "\n".join(lines[i:i + show_lines]))
        i += show_lines
    text = "\n\n".join(chunks) if chunks else f"No `find` results for pattern: `{pattern}`"
    return BrowserPage(url=f"{page.url.rstrip('/')}/find?pattern={quote(pattern)}",
                       title=f"Find results for text: `{pattern}` in `{page.title}`", text=text,
                       links=[page.url] * len(chunks), kind="find", link_lines=link_lines, origin=page)
