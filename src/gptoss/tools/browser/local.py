"""The local backend: a full-text index of a folder in SQLite FTS5, ranked with BM25. Never leaves the machine.

Indexed: ``.txt``, ``.md``/``.markdown``, ``.html``/``.htm`` (rendered with links, scripts and styles dropped) and
``.pdf`` (text via pypdf). Hidden files and folders are skipped. A document's URL is its absolute ``file://`` URL;
its title comes from ``<title>``, the first heading, PDF metadata, or the file name.

Re-adding a folder re-reads only files whose size or mtime changed and drops files that are gone. Files that cannot
be read (permissions, binary data, a corrupt PDF) are skipped and reported, never fatal.

:class:`LocalBackend` serves the browser tool from an index: ``search`` ranks documents, ``fetch`` returns only
documents *in the index* (the model cannot read arbitrary files by guessing ``file://`` URLs), from the stored copy.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from gptoss.tools.browser.page import Page, Result, render_html, render_markdown, source_label

SCHEMA_VERSION = 1
TEXT_SUFFIXES = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
                 ".html": "html", ".htm": "html", ".pdf": "pdf"}
SKIP_DIRS = {"__pycache__", "node_modules"}
MAX_FILE_BYTES = 64 << 20
MAX_QUERY_TERMS = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots(path TEXT PRIMARY KEY, added REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS docs(
    id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, root TEXT NOT NULL, kind TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, title TEXT NOT NULL, html TEXT);
CREATE INDEX IF NOT EXISTS docs_root ON docs(root);
CREATE VIRTUAL TABLE IF NOT EXISTS docs_fts USING fts5(title, body, tokenize='porter unicode61 remove_diacritics 2');
"""


class IndexFileError(ValueError):
    """The index file is missing, corrupt, or not a gptoss index."""


class UnreadableFile(Exception):
    """One file could not be indexed (the reason is the message)."""


def default_index_path() -> Path:
    """``$GPTOSS_CACHE_DIR`` or ``$XDG_CACHE_HOME/gptoss`` or ``~/.cache/gptoss``, then ``indexes/default.sqlite``."""
    base = os.environ.get("GPTOSS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gptoss")
    return Path(base) / "indexes" / "default.sqlite"


@dataclass
class Extracted:
    title: str
    body: str  # what is searched (and shown, except for HTML)
    html: str | None = None  # HTML documents keep their source so links survive to `open`


@dataclass
class AddReport:
    root: str
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    @property
    def files(self) -> int:
        return self.added + self.updated + self.unchanged


@dataclass
class RootInfo:
    path: str
    files: int
    added: float
    updated: float


# --- text extraction ---------------------------------------------------------------------------------------------

def _decode(data: bytes, charset: str | None = None) -> str:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnreadableFile("binary data (NUL bytes) in a text file")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    for codec in (charset, "utf-8-sig"):
        if codec:
            try:
                return data.decode(codec)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("cp1252", errors="replace")


_META_CHARSET_RE = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def html_charset(data: bytes) -> str | None:
    m = _META_CHARSET_RE.search(data[:4096])
    return m.group(1).decode("ascii") if m else None


