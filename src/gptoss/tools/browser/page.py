"""Pages as the model reads them (SPEC §5.1): HTML/Markdown/plain text -> text with link markup.

Shared by every backend. Conventions the model was trained on:

- links become ``【{id}†{anchor}】`` (same domain) or ``【{id}†{anchor}†{domain}】`` (other domain), ids
  sequential per page (a URL that appears twice keeps its first id);
- a literal ``【``/``】`` in the source becomes ``〖``/``〗`` and ``†`` inside anchor text becomes ``‡``, so the
  markup stays unambiguous; images become ``[Image k: alt]`` (``[Image k]`` without alt text);
- text is wrapped at 80 columns and numbered ``L{n}: `` from 0 when displayed.

Harmony control-token literals (``<|end|>`` ...) never leave this module: :func:`neutralize` rewrites them
readably (``<｜end｜>``), so page text cannot end or forge a message in the model's context.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field
from functools import cached_property
from html.parser import HTMLParser
from pathlib import PurePosixPath
from urllib.parse import unquote, urldefrag, urljoin, urlparse

from gptoss.tokenizer import CONTROL_TOKENS

WRAP_WIDTH = 80
LINK_SCHEMES = ("http", "https", "file")

_CONTROL_RE = re.compile("|".join(re.escape(t) for t in CONTROL_TOKENS))
_SPECIAL = str.maketrans({"【": "〖", "】": "〗", "\u200b": None, "\ufeff": None})
_WS_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Page:
    """What a backend returns for a URL: ``html`` is rendered with links; ``text`` is shown as it is
    (``markdown=True`` turns ``[text](url)`` links and ``![alt](src)`` images into link/image markup)."""

    url: str
    title: str = ""
    text: str | None = None
    html: str | None = None
    markdown: bool = False


@dataclass(frozen=True)
class Result:
    """One search hit."""

    url: str
    title: str = ""
    snippet: str = ""


@dataclass(eq=False)
class BrowserPage:
    """A page on the browser's stack, already rendered to model-facing text.

    ``kind``: ``page`` (a document), ``source`` (view-source), ``search`` (results) or ``find`` (matches).
    ``links[i]`` is the URL of link ``i``; search pages keep result titles in ``link_titles``; find pages keep the
    searched page in ``origin`` and each match's line in ``link_lines``.
    """

    url: str
    title: str
    text: str
    links: list[str] = field(default_factory=list)
    kind: str = "page"
    link_titles: list[str] = field(default_factory=list)
    link_lines: dict[int, int] = field(default_factory=dict)
    origin: BrowserPage | None = None

    @cached_property
    def lines(self) -> list[str]:
        return wrap_lines(self.text)


def neutralize(text: str) -> str:
    """Rewrite harmony control-token literals readably: ``<|end|>`` -> ``<｜end｜>`` (fullwidth bars)."""
    while True:
        out = _CONTROL_RE.sub(lambda m: "<\uff5c" + m.group(0)[2:-2] + "\uff5c>", text)
        if out == text:
            return out
        text = out


def clean(text: str) -> str:
    """Source text made safe for the markup: special brackets swapped, control literals neutralised."""
    return neutralize(text.translate(_SPECIAL))


def one_line(text: str) -> str:
    return _WS_RE.sub(" ", text).strip()


def anchor_text(text: str) -> str:
    return one_line(clean(text)).replace("†", "‡")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def domain_of(url: str) -> str:
    try:
        return urlparse(url).netloc.lower()
    except ValueError:
        return ""


def source_label(url: str) -> str:
    """Short name of where a URL points: its domain, or the file name for ``file://`` URLs."""
    domain = domain_of(url)
    if domain:
        return domain
    try:
        name = PurePosixPath(unquote(urlparse(url).path)).name
    except ValueError:
        name = ""
    return name or url


def wrap_lines(text: str, width: int = WRAP_WIDTH) -> list[str]:
    """Wrap each line at ``width`` columns, keeping empty lines (the numbering the model cites)."""
    out: list[str] = []
    for line in text.split("\n"):
        if line:
            out += textwrap.wrap(line, width=width, replace_whitespace=False, drop_whitespace=False) or [""]
        else:
            out.append("")
    return out


