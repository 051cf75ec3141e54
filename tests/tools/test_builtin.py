"""``gptoss.tools.builtin``: the --browser/--python flags, their checks, and per-conversation tools."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap

import pytest

from gptoss.tools.base import ToolCall
from gptoss.tools.browser.local import IndexFileError, LocalIndex
from gptoss.tools.browser.tool import BrowserTool
from gptoss.tools.builtin import (
    BuiltinOptions,
    add_builtin_arguments,
    browser_of,
    close_tools,
    make_builtin_tools,
    options_from_args,
    system_message_options,
    web_guard_hosts,
)
from gptoss.tools.python_tool import PythonTool


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_builtin_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture
def index_file(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "owl.md").write_text("# Owls\n\nThe snowy owl hunts lemmings in the Arctic tundra.\n")
    path = tmp_path / "idx.sqlite"
    with LocalIndex(path) as index:
        index.add(docs)
    return path


def test_no_flags_means_no_tools():
    opts = options_from_args(parse())
    assert opts == BuiltinOptions() and not opts.any
    assert make_builtin_tools(opts) == []


def test_help_names_every_flag():
    p = argparse.ArgumentParser()
    add_builtin_arguments(p)
    text = p.format_help()
    for flag in ("--browser {local,web}", "--index PATH", "--web-allow HOST", "--search-url URL", "--python",
                 "--unsafe-python"):
        assert flag in text, flag
    assert "gptoss index add DIR" in text and "WITHOUT the sandbox" in text


@pytest.mark.parametrize("argv, message", [
    (["--web-allow", "example.org"], "--web-allow only applies to --browser web"),
    (["--browser", "local", "--search-url", "http://127.0.0.1:1/?q={query}"], "--search-url only applies"),
    (["--index", "x.sqlite"], "--index only applies to --browser local"),
    (["--browser", "web"], "--browser web needs --web-allow HOST"),
    (["--browser", "web", "--search-url", "http://127.0.0.1:1/search"], "must be an http(s) URL containing {query}"),
    (["--browser", "web", "--search-url", "file:///x?q={query}"], "must be an http(s) URL"),
    (["--browser", "web", "--web-allow", "https://example.org/"], "expected a host name"),
    (["--browser", "web", "--web-allow", "example.org:0"], "optionally with :PORT"),
    (["--browser", "web", "--web-allow", "example.org/docs"], "no scheme or path"),
])
def test_bad_combinations_are_one_line_value_errors(argv, message):
    with pytest.raises(ValueError, match=None) as e:
        options_from_args(parse(*argv))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_local_browser_needs_an_existing_index(tmp_path, index_file):
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(IndexFileError, match="gptoss index add DIR"):
        options_from_args(parse("--browser", "local", "--index", str(missing)))
    opts = options_from_args(parse("--browser", "local", "--index", str(index_file)))
    assert opts.browser == "local" and opts.index == index_file


def test_default_index_location_is_the_one_gptoss_index_uses(tmp_path, monkeypatch, index_file):
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(IndexFileError, match=str(tmp_path / "cache" / "indexes" / "default.sqlite")):
        options_from_args(parse("--browser", "local"))


def test_unsafe_python_implies_python():
    opts = options_from_args(parse("--unsafe-python"))
    assert opts.python and opts.unsafe_python


def test_web_allow_ports_and_addresses():
    opts = options_from_args(parse("--browser", "web", "--web-allow", "127.0.0.1:8080", "--web-allow",
                                   "[::1]:9000", "--web-allow", "::1", "--web-allow", "*"))
    assert opts.web_allow == ("127.0.0.1:8080", "[::1]:9000", "::1", "*")


def test_web_options_and_guard_hosts():
    opts = options_from_args(parse("--browser", "web", "--web-allow", "Docs.Example.org.", "--web-allow",
                                   "*.wiki.example", "--web-allow", "docs.example.org",
                                   "--search-url", "http://127.0.0.1:8888/search?q={query}&format=json"))
    assert opts.web_allow == ("docs.example.org", "*.wiki.example")
    assert web_guard_hosts(opts) == ["docs.example.org", "*.wiki.example", "127.0.0.1"]
    assert web_guard_hosts(BuiltinOptions(browser="local")) == []


def test_tools_are_fresh_per_conversation(index_file):
    opts = options_from_args(parse("--browser", "local", "--index", str(index_file), "--unsafe-python"))
    first, second = make_builtin_tools(opts), make_builtin_tools(opts)
    try:
        assert [t.namespace for t in first] == ["browser", "python"]
        assert all(a is not b for a, b in zip(first, second, strict=True))
        b1, b2 = browser_of(first), browser_of(second)
        assert isinstance(b1, BrowserTool) and b1.state is not b2.state
        out = b1.process(ToolCall("browser.search", json.dumps({"query": "snowy owl"}), "analysis"))
        assert "owl.md" in out and b2.state.pages == []
        p1, p2 = first[1], second[1]
        assert isinstance(p1, PythonTool) and p1.unsafe
        assert p1.process(ToolCall("python", "x = 41", "analysis")).startswith("[WARN]")
        assert p1.process(ToolCall("python", "x + 1", "analysis")) == "42"
        assert "NameError" in p2.process(ToolCall("python", "x", "analysis"))  # state is per conversation
    finally:
        close_tools(first + second)


def test_system_message_options_describe_the_real_python_tool(index_file):
    opts = BuiltinOptions(browser="local", index=index_file, python=True)
    tools = make_builtin_tools(opts)
    try:
        kw = system_message_options(tools)
        assert kw["browser"] is True and kw["python"] is True
        assert "/mnt/data" in kw["python_description"] and "time out after 120.0 seconds" in kw["python_description"]
        assert "Internet access for this session is disabled" in kw["python_description"]
    finally:
        close_tools(tools)
    assert system_message_options([]) == {"browser": False, "python": False}


def test_web_tools_add_their_hosts_to_the_guard():
    # In a child process: the guard's audit hook must not stay in pytest.
    code = textwrap.dedent("""
        import json, sys
        from gptoss import guard
        from gptoss.tools.builtin import BuiltinOptions, make_builtin_tools
        guard.install([])
        before = guard.status()["allowed_hosts"]
        tools = make_builtin_tools(BuiltinOptions(browser="web", web_allow=("docs.example.org", "*.wiki.example"),
                                                  search_url="http://search.internal:8888/?q={query}"))
        checks = {}
        for host in ("docs.example.org", "a.wiki.example", "search.internal", "other.example.org"):
            try:
                guard.check_host(host)
                checks[host] = "ok"
            except guard.EgressBlockedError:
                checks[host] = "blocked"
        print(json.dumps({"before": before, "after": guard.status()["allowed_hosts"], "checks": checks,
                          "allowed_by_backend": tools[0].backend.allowed_hosts}))
    """)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] == []
    assert out["after"] == ["docs.example.org", "search.internal", "*.wiki.example"]
    assert out["checks"] == {"docs.example.org": "ok", "a.wiki.example": "ok", "search.internal": "ok",
                             "other.example.org": "blocked"}
    assert out["allowed_by_backend"] == ["docs.example.org", "*.wiki.example"]


def test_web_browser_under_the_guard_reaches_only_allowed_loopback_ports():
    """A real HTTP server on loopback, the guard in listed-loopback mode: the allowed port is browsed, a
    second local server on another port is refused by the guard and the model reads why."""
    code = textwrap.dedent("""
        import http.server, json, threading
        from gptoss import guard
        from gptoss.tools.base import ToolCall
        from gptoss.tools.builtin import BuiltinOptions, make_builtin_tools

        class Page(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"<html><head><title>Local page</title></head><body><p>Owls hunt at night.</p></body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *args):
                pass

        servers = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page) for _ in range(2)]
        for s in servers:
            threading.Thread(target=s.serve_forever, daemon=True).start()
        allowed, other = (s.server_address[1] for s in servers)
        guard.install([f"127.0.0.1:{allowed}"], loopback=False)
        [browser] = make_builtin_tools(BuiltinOptions(browser="web", web_allow=(f"127.0.0.1:{allowed}",)))
        def open_(port):
            return browser.process(ToolCall("browser.open", json.dumps({"id": f"http://127.0.0.1:{port}/"}),
                                            "analysis"))
        wide = make_builtin_tools(BuiltinOptions(browser="web", web_allow=(f"127.0.0.1:{allowed}",)))[0]
        wide.backend.allowed_hosts = ["127.0.0.1"]  # the browser would allow any port: the guard still refuses
        refused = wide.process(ToolCall("browser.open", json.dumps({"id": f"http://127.0.0.1:{other}/"}), "analysis"))
        print(json.dumps({"ok": open_(allowed), "not_listed": open_(other), "refused": refused,
                          "status": guard.status()}))
        for s in servers:
            s.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ok"].startswith("[0] Local page (http://127.0.0.1:") and "Owls hunt at night." in out["ok"]
    assert "is not on the web allowlist" in out["not_listed"] and "nothing was sent" in out["not_listed"]
    assert out["refused"].startswith("Error fetching URL") and "blocked by gptoss's egress guard" in out["refused"]
    assert out["status"]["blocked"] == 1 and out["status"]["recent_refusals"][0]["event"] == "socket.connect"
