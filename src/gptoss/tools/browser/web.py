"""The web backend: opt-in, allowlisted HTTP(S) with the standard library only.

Nothing here runs unless a :class:`WebBackend` is constructed and called. Every request:

- goes only to a host on the allowlist (``example.com`` exactly; ``*.example.com`` or ``.example.com`` for the
  domain and its subdomains; ``*`` for any host; ``host:PORT`` for one port only). Other hosts are refused
  before any DNS lookup or connection, and so are redirects that leave the allowlist;
- is bounded: ``timeout`` seconds for the whole request (and for each socket operation), ``max_bytes`` of body;
- must return an expected content type (HTML, plain text or Markdown, PDF; JSON for search).

Search goes to a user-configured endpoint returning SearXNG-style JSON (``{"results": [{"url", "title",
"content"}]}``); the template's ``{query}`` is replaced by the URL-encoded query (and ``{topn}`` by the count), e.g.
``http://127.0.0.1:8888/search?q={query}&format=json``. The endpoint's host is allowed for search requests only.
Pages are rendered by the same HTML renderer as local files.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote_plus, urlparse

from gptoss import __version__
from gptoss.tools.browser.page import Page, Result

HTML_TYPES = {"text/html", "application/xhtml+xml"}
TEXT_TYPES = {"text/plain", "text/markdown", "text/x-markdown"}
PDF_TYPES = {"application/pdf"}
JSON_TYPES = {"application/json", "application/javascript", "text/json"}
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 5 << 20


class HostNotAllowed(PermissionError):
    """The URL's host is not on the allowlist (nothing was sent)."""


