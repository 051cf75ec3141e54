"""The issue-5 acceptance run, kept in the suite so it cannot rot: ``gptoss serve`` (the bundled model, its
engine in a child process) driven by the official ``openai`` client -- both streaming APIs, a function-calling
round trip through each, and strict ``json_schema`` answers that all validate."""

from __future__ import annotations

import json
import sys

import acceptance_serve  # beside this file (on the path as server_helpers is)


def test_acceptance_run(tmp_path, monkeypatch):
    out = tmp_path / "acceptance.json"
    monkeypatch.setattr(sys, "argv", ["acceptance_serve.py", "--tries", "16", "--json", str(out)])
    assert acceptance_serve.main() == 0
    result = json.loads(out.read_text())
    assert result["json_schema"] == {**result["json_schema"], "valid": 16, "tries": 16}
    assert result["responses_stream"]["sequence_ok"] and result["chat_tools"]["finish_1"] == "tool_calls"
