"""``gptoss index add|list|search|remove``: the local full-text index the browser tool searches.

Everything stays on this machine: files are read from disk and the index is one SQLite file (default
``$GPTOSS_CACHE_DIR/indexes/default.sqlite``, else under ``$XDG_CACHE_HOME/gptoss`` or ``~/.cache/gptoss``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gptoss.cli.common import err_console, positive_int
from gptoss.tools.browser.local import LocalIndex, default_index_path

MAX_WARNINGS_SHOWN = 10

EPILOG = """examples:
  gptoss index add ~/notes ~/papers
  gptoss index search "attention sinks"
  gptoss index list
  gptoss index remove ~/papers
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--index", metavar="PATH", default=None,
                        help=f"index file (default: {default_index_path()})")
    sub = p.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    a = sub.add_parser("add", parents=[common], help="index (or refresh) the documents in folders",
                       description="Index .txt, .md, .html/.htm and .pdf files under each folder. Re-adding a "
                                   "folder re-reads changed files and drops deleted ones.")
    a.add_argument("dirs", nargs="+", metavar="DIR", help="folder to index")
    sub.add_parser("list", parents=[common], help="show indexed folders")
    s = sub.add_parser("search", parents=[common], help="search the index (BM25 ranking)")
    s.add_argument("query", nargs="+", metavar="QUERY", help="words to search for")
    s.add_argument("-n", "--topn", type=positive_int, default=10, help="number of results (default: %(default)s)")
    s.add_argument("--json", action="store_true", help="print results as JSON lines")
    r = sub.add_parser("remove", parents=[common], help="forget indexed folders")
    r.add_argument("dirs", nargs="+", metavar="DIR", help="indexed folder to remove")


def run(args: argparse.Namespace) -> int:
    command = {"add": _add, "list": _list, "search": _search, "remove": _remove}[args.index_command]
    try:
        return command(args)
    except sqlite3.Error as e:  # locked, read-only or full disk: one line, not a traceback
        raise ValueError(f"index {args.index or default_index_path()}: {e}") from None


@contextmanager
def _file_progress(enabled: bool) -> Iterator[Callable[[int, int, str], None]]:
    """A files-done progress bar on stderr, only when stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield lambda done, total, path: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task("indexing", total=None)

        def update(done: int, total: int, path: str) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _add(args: argparse.Namespace) -> int:
    with LocalIndex(args.index) as index:
        for directory in args.dirs:
            with _file_progress(True) as progress:
                report = index.add(directory, progress)
            print(f"indexed {report.root}: {report.files} files ({report.added} added, {report.updated} updated, "
                  f"{report.unchanged} unchanged, {report.removed} removed)"
                  + (f", {len(report.skipped)} skipped" if report.skipped else ""))
            if report.skipped:
                err_console.print(f"[yellow]warning:[/] skipped {len(report.skipped)} file(s) in {report.root}:",
                                  highlight=False)
                for path, reason in report.skipped[:MAX_WARNINGS_SHOWN]:
                    err_console.print(f"  {path}: {reason}", highlight=False, markup=False)
                if len(report.skipped) > MAX_WARNINGS_SHOWN:
                    err_console.print(f"  ... and {len(report.skipped) - MAX_WARNINGS_SHOWN} more", highlight=False)
        print(f"index: {index.path} ({index.count()} documents)")
    return 0


def _list(args: argparse.Namespace) -> int:
    with LocalIndex(args.index, create=False) as index:
        roots = index.roots()
        size = index.path.stat().st_size
        print(f"index: {index.path} ({index.count()} documents, {size / 1e6:.1f} MB)")
        if not roots:
            print("no folders indexed; add one with `gptoss index add DIR`")
        for root in roots:
            when = datetime.datetime.fromtimestamp(root.updated).strftime("%Y-%m-%d %H:%M")
            print(f"{root.path}\t{root.files} files\tupdated {when}")
    return 0


def _search(args: argparse.Namespace) -> int:
    query = " ".join(args.query)
    with LocalIndex(args.index, create=False) as index:
        results = index.search(query, args.topn)
    if args.json:
        for r in results:
            print(json.dumps({"url": r.url, "title": r.title, "snippet": r.snippet}, ensure_ascii=False))
        return 0
    if not results:
        print(f"no results for {query!r}")
    for i, r in enumerate(results, 1):
        print(f"{i}. {r.title}\n   {r.url}\n   {' '.join(r.snippet.split())}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with LocalIndex(args.index, create=False) as index:
        for directory in args.dirs:
            n = index.remove(directory)
            print(f"removed {directory} ({n} documents)")
    return 0