def extract_pdf(data: bytes | Path) -> tuple[str, str]:
    """(title from metadata or "", text of all pages). Raises UnreadableFile."""
    import io

    from pypdf import PdfReader

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # pypdf warns loudly about harmless quirks
    try:
        reader = PdfReader(io.BytesIO(data) if isinstance(data, bytes) else str(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFile("encrypted PDF")
        parts = [(page.extract_text() or "").strip() for page in reader.pages]
        title = ""
        try:
            meta = reader.metadata
            title = str(meta.title or "") if meta is not None else ""
        except Exception:
            title = ""
        return title.strip(), "\n\n".join(p for p in parts if p)
    except UnreadableFile:
        raise
    except Exception as e:  # pypdf raises many types on damaged files; one bad PDF must not stop indexing
        raise UnreadableFile(f"unreadable PDF ({type(e).__name__}: {e})") from None


def extract_file(path: Path) -> Extracted:
    """Title and searchable text of one file. Raises UnreadableFile."""
    kind = TEXT_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnreadableFile("unsupported file type")
    try:
        if kind == "pdf":
            meta_title, text = extract_pdf(path)
            return Extracted(title=meta_title or path.name, body=text)
        data = path.read_bytes()
    except OSError as e:
        raise UnreadableFile(e.strerror or str(e)) from None
    if kind == "html":
        source = _decode(data, html_charset(data))
        r = render_html(source, path.as_uri())
        return Extracted(title=r.title or r.first_heading or path.name, body=_LINK_MARKUP_RE.sub(r"\1", r.text),
                         html=source)
    text = _decode(data)
    if kind == "markdown":
        r = render_markdown(text, path.as_uri())
        return Extracted(title=r.first_heading or path.name, body=text)
    return Extracted(title=path.name, body=text)


_LINK_MARKUP_RE = re.compile(r"【\d+†([^†】]*)(?:†[^†】]*)?】")


def iter_files(root: Path, skipped: list[tuple[str, str]]) -> Iterator[Path]:
    """Indexable files under ``root`` in a stable order; hidden entries and cache folders are skipped."""
    def onerror(e: OSError) -> None:
        skipped.append((str(e.filename or root), e.strerror or str(e)))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in TEXT_SUFFIXES:
                yield Path(dirpath) / name


# --- the index ---------------------------------------------------------------------------------------------------

_MD_MARKS_RE = re.compile(r"(?m)^\s{0,3}#{1,6}\s+|^\s{0,3}[-*+>]\s+")


def _plain_snippet(text: str) -> str:
    """Snippets come from the raw text: drop Markdown heading, list and quote markers at line starts."""
    return _MD_MARKS_RE.sub("", text)


def _fts_query(terms: list[str], op: str) -> str:
    return f" {op} ".join('"' + t.replace('"', '""') + '"' for t in terms)


class LocalIndex:
    """A SQLite FTS5 index file. ``create=False`` refuses to create a missing index."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, create: bool = True) -> None:
        self.path = Path(path).expanduser() if path is not None else default_index_path()
        if not self.path.exists():
            if not create:
                raise IndexFileError(f"no local index at {self.path}; build one with `gptoss index add DIR`")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_file():
            raise IndexFileError(f"index path {self.path} is not a file")
        self._lock = threading.RLock()
        try:
            self.db = sqlite3.connect(str(self.path), check_same_thread=False)
        except sqlite3.Error as e:
            raise IndexFileError(f"cannot open index {self.path}: {e}") from None
        try:
            with self.db:
                self.db.executescript(_SCHEMA)
                row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    self.db.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise IndexFileError(f"index {self.path} has schema version {row[0]}, expected "
                                         f"{SCHEMA_VERSION}; delete it and run `gptoss index add` again")
        except sqlite3.OperationalError as e:
            self.db.close()
            if "fts5" in str(e).lower():
                raise IndexFileError("this Python's sqlite3 was built without FTS5; the local index needs it") \
                    from None
            raise IndexFileError(f"index {self.path} is unusable: {e}") from None
        except sqlite3.DatabaseError as e:
            self.db.close()
            raise IndexFileError(f"index {self.path} is corrupt or not a gptoss index ({e})") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> LocalIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # building
    def add(self, directory: str | os.PathLike[str],
            progress: Callable[[int, int, str], None] | None = None) -> AddReport:
        """Index (or refresh) every supported file under ``directory``. ``progress(done, total, path)``."""
        root = Path(directory).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"no such directory: {root}")
        if not root.is_dir():
            raise ValueError(f"not a directory: {root}")
        root = root.resolve()
        report = AddReport(root=str(root))
        files = list(iter_files(root, report.skipped))
        with self._lock, self.db:
            known = {row[0]: (row[1], row[2], row[3]) for row in self.db.execute(
                "SELECT path, id, mtime_ns, size FROM docs WHERE root=?", (str(root),))}
            seen: set[str] = set()
            for done, file in enumerate(files):
                if progress is not None:
                    progress(done, len(files), str(file))
                self._add_file(file, root, known, seen, report)
            for path, (doc_id, _, _) in known.items():
                if path not in seen:
                    self._delete(doc_id)
                    report.removed += 1
            now = time.time()
            self.db.execute("INSERT INTO roots VALUES(?, ?, ?) "
                            "ON CONFLICT(path) DO UPDATE SET updated=excluded.updated", (str(root), now, now))
        if progress is not None:
            progress(len(files), len(files), "")
        return report

    def _add_file(self, file: Path, root: Path, known: dict[str, tuple[int, int, int]], seen: set[str],
                  report: AddReport) -> None:
        path = str(file.resolve()) if file.is_symlink() else str(file)
        try:
            st = file.stat()
        except OSError as e:
            report.skipped.append((str(file), e.strerror or str(e)))
            return
        seen.add(path)
        old = known.get(path)
        if old is None:
            row = self.db.execute("SELECT id, mtime_ns, size FROM docs WHERE path=?", (path,)).fetchone()
            old = tuple(row) if row else None  # indexed under another root: claim it
        if old is not None and old[1] == st.st_mtime_ns and old[2] == st.st_size:
            self.db.execute("UPDATE docs SET root=? WHERE id=?", (str(root), old[0]))
            report.unchanged += 1
            return
        try:
            if st.st_size > MAX_FILE_BYTES:
                raise UnreadableFile(f"larger than {MAX_FILE_BYTES >> 20} MiB")
            doc = extract_file(Path(path))
        except Exception as e:  # UnreadableFile, or a renderer bug: skip the file, never stop indexing
            reason = str(e) if isinstance(e, UnreadableFile) else f"{type(e).__name__}: {e}"
            report.skipped.append((str(file), reason))
            seen.discard(path)  # a previously indexed version is dropped with the deleted files
            return
        if old is not None:
            self._delete(old[0])
        cur = self.db.execute(
            "INSERT INTO docs(path, root, kind, mtime_ns, size, title, html) VALUES(?, ?, ?, ?, ?, ?, ?)",
            (path, str(root), TEXT_SUFFIXES[file.suffix.lower()], st.st_mtime_ns, st.st_size, doc.title, doc.html))
        self.db.execute("INSERT INTO docs_fts(rowid, title, body) VALUES(?, ?, ?)",
                        (cur.lastrowid, doc.title, doc.body))
        if old is None:
            report.added += 1
        else:
            report.updated += 1

    def _delete(self, doc_id: int) -> None:
        self.db.execute("DELETE FROM docs_fts WHERE rowid=?", (doc_id,))
        self.db.execute("DELETE FROM docs WHERE id=?", (doc_id,))

    def remove(self, directory: str | os.PathLike[str]) -> int:
        """Forget an indexed folder and its documents; returns how many documents were dropped."""
        root = str(Path(directory).expanduser().resolve())
        with self._lock, self.db:
            if self.db.execute("SELECT 1 FROM roots WHERE path=?", (root,)).fetchone() is None:
                indexed = ", ".join(r.path for r in self.roots()) or "nothing"
                raise ValueError(f"{root} is not an indexed folder (indexed: {indexed})")
            ids = [r[0] for r in self.db.execute("SELECT id FROM docs WHERE root=?", (root,))]
            for doc_id in ids:
                self._delete(doc_id)
            self.db.execute("DELETE FROM roots WHERE path=?", (root,))
        return len(ids)

    def roots(self) -> list[RootInfo]:
        with self._lock:
            rows = self.db.execute(
                "SELECT r.path, COUNT(d.id), r.added, r.updated FROM roots r LEFT JOIN docs d ON d.root = r.path "
                "GROUP BY r.path ORDER BY r.path").fetchall()
        return [RootInfo(path=p, files=n, added=a, updated=u) for p, n, a, u in rows]

    def count(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    # reading
    def search(self, query: str, topn: int = 10) -> list[Result]:
        """BM25-ranked documents (title matches weigh 5x). Documents with every term come first, then any term."""
        terms = list(dict.fromkeys(re.findall(r"\w+", query.lower())))[:MAX_QUERY_TERMS]
        if not terms or topn <= 0:
            return []
        sql = ("SELECT f.rowid, d.path, d.title, snippet(docs_fts, 1, '', '', '…', 32) FROM docs_fts f "
               "JOIN docs d ON d.id = f.rowid WHERE docs_fts MATCH ? ORDER BY bm25(docs_fts, 5.0, 1.0) LIMIT ?")
        hits: dict[int, Result] = {}
        with self._lock:
            for op in ("AND", "OR") if len(terms) > 1 else ("AND",):
                for doc_id, path, title, snippet in self.db.execute(sql, (_fts_query(terms, op), topn)):
                    if doc_id not in hits and len(hits) < topn:
                        hits[doc_id] = Result(url=Path(path).as_uri(), title=title, snippet=_plain_snippet(snippet))
                if len(hits) >= topn:
                    break
        return list(hits.values())

    def get(self, url: str) -> Page | None:
        """The stored document behind a ``file://`` URL, or None if it is not in the index."""
        parsed = urlparse(url)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            return None
        path = url2pathname(unquote(parsed.path)) if os.name == "nt" else unquote(parsed.path)
        with self._lock:
            row = self.db.execute("SELECT id, kind, title, html FROM docs WHERE path=?", (path,)).fetchone()
            if row is None:
                return None
            doc_id, kind, title, html = row
            body = self.db.execute("SELECT body FROM docs_fts WHERE rowid=?", (doc_id,)).fetchone()[0]
        url = Path(path).as_uri()
        if html is not None:
            return Page(url=url, title=title, html=html)
        return Page(url=url, title=title, text=body, markdown=kind == "markdown")


class LocalBackend:
    """Browser backend over a :class:`LocalIndex` (or an index path, opened on first use)."""

    source = "local"

    def __init__(self, index: LocalIndex | str | os.PathLike[str] | None = None) -> None:
        self._index = index if isinstance(index, LocalIndex) else None
        self._path = None if isinstance(index, LocalIndex) else index
        self._lock = threading.Lock()

    @property
    def index(self) -> LocalIndex:
        with self._lock:
            if self._index is None:
                self._index = LocalIndex(self._path, create=False)
            return self._index

    def search(self, query: str, topn: int) -> list[Result]:
        return self.index.search(query, topn)

    def fetch(self, url: str) -> Page:
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https"):
            raise PermissionError("web access is off: only documents in the local index can be opened")
        page = self.index.get(url)
        if page is None:
            raise FileNotFoundError(f"{source_label(url)} is not in the local index "
                                    "(only indexed documents can be opened)")
        return page