def _split_pattern(pattern: str) -> tuple[str, int | None]:
    """``host``, ``host:8080``, ``[::1]:8080`` -> (host, port or None)."""
    pattern = pattern.strip().lower()
    if pattern.startswith("["):
        host, _, rest = pattern[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if pattern.count(":") == 1:
        host, port = pattern.split(":")
        if port.isdigit():
            return host, int(port)
    return pattern, None


def _host_matches(host: str, pattern: str, port: int | None = None) -> bool:
    pattern, only_port = _split_pattern(pattern)
    if only_port is not None and port is not None and port != only_port:
        return False
    pattern = pattern.rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        pattern = pattern[1:]
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


class WebBackend:
    """Open allowlisted web pages and search through a configured SearXNG-style endpoint."""

    source = "web"

    def __init__(self, allowed_hosts: Iterable[str] = (), *, search_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES, use_env_proxies: bool = True,
                 max_redirects: int = 5, user_agent: str | None = None) -> None:
        self.allowed_hosts = [h.strip().lower() for h in allowed_hosts if h and h.strip()]
        if search_url is not None:
            parsed = urlparse(search_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or "{query}" not in search_url:
                raise ValueError(f"search URL must be an http(s) URL template containing {{query}}, got {search_url!r}")
        if timeout <= 0 or max_bytes <= 0:
            raise ValueError("timeout and max_bytes must be positive")
        self.search_url = search_url
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)
        self.user_agent = user_agent or f"gptoss/{__version__} (browser tool)"
        backend = self

        class _Redirects(urllib.request.HTTPRedirectHandler):
            max_redirections = max_redirects

            def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
                backend._check_url(newurl, extra_host=getattr(req, "extra_host", None))
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        handlers: list[Any] = [_Redirects()]
        if not use_env_proxies:
            handlers.append(urllib.request.ProxyHandler({}))
        self._opener = urllib.request.build_opener(*handlers)

    # allowlist
    def allows(self, host: str | None, port: int | None = None) -> bool:
        """``port`` None: the host on any port it is allowed on."""
        host = (host or "").lower().rstrip(".")
        return bool(host) and any(_host_matches(host, p, port) for p in self.allowed_hosts)

    def _check_url(self, url: str, extra_host: str | None = None) -> None:
        try:
            parsed = urlparse(url)
            host = parsed.hostname
        except ValueError:
            raise ValueError(f"invalid URL {url!r}") from None
        if parsed.scheme not in ("http", "https"):
            raise PermissionError(f"only http(s) URLs can be opened on the web (got {parsed.scheme or 'no'} scheme)")
        if not host:
            raise ValueError(f"URL {url!r} has no host")
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"invalid port in URL {url!r}") from None
        if not (self.allows(host, port) or (extra_host is not None and host.lower() == extra_host)):
            allowed = ", ".join(self.allowed_hosts) or "none"
            raise HostNotAllowed(f"host {host!r} is not on the web allowlist (allowed: {allowed}); "
                                 "nothing was sent")

    # requests
    def _get(self, url: str, accepted: set[str], extra_host: str | None = None) -> tuple[bytes, str, str | None, str]:
        """(body, content type, charset, final URL) of a GET; raises on refusal, HTTP errors, limits."""
        self._check_url(url, extra_host)
        req = urllib.request.Request(url, headers={
            "User-Agent": self.user_agent, "Accept": ", ".join(sorted(accepted)) + ", */*;q=0.1"})
        req.extra_host = extra_host  # type: ignore[attr-defined]  # read by the redirect check
        deadline = time.monotonic() + self.timeout
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                ctype = resp.headers.get_content_type()
                if ctype not in accepted:
                    raise ValueError(f"unsupported content type {ctype!r}")
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > self.max_bytes:
                    raise ValueError(f"response is {int(length)} bytes, over the {self.max_bytes}-byte limit")
                body = bytearray()
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"timed out after {self.timeout:g} s")
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise ValueError(f"response exceeds the {self.max_bytes}-byte limit")
                return bytes(body), ctype, resp.headers.get_content_charset(), resp.geturl()
        except urllib.error.HTTPError as e:
            raise OSError(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise TimeoutError(f"timed out after {self.timeout:g} s") from None
            if isinstance(e.reason, PermissionError | ValueError):
                raise e.reason from None
            raise OSError(f"cannot reach {urlparse(url).hostname}: {e.reason}") from None
        except TimeoutError:
            raise TimeoutError(f"timed out after {self.timeout:g} s") from None

    def fetch(self, url: str) -> Page:
        data, ctype, charset, final_url = self._get(url.strip(), HTML_TYPES | TEXT_TYPES | PDF_TYPES)
        if ctype in PDF_TYPES:
            from gptoss.tools.browser.local import UnreadableFile, extract_pdf

            try:
                title, text = extract_pdf(data)
            except UnreadableFile as e:
                raise ValueError(str(e)) from None
            return Page(url=final_url, title=title, text=text)
        if ctype in HTML_TYPES:
            from gptoss.tools.browser.local import html_charset

            return Page(url=final_url, html=_decode(data, charset or html_charset(data)))
        return Page(url=final_url, text=_decode(data, charset), markdown=ctype != "text/plain")

    def search(self, query: str, topn: int) -> list[Result]:
        if self.search_url is None:
            raise ValueError("no web search endpoint is configured")
        url = self.search_url.replace("{query}", quote_plus(query)).replace("{topn}", str(topn))
        data, _, charset, _ = self._get(url, JSON_TYPES, extra_host=(urlparse(url).hostname or "").lower())
        try:
            payload = json.loads(_decode(data, charset))
        except json.JSONDecodeError as e:
            raise ValueError(f"search endpoint returned invalid JSON ({e.msg})") from None
        items = payload.get("results", []) if isinstance(payload, dict) else payload
        results = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                continue
            if urlparse(item["url"]).scheme not in ("http", "https"):
                continue
            results.append(Result(url=item["url"], title=str(item.get("title") or ""),
                                  snippet=str(item.get("content") or item.get("snippet") or "")))
            if len(results) >= topn:
                break
        return results


def _decode(data: bytes, charset: str | None) -> str:
    for codec in (charset, "utf-8"):
        if codec:
            try:
                return data.decode(codec)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("utf-8", errors="replace")
