"""The ``browser`` built-in tool (SPEC §5.1) and its backends.

- :class:`BrowserTool`: search / open / find with a page stack, rendered as the model was trained to read;
- :class:`LocalBackend` over a :class:`LocalIndex` (SQLite FTS5, BM25): private by construction, never networked;
- :class:`WebBackend`: opt-in, allowlisted HTTP(S) and a configured SearXNG-style search endpoint;
- :func:`resolve_citations`: ``【cursor†La-Lb】`` markers in an answer -> ``url_citation`` annotations.

Any object with ``search(query, topn) -> list[Result]`` and ``fetch(url) -> Page`` is a backend.
"""

from gptoss.tools.browser.citations import resolve_citations
from gptoss.tools.browser.local import AddReport, IndexFileError, LocalBackend, LocalIndex, default_index_path
from gptoss.tools.browser.page import BrowserPage, Page, Result
from gptoss.tools.browser.tool import BrowserError, BrowserState, BrowserTool, SearchBackend
from gptoss.tools.browser.web import HostNotAllowed, WebBackend

__all__ = [
    "AddReport", "BrowserError", "BrowserPage", "BrowserState", "BrowserTool", "HostNotAllowed", "IndexFileError",
    "LocalBackend", "LocalIndex", "Page", "Result", "SearchBackend", "WebBackend", "default_index_path",
    "resolve_citations",
]