class Links:
    """Link ids of one page, sequential from 0; a repeated URL keeps its first id."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.base_domain = domain_of(base_url)
        self.urls: list[str] = []
        self._ids: dict[str, int] = {}

    def resolve(self, href: str) -> str | None:
        """The absolute, fragment-free URL of ``href``, or None if it is no followable link."""
        href = href.strip()
        if not href or href.startswith("#"):
            return None
        try:
            target = urldefrag(urljoin(self.base_url, href)).url
            scheme = urlparse(target).scheme
        except ValueError:
            return None
        return target if scheme in LINK_SCHEMES else None

    def markup(self, url: str, text: str) -> str:
        link_id = self._ids.get(url)
        if link_id is None:
            link_id = self._ids[url] = len(self.urls)
            self.urls.append(url)
        domain = domain_of(url)
        if domain == self.base_domain:
            return f"【{link_id}†{text}】"
        return f"【{link_id}†{text}†{domain}】"


# --- HTML -------------------------------------------------------------------------------------------------------

_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "embed", "canvas",
              "select", "datalist"}
_PARAGRAPH_TAGS = {"p", "ul", "ol", "dl", "table", "pre", "blockquote", "figure", "section", "article", "header",
                   "footer", "nav", "main", "aside", "form", "fieldset", "details", "address", "hr",
                   "h1", "h2", "h3", "h4", "h5", "h6"}
_LINE_TAGS = {"div", "li", "tr", "br", "dt", "dd", "figcaption", "summary", "caption", "center", "body"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


class _HTMLRenderer(HTMLParser):
    """Streams HTML into text: blocks become line breaks, headings ``#``, list items ``*``/``1.``, table cells
    ``|``-separated, links and images markup. Scripts, styles and other invisible content are dropped."""

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links = Links(base_url)
        self.out: list[str] = []
        self.title_parts: list[str] | None = None
        self.title = ""
        self.first_heading = ""
        self._h1_seen = False
        self._heading_parts: list[str] | None = None
        self._in_head = False
        self._skip = 0
        self._pre = 0
        self._pending_breaks = 0
        self._trailing_newlines = 2  # the start counts as a paragraph boundary
        self._last = "\n"
        self._prefix = ""
        self._lists: list[list[int]] = []  # per open list: [is ordered, next number]
        self._cells = 0
        self._images = 0
        self._href: str | None = None
        self._anchor: list[str] | None = None
        self._anchor_has_text = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self._in_head = True
            return
        if tag == "body":
            self._in_head = False
        if tag == "title" and not self._skip:
            if self.title_parts is None and not self.title:
                self.title_parts = []
            return
        if tag in _SKIP_TAGS:
            self._skip += 1
            return
        if self._skip:
            return
        a = {k: v or "" for k, v in attrs}
        if tag == "a":
            self._close_anchor()
            self._href, self._anchor, self._anchor_has_text = a.get("href", ""), [], False
            return
        if tag == "img":
            alt = anchor_text(a.get("alt") or a.get("title") or "")
            self._emit(f"[Image {self._images}: {alt}]" if alt else f"[Image {self._images}]", image=True)
            self._images += 1
            return
        self._block(tag)
        if tag in _HEADINGS:
            self._prefix = "#" * _HEADINGS[tag] + " "
            self._heading_parts = []
        elif tag in ("ul", "ol"):
            self._lists.append([tag == "ol", 1])
        elif tag == "li":
            indent = "  " * max(0, len(self._lists) - 1)
            if self._lists and self._lists[-1][0]:
                self._prefix = f"{indent}{self._lists[-1][1]}. "
                self._lists[-1][1] += 1
            else:
                self._prefix = f"{indent}* "
        elif tag == "tr":
            self._cells = 0
        elif tag in ("td", "th"):
            if self._cells:
                self._emit(" | ")
            self._cells += 1
        elif tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self._in_head = False
            return
        if tag == "title":
            if self.title_parts is not None:
                self.title = one_line("".join(self.title_parts))
                self.title_parts = None
            return
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "a":
            self._close_anchor()
            return
        if tag in _HEADINGS:
            text = one_line("".join(self._heading_parts or []))
            if text and (not self.first_heading or (tag == "h1" and not self._h1_seen)):
                self.first_heading = text
                self._h1_seen = tag == "h1"
            self._heading_parts = None
            self._prefix = ""
        elif tag == "li":
            self._prefix = ""
        elif tag in ("ul", "ol") and self._lists:
            self._lists.pop()
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        self._block(tag)

    def _block(self, tag: str) -> None:
        # Called before a list is pushed and after it is popped: a non-empty stack means a nested list.
        if tag in _PARAGRAPH_TAGS and not (tag in ("ul", "ol") and self._lists):
            self._pending_breaks = 2
        elif tag in _LINE_TAGS or tag in ("ul", "ol"):
            self._pending_breaks = max(self._pending_breaks, 1)

    def handle_data(self, data: str) -> None:
        if self.title_parts is not None:
            self.title_parts.append(data)
            return
        if self._skip or self._in_head:
            return
        if self._heading_parts is not None:
            self._heading_parts.append(data)
        if self._pre:
            self._emit(clean(data), raw=True)
        else:
            self._emit(_WS_RE.sub(" ", clean(data)))

    def _close_anchor(self) -> None:
        if self._anchor is None:
            return
        raw, href, has_text = "".join(self._anchor), self._href or "", self._anchor_has_text
        self._anchor, self._href = None, None
        text = anchor_text(raw)
        url = self.links.resolve(href) if has_text else None
        if raw[:1].isspace():
            self._emit(" ")
        self._emit(text if url is None else self.links.markup(url, text))
        if raw[-1:].isspace():
            self._emit(" ")

    def _emit(self, s: str, raw: bool = False, image: bool = False) -> None:
        if not s:
            return
        if self._anchor is not None:
            self._anchor.append(s)
            self._anchor_has_text = self._anchor_has_text or (not image and bool(s.strip()))
            return
        if not raw and not s.strip():  # whitespace between inline elements
            if self._trailing_newlines == 0 and self._last != " " and not self._pending_breaks:
                self.out.append(" ")
                self._last = " "
            return
        if self._pending_breaks:
            need = self._pending_breaks - self._trailing_newlines
            if need > 0 and self.out:
                self.out.append("\n" * need)
                self._trailing_newlines += need
                self._last = "\n"
            self._pending_breaks = 0
        if self._trailing_newlines and not raw:
            s = s.lstrip(" ")
        elif s.startswith(" ") and self._last == " ":
            s = s[1:]
        if not s:
            return
        if self._trailing_newlines and self._prefix:
            s = self._prefix + s
            self._prefix = ""
        self.out.append(s)
        self._last = s[-1]
        stripped = s.rstrip("\n")
        if stripped:
            self._trailing_newlines = len(s) - len(stripped)
        else:
            self._trailing_newlines += len(s)

    def result(self) -> str:
        self._close_anchor()
        if self.title_parts is not None:  # unterminated <title>
            self.title = one_line("".join(self.title_parts))
        lines = [line.rstrip() for line in neutralize("".join(self.out)).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


@dataclass
class Rendered:
    title: str
    text: str
    links: list[str]
    first_heading: str = ""


def render_html(html: str, url: str) -> Rendered:
    """HTML -> model text with link and image markup (stdlib ``html.parser``; tolerant of broken markup)."""
    r = _HTMLRenderer(url)
    r.feed(html)
    r.close()
    text = r.result()
    return Rendered(title=clean(r.title), text=text, links=r.links.urls, first_heading=clean(r.first_heading))


# --- Markdown and plain text -------------------------------------------------------------------------------------

_MD_LINK_RE = re.compile(r"(!?)\[([^\[\]\n]*)\]\(\s*<?([^()\s<>]*)>?(?:\s+(?:\"[^\"\n]*\"|'[^'\n]*'))?\s*\)")
_MD_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def render_markdown(text: str, url: str) -> Rendered:
    """Markdown stays as written, except ``![alt](src)`` -> ``[Image k: alt]`` and ``[text](url)`` -> links."""
    links = Links(url)
    images = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal images
        bang, label, href = m.group(1), anchor_text(m.group(2)), m.group(3)
        if bang:
            images += 1
            return f"[Image {images - 1}: {label}]" if label else f"[Image {images - 1}]"
        target = links.resolve(href)
        if target is None or not label:
            return label
        return links.markup(target, label)

    body = neutralize(_MD_LINK_RE.sub(sub, clean(text)))
    heading = _MD_HEADING_RE.search(text)
    first = anchor_text(_MD_LINK_RE.sub(lambda m: m.group(2), heading.group(1))) if heading else ""
    return Rendered(title="", text=body, links=links.urls, first_heading=first)


def render_text(text: str) -> Rendered:
    return Rendered(title="", text=clean(text), links=[])


def build_page(page: Page, view_source: bool = False) -> BrowserPage:
    """A backend's page rendered for the stack. Title: the backend's, else ``<title>``, else the first heading,
    else the domain or file name."""
    if view_source:
        source = page.html if page.html is not None else (page.text or "")
        r = render_text(source)
        title = clean(one_line(page.title))
        if not title and page.html is not None:
            rendered = render_html(page.html, page.url)
            title = rendered.title or rendered.first_heading
        title = title or source_label(page.url)
        return BrowserPage(url=f"view-source:{page.url}", title=title, text=r.text, kind="source")
    if page.html is not None:
        r = render_html(page.html, page.url)
    elif page.markdown:
        r = render_markdown(page.text or "", page.url)
    else:
        r = render_text(page.text or "")
    title = clean(one_line(page.title)) or r.title or r.first_heading or source_label(page.url)
    return BrowserPage(url=page.url, title=title, text=r.text, links=list(r.links))


def search_page(query: str, results: list[Result]) -> BrowserPage:
    """The synthetic results page: titled by the query, empty URL, result ``k`` is link ``k``."""
    lines = ["# Search Results", ""]
    urls, titles = [], []
    for i, res in enumerate(results):
        label = anchor_text(source_label(res.url)) or "?"
        title = anchor_text(res.title) or label
        snippet = one_line(clean(res.snippet))
        lines.append(f"  * 【{i}†{title}†{label}】" + (f" {snippet}" if snippet else ""))
        urls.append(res.url)
        titles.append(one_line(clean(res.title)) or label)
    if not results:
        lines.append(f"No results found for `{one_line(clean(query))}`.")
    return BrowserPage(url="", title=one_line(clean(query)), text="\n".join(lines), links=urls, kind="search",
                       link_titles=titles)
