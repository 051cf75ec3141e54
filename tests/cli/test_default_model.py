"""Commands without --model use the bundled gpt-oss-tiny, verified against its manifest first."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gptoss.models import BUNDLED_DIR, write_manifest

TIMEOUT = 300
# Runs `gptoss ARGS...` with the bundled-model folder pointed at argv[1] (the real one is never touched).
WITH_BUNDLE = ("import pathlib, sys; import gptoss.models as m; m.BUNDLED_DIR = pathlib.Path(sys.argv[1]); "
               "from gptoss.cli.main import main; sys.exit(main(sys.argv[2:]))")


def gptoss(*args: str, stdin: str = "", bundle=None) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-c", WITH_BUNDLE, str(bundle), *args] if bundle else \
        [sys.executable, "-m", "gptoss.cli.main", *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)


def test_chat_with_no_arguments_answers_from_a_pipe():
    """A fresh checkout, no --model, no network: the bundled model answers (the egress guard is on for every
    command, so a connection attempt would fail the run)."""
    proc = gptoss("chat", stdin="Hello, who are you?\n")
    assert proc.returncode == 0, proc.stderr
    answer = proc.stdout.strip()
    assert answer and "error" not in proc.stderr.lower(), (proc.stdout, proc.stderr)
    assert any(c.isalpha() for c in answer)


@pytest.fixture
def bundle_copy(tiny_checkpoint, tmp_path):
    """A random checkpoint laid out like the bundle (flat, with a manifest)."""
    root = tmp_path / "gpt-oss-tiny"
    shutil.copytree(tiny_checkpoint / "original", root)
    write_manifest(root)
    return root


def test_a_valid_bundle_is_used(bundle_copy):
    proc = gptoss("generate", "--tokens", "1,2,3", "--max-tokens", "2", "--temperature", "0", bundle=bundle_copy)
    assert proc.returncode == 0, proc.stderr


def test_corrupt_bundle_is_a_clear_error(bundle_copy):
    weights = bundle_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    proc = gptoss("chat", stdin="Hi\n", bundle=bundle_copy)
    assert proc.returncode == 2
    assert "model.safetensors: sha256 does not match" in proc.stderr and "corrupt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_bundle_is_a_clear_error(tmp_path):
    proc = gptoss("generate", "Hi", bundle=tmp_path / "absent")
    assert proc.returncode == 2
    assert "bundled gpt-oss-tiny is not installed" in proc.stderr and "--model PATH" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_explicit_model_skips_the_bundle(tiny_checkpoint, tmp_path):
    proc = gptoss("generate", "--model", str(tiny_checkpoint), "--tokens", "1,2", "--max-tokens", "1",
                  bundle=tmp_path / "absent")
    assert proc.returncode == 0, proc.stderr


def test_bundle_location_is_package_data():
    assert BUNDLED_DIR.parent.name == "models" and BUNDLED_DIR.parent.parent.name == "gptoss"


NOTES = {  # a user's small notes folder (names the tiny model's vocabulary has rows for)
    "okafor-bridge.md": "# Okafor Bridge\n\nOkafor Bridge is a bridge in Frankfurt.\nIt is 1120 meters long.\n"
                        "It opened in 1700.\nAbout 8421 people cross it each day.\n",
    "nguyen-library.md": "# Nguyen Library\n\nNguyen Library is a library in Oslo.\nIt opened in 1932.\n"
                         "It holds 250000 books.\n",
    "sharma-park.md": "# Sharma Park\n\nSharma Park is a park in Basel.\nIt opened in 1955.\n"
                      "About 159949 people visit it each year.\n",
}


@pytest.fixture
def notes_dir():
    """A short fixed path, as a user's ``~/notes`` is: the tiny model reads the page's URL, and a long or random
    path of pieces its trimmed vocabulary lacks throws it off (it then runs to --max-tokens)."""
    folder = Path(tempfile.gettempdir()) / "gptoss-notes"  # fixed: a random suffix changes what the model reads
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_chat_with_the_local_browser_cites_the_right_note(notes_dir, tmp_path):
    """#6 acceptance: with the bundled model, ``gptoss chat --browser local`` over a small indexed folder answers
    with a citation that points into the right file (``sources:`` line), and mostly states the fact."""
    folder, index = notes_dir, tmp_path / "index.sqlite"
    for name, text in NOTES.items():
        (folder / name).write_text(text, encoding="utf-8")
    proc = gptoss("index", "add", "--index", str(index), str(folder))
    assert proc.returncode == 0, proc.stderr
    stated = 0
    for question, file, fact in (("Where is Okafor Bridge?", "okafor-bridge.md", "Frankfurt"),
                                 ("When did Sharma Park open?", "sharma-park.md", "1955"),
                                 ("Where is Nguyen Library?", "nguyen-library.md", "Oslo")):
        proc = gptoss("chat", "--browser", "local", "--index", str(index), "--temperature", "0", stdin=question + "\n")
        assert proc.returncode == 0, proc.stderr
        assert f"<{(folder / file).as_uri()}>" in proc.stdout, (question, proc.stdout)
        answer = [line for line in proc.stdout.split("sources:")[0].splitlines() if line.strip()][-1]
        stated += fact in answer
    assert stated >= 2
