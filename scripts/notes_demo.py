"""Acceptance check for the built-in browser with the bundled model: ``gptoss chat --browser local`` over a
small folder of Markdown notes, indexed with ``gptoss index add``. For each question, does the answer cite
(``sources:`` line) the right file, and does it state the fact?

Notes are place pages as the corpus draws them (``gptoss.train.world``), with names from its vocabulary (the
tiny model's trimmed vocabulary has no rows for other names). Each question runs ``gptoss chat`` as a user would,
greedy, in a fresh process; every run is bounded by a timeout.

    .venv/bin/python scripts/notes_demo.py [--notes 4] [--questions 12] [--seed 1] [--model DIR]
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from gptoss.train.world import _PLACES, CITIES, LAST_NAMES, _place_doc

TIMEOUT = 120


def write_notes(folder: Path, n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """``n`` notes in ``folder``; returns (question, file name, fact) for each fact of each note."""
    qa = []
    kinds = rng.sample(_PLACES, len(_PLACES))  # distinct kinds up to five notes; past that, titles share a word
    for i, name in enumerate(rng.sample(LAST_NAMES, n)):
        kind = kinds[i % len(kinds)]
        doc, facts = _place_doc(rng, name, kind, notes=str(folder))
        path = folder / doc.url.rsplit("/", 1)[1]
        path.write_text("\n".join(doc.lines) + "\n", encoding="utf-8")
        e = facts["entity"]
        qa.append((f"Where is {e}?", path.name, facts["city"]))
        for fact, (question, _, _) in kind.questions.items():
            qa.append((question.format(e=e), path.name, str(facts[fact])))
    assert all(c in CITIES for _, _, c in qa[::4])
    return qa


def ask(question: str, index: Path, model: str | None) -> str:
    argv = [sys.executable, "-m", "gptoss.cli.main", "chat", "--browser", "local", "--index", str(index),
            "--temperature", "0", *(["--model", model] if model else [])]
    proc = subprocess.run(argv, input=question + "\n", capture_output=True, text=True, timeout=TIMEOUT)
    return proc.stdout + proc.stderr


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--notes", type=int, default=4, help="notes in the folder (more than 5 share title words)")
    p.add_argument("--questions", type=int, default=12)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", default=None, help="model folder (default: the bundled gpt-oss-tiny)")
    args = p.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder, index = Path(tmp) / "notes", Path(tmp) / "index.sqlite"
        folder.mkdir()
        qa = write_notes(folder, args.notes, rng)
        subprocess.run([sys.executable, "-m", "gptoss.cli.main", "index", "add", "--index", str(index),
                        str(folder)], check=True, capture_output=True, timeout=TIMEOUT)
        cited = stated = 0
        for question, file, fact in rng.sample(qa, min(args.questions, len(qa))):
            out = ask(question, index, args.model)
            right_file = re.search(rf"<file://\S*/{re.escape(file)}>", out) is not None
            before = [line for line in out.split("sources:")[0].splitlines() if line.strip()]
            answer = before[-1] if before else ""  # the final answer is the last line before the sources
            cited += right_file
            stated += right_file and fact in answer
            print(f"{'ok ' if right_file and fact in answer else 'no '} {question!r} -> {file}, {fact}")
            print("    " + " | ".join(line.strip() for line in out.strip().splitlines()[-4:]))
        n = min(args.questions, len(qa))
        print(f"cited the right file: {cited}/{n}; and stated the fact: {stated}/{n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
