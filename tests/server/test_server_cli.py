"""``gptoss serve`` argument handling (the server itself is exercised by the other tests)."""

from __future__ import annotations

import pytest

from gptoss.cli.main import build_parser, main
from gptoss.cli.serve import _is_loopback


def test_defaults_are_loopback():
    args = build_parser(["serve"]).parse_args(["serve", "--model", "M"])
    assert (args.host, args.port, args.api_key, args.db, args.max_queue) == ("127.0.0.1", 8000, [], None, 8)
    args = build_parser(["serve"]).parse_args(["serve", "--model", "M", "--api-key", "a", "--api-key", "b",
                                                "--db", "x.sqlite3"])
    assert args.api_key == ["a", "b"] and str(args.db) == "x.sqlite3"
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0")


@pytest.mark.parametrize("argv", [["--port", "0"], ["--max-queue", "-1"], [], ["--browser", "web"],
                                  ["--web-allow", "example.org"]])
def test_errors_are_one_line(tmp_path, capsys, argv):
    assert main(["serve", "--model", str(tmp_path / "missing"), *argv]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_builtin_and_batching_flags():
    args = build_parser(["serve"]).parse_args(["serve", "--model", "M", "--python", "--max-batch", "4",
                                                "--max-tool-calls", "3", "--max-body", "2"])
    assert (args.python, args.browser, args.max_batch, args.max_tool_calls, args.max_body) == (True, None, 4, 3, 2)
