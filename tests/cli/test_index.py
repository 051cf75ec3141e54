"""`gptoss index add|search|list|remove` through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gptoss.cli.main import main


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "notes"
    root.mkdir()
    (root / "llamas.md").write_text("# Llama care\n\nLlamas like hay. Feed llamas twice a day.\n")
    (root / "alpacas.txt").write_text("Alpacas are smaller than llamas.\n")
    (root / "page.html").write_text("<title>Camelids</title><p>Camels, llamas and alpacas.</p>")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    return root


def test_index_add_search_list_remove(folder, tmp_path, capsys):
    index = str(tmp_path / "i.sqlite")
    assert main(["index", "add", str(folder), "--index", index]) == 0
    out, err = capsys.readouterr()
    assert f"indexed {folder.resolve()}: 3 files (3 added, 0 updated, 0 unchanged, 0 removed), 1 skipped" in out
    assert "skipped 1 file(s)" in err and "broken.pdf: unreadable PDF" in err

    assert main(["index", "search", "llamas", "--index", index]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"1. Llama care\n   {(folder / 'llamas.md').resolve().as_uri()}\n")
    assert out.count("\n") == 9  # three results, three lines each

    assert main(["index", "search", "alpacas", "-n", "1", "--json", "--index", index]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["title"] in ("alpacas.txt", "Camelids")

    assert main(["index", "add", str(folder), "--index", index]) == 0  # nothing changed
    assert "(0 added, 0 updated, 3 unchanged, 0 removed)" in capsys.readouterr().out

    assert main(["index", "list", "--index", index]) == 0
    out = capsys.readouterr().out
    assert "(3 documents" in out and f"{folder.resolve()}\t3 files\tupdated " in out

    assert main(["index", "remove", str(folder), "--index", index]) == 0
    assert "(3 documents)" in capsys.readouterr().out
    assert main(["index", "search", "llamas", "--index", index]) == 0
    assert capsys.readouterr().out == "no results for 'llamas'\n"


def test_index_errors_are_one_line(tmp_path, capsys):
    index = str(tmp_path / "i.sqlite")
    assert main(["index", "add", str(tmp_path / "nope"), "--index", index]) == 1
    assert "error: no such directory:" in capsys.readouterr().err
    assert main(["index", "search", "x", "--index", str(tmp_path / "missing.sqlite")]) == 1
    assert "no local index at" in capsys.readouterr().err
    assert main(["index", "remove", str(tmp_path), "--index", index]) == 1
    assert "is not an indexed folder" in capsys.readouterr().err
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"garbage" * 200)
    assert main(["index", "list", "--index", str(bad)]) == 1
    assert "corrupt or not a gptoss index" in capsys.readouterr().err


def test_default_index_lives_in_the_cache_dir(folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GPTOSS_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["index", "add", str(folder)]) == 0
    assert (tmp_path / "cache" / "indexes" / "default.sqlite").is_file()
    assert f"index: {tmp_path / 'cache' / 'indexes' / 'default.sqlite'} (3 documents)" in capsys.readouterr().out
