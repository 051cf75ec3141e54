"""Citations in an answer -> ``url_citation`` annotations (SPEC §5.1, §6.3).

The model cites what it read as ``【{cursor}†L{a}-L{b}】`` or ``【{cursor}†L{a}】``. Each cursor is looked up on the
conversation's page stack:

- a document (or its view-source) cites its URL and title;
- a find-results page cites the page that was searched;
- a search-results page cites the result whose link appears in the cited lines (or the nearest one above);
- an unknown cursor (or one with nothing to cite) leaves the marker as plain text, without an annotation.

By default the marker is rewritten to `` ([label](url))`` -- label = domain, or file name for local files -- so a
plain-text or Markdown reader sees a usable link; ``mode="keep"`` leaves the text unchanged. Either way the
annotation's ``start_index``/``end_index`` are Python string (code point) offsets into the returned text.
"""

from __future__ import annotations

import re
from typing import Any

from gptoss.tools.browser.page import BrowserPage, source_label
from gptoss.tools.browser.tool import VIEW_SOURCE_PREFIX, BrowserState

CITATION_RE = re.compile(r"【(\d+)†L(\d+)(?:-L(\d+))?】")
_LINK_START_RE = re.compile(r"【(\d+)†")
_MD_URL_ESCAPES = str.maketrans({" ": "%20", "(": "%28", ")": "%29", "<": "%3C", ">": "%3E"})


def _page_target(page: BrowserPage, first: int, last: int) -> tuple[str, str] | None:
    if page.kind == "find":
        page = page.origin if page.origin is not None else page
    if page.kind == "search":
        lines = page.lines
        first, last = max(0, min(first, len(lines) - 1)), max(0, min(max(first, last), len(lines) - 1))
        ids = [int(m.group(1)) for line in lines[first:last + 1] for m in _LINK_START_RE.finditer(line)]
        if not ids:  # the cited lines continue a result that started above
            above = [int(m.group(1)) for line in lines[:first] for m in _LINK_START_RE.finditer(line)]
            ids = above[-1:]
        ids = [i for i in ids if 0 <= i < len(page.links)]
        if not ids:
            return None
        title = page.link_titles[ids[0]] if ids[0] < len(page.link_titles) else ""
        return page.links[ids[0]], title
    url = page.url.removeprefix(VIEW_SOURCE_PREFIX)
    if not url or "://" not in url:
        return None
    return url, page.title


def resolve_citations(text: str, browser_state: Any, mode: str = "rewrite") -> tuple[str, list[dict[str, Any]]]:
    """Map citation markers in ``text`` to ``url_citation`` annotations; returns ``(text, annotations)``.

    ``browser_state`` is a :class:`BrowserState` (or anything with a ``.state`` that is one, e.g. a
    ``BrowserTool``). ``mode``: ``"rewrite"`` (marker -> `` ([label](url))``) or ``"keep"``.
    """
    if mode not in ("rewrite", "keep"):
        raise ValueError(f"citation mode must be 'rewrite' or 'keep', got {mode!r}")
    state = browser_state if isinstance(browser_state, BrowserState) else getattr(browser_state, "state", None)
    if not isinstance(state, BrowserState):
        raise TypeError("resolve_citations needs a BrowserState (or a BrowserTool)")
    out: list[str] = []
    annotations: list[dict[str, Any]] = []
    length = 0  # len("".join(out)), kept incrementally
    pos = 0
    for m in CITATION_RE.finditer(text):
        page = state.page_at(int(m.group(1)))
        first = int(m.group(2))
        last = int(m.group(3)) if m.group(3) is not None else first
        target = _page_target(page, first, last) if page is not None else None
        if target is None:
            continue  # left as it is, in the text between matches
        url, title = target
        before = text[pos:m.start()]
        out.append(before)
        length += len(before)
        if mode == "keep":
            replacement, start = m.group(0), length
            end = start + len(replacement)
        else:
            label = source_label(url).replace("[", "(").replace("]", ")")
            lead = "" if _ends_space(out) else " "
            replacement = f"{lead}([{label}]({url.translate(_MD_URL_ESCAPES)}))"
            start, end = length + len(lead), length + len(replacement)
        out.append(replacement)
        length += len(replacement)
        annotations.append({"type": "url_citation", "start_index": start, "end_index": end, "url": url,
                            "title": title})
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), annotations


def _ends_space(parts: list[str]) -> bool:
    for part in reversed(parts):
        if part:
            return part[-1].isspace()
    return True  # the start of the text
