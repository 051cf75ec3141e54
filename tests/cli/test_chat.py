"""`gptoss chat` driven through a pseudo-terminal, and through a pipe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pexpect = pytest.importorskip("pexpect")

TIMEOUT = 120


def spawn(model, *extra: str):
    argv = ["-m", "gptoss.cli.main", "chat", "--model", str(model), "--temperature", "0", "--date", "none", *extra]
    child = pexpect.spawn(sys.executable, argv, encoding="utf-8", timeout=TIMEOUT, dimensions=(40, 200))
    child.expect("/help for commands")
    child.expect(">>> ")
    return child


def test_chat_in_a_terminal(tiny_checkpoint, tmp_path):
    child = spawn(tiny_checkpoint, "--max-tokens", "6")
    try:
        child.sendline("/help")
        child.expect("/effort low\\|medium\\|high")
        child.expect(">>> ")
        child.sendline("/effort high")
        child.expect("reasoning effort: high")
        child.sendline("/effort extreme")
        child.expect("expected one of")
        child.sendline("Hello, who are you?")
        child.expect(r"\[\d+ tokens, [\d.]+ tok/s")  # tokens/s after each answer
        child.expect(">>> ")
        child.sendline('"""')  # multi-line input block
        child.sendline("line one")
        child.sendline("line two")
        child.sendline('"""')
        child.expect(r"\[\d+ tokens")
        save = tmp_path / "chat.json"
        child.sendline(f"/save {save}")
        child.expect(r"saved (\d+) messages")
        count = int(child.match.group(1))
        assert count >= 2  # two user messages, plus whatever assistant messages parsed
        child.sendline("/reset")
        child.expect("conversation cleared")
        child.sendline(f"/load {save}")
        child.expect(f"loaded {count} messages")
        child.sendline("/load /nonexistent/file.json")
        child.expect("cannot read")
        child.sendline("/tools")
        child.expect("tools: none")
        child.sendline("/bogus")
        child.expect("unknown command")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    saved = json.loads(save.read_text())
    assert saved["effort"] == "high"
    roles = [m["role"] for m in saved["messages"]]
    texts = [c["text"] for m in saved["messages"] for c in m["content"]]
    assert roles.count("user") == 2 and "line one\nline two" in texts


def test_ctrl_c_stops_the_answer_not_the_chat(tiny_checkpoint):
    child = spawn(tiny_checkpoint, "--max-tokens", "100000")
    try:
        child.sendline("Write a very long story.")
        child.expect("Write a very long story.")
        import time

        time.sleep(2.0)  # the random model is generating
        child.sendintr()
        child.expect("stopped")
        child.expect(">>> ")
        child.sendline("/effort low")  # still alive and responsive
        child.expect("reasoning effort: low")
        child.expect(">>> ")  # wait for the prompt: a Ctrl-C sent before it would land on the next line typed
        child.sendintr()  # Ctrl-C at the prompt only clears the line
        child.expect(">>> ")  # a fresh prompt
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_reads_prompts_from_a_pipe(tiny_checkpoint):
    proc = subprocess.run(
        [sys.executable, "-m", "gptoss.cli.main", "chat", "--model", str(tiny_checkpoint), "--max-tokens", "5",
         "--temperature", "0"],
        input="Hello\n\n/effort low\nSecond question\n", capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "reasoning effort: low" in proc.stdout
    assert "Traceback" not in proc.stderr and ">>>" not in proc.stdout


# -- built-in tools, with a scripted model (the wiring, independent of what a model would say) -------------


def _script(*completions: str):
    from gptoss.harmony.render import harmony_encoding

    enc = harmony_encoding()
    rounds = [enc.encode(c, allowed_special="all") for c in completions]
    prompts: list[list[int]] = []

    def source(prompt, params):
        prompts.append(prompt)
        for t in rounds[len(prompts) - 1]:
            yield t
            if t in params.stop:
                return

    source.prompts = prompts  # type: ignore[attr-defined]
    return source


def _chat_args(*argv: str):
    import argparse

    from gptoss.cli import chat

    p = argparse.ArgumentParser()
    chat.add_arguments(p)
    return p.parse_args(["--model", "unused", "--date", "none", *argv])


@pytest.fixture
def notes_index(tmp_path):
    from gptoss.tools.browser.local import LocalIndex

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "bridge.md").write_text("# Hartley Bridge\n\nHartley Bridge is a bridge in Porto.\nIt opened in 1887.\n")
    (notes / "tower.txt").write_text("Hartley Tower is a tower in Oslo.\nIt was built in 1931.\n")
    index = tmp_path / "notes.sqlite"
    with LocalIndex(index) as ix:
        ix.add(notes)
    return notes, index


