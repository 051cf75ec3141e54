"""`gptoss generate` in text (harmony) mode and raw token mode, including offline operation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from gptoss.cli.main import main

# Child-process network guard: any non-loopback connect or name lookup raises and is logged.
GUARD = textwrap.dedent("""
    import sys
    LOG = sys.argv.pop(1)
    def hook(event, args):
        if event in ("socket.connect", "socket.getaddrinfo"):
            target = args[1] if event == "socket.connect" else args[0]
            host = target[0] if isinstance(target, tuple) else str(target)
            if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
                open(LOG, "a").write(f"{event} {target!r}\\n")
                raise OSError("network blocked by test")
    sys.addaudithook(hook)
    from gptoss.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def test_text_prompt_json(tiny_checkpoint, capsys):
    rc = main(["generate", "--model", str(tiny_checkpoint), "Hello there", "--max-tokens", "12",
               "--temperature", "0", "--reasoning-effort", "high", "--json", "--date", "2025-08-05"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reasoning_effort"] == "high"
    assert 0 < out["usage"]["completion_tokens"] <= 12
    assert out["usage"]["prompt_tokens"] > 20
    assert set(out) >= {"answer", "reasoning", "tool_calls", "finish_reason", "usage", "tokens_per_s"}


def test_greedy_text_generation_is_reproducible(tiny_checkpoint, capsys):
    argv = ["generate", "--model", str(tiny_checkpoint), "Hi", "--max-tokens", "10", "--temperature", "0",
            "--json", "--date", "none"]
    main(argv)
    first = json.loads(capsys.readouterr().out)
    main(argv)
    assert json.loads(capsys.readouterr().out)["usage"] == first["usage"]


def test_raw_tokens_mode(tiny_checkpoint, capsys):
    rc = main(["generate", "--model", str(tiny_checkpoint), "--tokens", "1,2,3", "--max-tokens", "4",
               "--temperature", "0", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["tokens"]) == 4 and out["finish_reason"] == "length"


@pytest.mark.parametrize("argv, message", [
    (["--tokens", "1,2", "also a prompt"], "either a prompt"),
    ([], "either a prompt"),
    (["hi", "--date", "yesterday"], "--date"),
    (["   "], "empty"),
])
def test_user_errors_are_one_line(tiny_checkpoint, capsys, argv, message):
    rc = main(["generate", "--model", str(tiny_checkpoint), "--max-tokens", "2", *argv])
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err


def test_bad_effort_and_functions_file(tiny_checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--model", str(tiny_checkpoint), "hi", "--reasoning-effort", "extreme"])
    assert "expected one of" in capsys.readouterr().err
    bad = tmp_path / "f.json"
    bad.write_text('[{"description": "no name"}]')
    rc = main(["generate", "--model", str(tiny_checkpoint), "hi", "--functions", str(bad)])
    assert rc == 1 and "entry 0" in capsys.readouterr().err


def test_generate_runs_with_network_blocked(tiny_checkpoint, tmp_path):
    """Acceptance: with the network disabled for the process, the tokenizer loads and
    `gptoss generate` runs."""
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("TIKTOKEN")}
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "c"))
    proc = subprocess.run(
        [sys.executable, "-c", GUARD, str(log), "generate", "--model", str(tiny_checkpoint),
         "Are you offline?", "--max-tokens", "8", "--json"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not log.exists(), log.read_text()
    assert json.loads(proc.stdout)["usage"]["completion_tokens"] > 0


def test_generate_json_reports_tool_results_and_citations(tmp_path, capsys):
    import argparse

    from gptoss.cli import generate
    from gptoss.engine.sampling import SamplingParams
    from gptoss.harmony.render import harmony_encoding
    from gptoss.tools.browser.local import LocalIndex

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "owl.md").write_text("# Snowy Owl\n\nThe snowy owl lives in the Arctic.\nIt hunts lemmings.\n")
    index = tmp_path / "i.sqlite"
    with LocalIndex(index) as ix:
        ix.add(notes)
    enc = harmony_encoding()
    rounds = [enc.encode(c, allowed_special="all") for c in (
        '<|channel|>analysis to=browser.search code<|message|>{"query":"snowy owl"}<|call|>',
        '<|channel|>analysis to=browser.open code<|message|>{"id":0}<|call|>',
        "<|channel|>final<|message|>It hunts lemmings【1†L3】.<|return|>")]
    seen: list = []

    def source(prompt, params):
        seen.append(prompt)
        for t in rounds[len(seen) - 1]:
            yield t
            if t in params.stop:
                return

    p = argparse.ArgumentParser()
    generate.add_arguments(p)
    args = p.parse_args(["--model", "unused", "x", "--json", "--browser", "local", "--index", str(index)])
    assert generate._run_text(None, args, SamplingParams(256, 0.0), "What does it hunt?", 0.0, source) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] == "It hunts lemmings【1†L3】."
    assert [r["recipient"] for r in out["tool_results"]] == ["browser.search", "browser.open"]
    assert "L3: It hunts lemmings." in out["tool_results"][1]["output"]
    [c] = out["citations"]
    assert c["url"] == (notes / "owl.md").resolve().as_uri() and c["title"] == "Snowy Owl"
    assert out["answer"][c["start_index"]:c["end_index"]] == "【1†L3】"


def test_raw_token_mode_refuses_tools(tmp_path):
    rc = main(["generate", "--model", str(tmp_path), "--tokens", "1,2", "--unsafe-python"])
    assert rc == 1
