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
        child.sendintr()  # Ctrl-C at the prompt only clears the line
        child.expect(">>> ")
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