def test_chat_browser_local_shows_calls_results_and_sources(notes_index):
    import io

    from rich.console import Console

    from gptoss.cli.chat import ChatSession
    from gptoss.harmony.render import harmony_encoding

    notes, index = notes_index
    source = _script(
        '<|channel|>analysis to=browser.search code<|message|>{"query":"Hartley Bridge"}<|call|>',
        '<|channel|>analysis to=browser.open code<|message|>{"id":0}<|call|>',
        "<|channel|>final<|message|>Hartley Bridge opened in 1887【1†L3】.<|return|>")
    buf = io.StringIO()
    session = ChatSession(None, _chat_args("--browser", "local", "--index", str(index), "--temperature", "0"),
                          Console(file=buf, width=200), interactive=False, source=source)
    try:
        session.ask("When did Hartley Bridge open?")
    finally:
        session.close()
    out = buf.getvalue()
    assert '→ browser.search {"query":"Hartley Bridge"}' in out and "→ browser.open" in out
    assert "← [0] Hartley Bridge" in out and "L3: It opened in 1887." in out
    assert "Hartley Bridge opened in 1887【1†L3】." in out
    assert f"[1] Hartley Bridge <{(notes / 'bridge.md').resolve().as_uri()}> lines 3" in out
    first_prompt = harmony_encoding().decode(source.prompts[0])
    assert "namespace browser" in first_prompt and "## python" not in first_prompt


def test_chat_python_state_lives_per_conversation_and_reset_clears_it():
    import io

    from rich.console import Console

    from gptoss.cli.chat import ChatSession
    from gptoss.harmony.render import harmony_encoding

    source = _script(
        "<|channel|>analysis to=python code<|message|>x = 20 * 2 + 2\nx<|call|>",
        "<|channel|>final<|message|>It is 42.<|return|>",
        "<|channel|>analysis to=python code<|message|>x<|call|>",
        "<|channel|>final<|message|>Gone.<|return|>")
    buf = io.StringIO()
    session = ChatSession(None, _chat_args("--unsafe-python"), Console(file=buf, width=200), interactive=False,
                          source=source)
    try:
        session.ask("compute")
        assert "← 42" in buf.getvalue()
        session.command("/reset")  # a new conversation: a new interpreter
        session.ask("again")
    finally:
        session.close()
    out = buf.getvalue()
    assert "NameError: name 'x' is not defined" in out and "conversation cleared" in out
    system = harmony_encoding().decode(source.prompts[0])
    assert "## python" in system and "Internet access for this session is not restricted" in system


def test_bad_tool_flags_fail_before_the_model_loads(tmp_path):
    for extra, message in ((["--browser", "local", "--index", str(tmp_path / "none.sqlite")], "gptoss index add"),
                           (["--web-allow", "example.org"], "only applies to --browser web"),
                           (["--browser", "web"], "needs --web-allow")):
        proc = subprocess.run([sys.executable, "-m", "gptoss.cli.main", "chat", "--model", str(tmp_path / "nomodel"),
                               *extra], input="hi\n", capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "nomodel" not in proc.stderr
