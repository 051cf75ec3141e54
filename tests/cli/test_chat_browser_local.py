"""Issue #6 acceptance: the bundled model, `gptoss chat --browser local` over a small indexed folder, answers
with a citation into the right file. Greedy decoding, so the run is deterministic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 300
DOCS = {  # written in the corpus's style: the bundled model has only ever read such pages
    "okafor-bridge.txt": "Okafor Bridge is a bridge in Lyon.\nIt opened in 1894.\nIt is 420 meters long.\n"
                         "About 12000 people cross it each day.\n",
    "berg-tower.txt": "Berg Tower is a tower in Oslo.\nIt is 135 meters tall.\nIt was built in 1931.\n"
                      "About 88000 people visit it each year.\n",
    "tanaka-museum.txt": "Tanaka Museum is a museum in Rome.\nIt has 64 rooms.\n"
                         "About 250000 people visit it each year.\nIt was founded in 1802.\n",
}


def gptoss(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gptoss.cli.main", *args], input=stdin, capture_output=True,
                          text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser-local")
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    idx = root / "index.sqlite"
    proc = gptoss("index", "add", str(docs), "--index", str(idx))
    assert proc.returncode == 0, proc.stderr
    return idx


@pytest.mark.parametrize(("question", "file", "fact"), [
    ("When was Berg Tower built?", "berg-tower.txt", "1931"),
    ("How long is Okafor Bridge?", "okafor-bridge.txt", "420"),
])
def test_bundled_model_answers_from_the_index_with_a_citation(index: Path, question: str, file: str,
                                                              fact: str) -> None:
    proc = gptoss("chat", "--browser", "local", "--index", str(index), "--temperature", "0", stdin=question + "\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "sources:" in out, out
    sources = out.split("sources:", 1)[1]
    assert f"/{file}>" in sources, out  # the citation resolves to the right file
    assert fact in out.split("sources:", 1)[0], out
