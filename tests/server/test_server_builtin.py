"""Built-in tools through the server: web_search_call / code_interpreter_call items and their events, citations
as url_citation annotations, Chat running the tools inside, tool sessions kept along previous_response_id."""

from __future__ import annotations

import json

from server_helpers import decode, sse_events

from gptoss.server import StubEngine
from gptoss.server.sessions import ToolSessions
from gptoss.tools.base import Tool, ToolCall
from gptoss.tools.browser.page import Page, Result
from gptoss.tools.browser.tool import BrowserTool

SEARCH = ('<|channel|>analysis<|message|>Look it up.<|end|>'
          '<|start|>assistant<|channel|>analysis to=browser.search <|constrain|>json<|message|>'
          '{"query":"oslo weather"}<|call|>')
OPEN = '<|channel|>analysis to=browser.open <|constrain|>json<|message|>{"id":0}<|call|>'
CITED = '<|channel|>final<|message|>It is 4 °C 【1†L0-L1】 today.<|return|>'
PYTHON = '<|channel|>analysis to=python code<|message|>print(6*7)<|call|>'
SAID = '<|channel|>final<|message|>42.<|return|>'
URL = "https://example.org/oslo"


class Backend:
    """A fake search backend: no network."""

    def search(self, query: str, topn: int) -> list[Result]:
        return [Result(URL, "Oslo weather", "Cold and windy")]

    def fetch(self, url: str) -> Page:
        return Page(url, "Oslo weather", text="Oslo: 4 degrees today.\nWindy from the north.")


class FakePython(Tool):
    namespace = "python"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.closed = False

    def _process(self, call: ToolCall) -> str:
        self.calls.append(call.arguments)
        return f"ran {len(self.calls)}: {call.arguments}"

    def close(self) -> None:
        self.closed = True


class Factory:
    def __init__(self) -> None:
        self.made: list[list[Tool]] = []

    def __call__(self, namespaces: tuple[str, ...]) -> list[Tool]:
        tools: list[Tool] = []
        if "browser" in namespaces:
            tools.append(BrowserTool(Backend()))
        if "python" in namespaces:
            tools.append(FakePython())
        self.made.append(tools)
        return tools


def sessions(factory: Factory, available=("browser", "python")) -> ToolSessions:
    return ToolSessions(factory=factory, available=available)


def test_web_search_items_events_and_citations(make_client):
    factory = Factory()
    client, engine = make_client(StubEngine([SEARCH, OPEN, CITED]), tool_sessions=sessions(factory))
    r = client.post("/v1/responses", json={"model": "m", "input": "Weather in Oslo?", "stream": True,
                                           "tools": [{"type": "web_search"}]})
    events = sse_events(r.text)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed", final
    kinds = [it["type"] for it in final["output"]]
    assert kinds == ["reasoning", "web_search_call", "web_search_call", "message"]
    search, opened = final["output"][1], final["output"][2]
    assert search["action"]["type"] == "search" and search["action"]["query"] == "oslo weather"
    assert search["action"]["sources"] == [{"type": "url", "url": URL}]
    assert opened["action"] == {"type": "open_page", "url": URL} and opened["status"] == "completed"
    # each call's events, in order
    ws = [e["type"] for e in events if e.get("item_id") == search["id"] or e.get("item", {}).get("id") == search["id"]]
    assert ws == ["response.output_item.added", "response.web_search_call.in_progress",
                  "response.web_search_call.searching", "response.web_search_call.completed",
                  "response.output_item.done"]
    # the citation became a link and an annotation into the rewritten text
    part = final["output"][3]["content"][0]
    text, (ann,) = part["text"], part["annotations"]
    assert ann["type"] == "url_citation" and ann["url"] == URL and ann["title"] == "Oslo weather"
    assert text[ann["start_index"]:ann["end_index"]] == f"([example.org]({URL}))"
    assert "【" not in text
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == text  # what a client accumulates is the final text
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert len(added) == 1 and added[0]["annotation"] == ann and added[0]["annotation_index"] == 0
    # the system message declared the browser; the tool results were fed back (and count as input)
    assert "## browser" in decode(engine.prompts[0])
    assert "Oslo: 4 degrees today." in decode(engine.prompts[2])
    assert final["usage"]["input_tokens"] > len(engine.prompts[0])


def test_code_interpreter_items_and_session_kept(make_client):
    factory = Factory()
    client, engine = make_client(StubEngine([PYTHON, SAID, PYTHON, SAID]), tool_sessions=sessions(factory))
    tools = [{"type": "code_interpreter", "container": {"type": "auto"}}]
    r = client.post("/v1/responses", json={"model": "m", "input": "6*7?", "tools": tools, "stream": True})
    events = sse_events(r.text)
    final = events[-1]["response"]
    call = final["output"][0]
    assert call["type"] == "code_interpreter_call" and call["code"] == "print(6*7)"
    assert call["outputs"] == [{"type": "logs", "logs": "ran 1: print(6*7)"}]
    assert call["container_id"].startswith("cntr_")
    ci = [e["type"] for e in events if e.get("item_id") == call["id"] or e.get("item", {}).get("id") == call["id"]]
    assert ci[:2] == ["response.output_item.added", "response.code_interpreter_call.in_progress"]
    assert ci[-4:] == ["response.code_interpreter_call_code.done", "response.code_interpreter_call.interpreting",
                       "response.code_interpreter_call.completed", "response.output_item.done"]
    assert "".join(e["delta"] for e in events if e["type"] == "response.code_interpreter_call_code.delta") \
        == "print(6*7)"
    assert "## python" in decode(engine.prompts[0])
    # continuing the conversation reuses the same interpreter (state persists), and the call is replayed
    r2 = client.post("/v1/responses", json={"model": "m", "input": "again", "tools": tools,
                                            "previous_response_id": final["id"]}).json()
    assert r2["output"][0]["outputs"] == [{"type": "logs", "logs": "ran 2: print(6*7)"}]
    assert r2["output"][0]["container_id"] == call["container_id"]
    assert len(factory.made) == 1 and not factory.made[0][0].closed
    # store: false closes the session at the end
    client.post("/v1/responses", json={"model": "m", "input": "x", "tools": tools, "store": False})
    assert len(factory.made) == 2 and factory.made[1][0].closed


def test_chat_runs_builtins_inside(make_client):
    factory = Factory()
    client, engine = make_client(StubEngine([SEARCH, OPEN, CITED]), tool_sessions=sessions(factory, ("browser",)))
    body = client.post("/v1/chat/completions", json={"model": "m", "messages": [
        {"role": "user", "content": "Weather in Oslo?"}]}).json()
    msg = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in msg
    assert msg["content"].startswith("It is 4 °C ([example.org](") and msg["reasoning"] == "Look it up."
    (ann,) = msg["annotations"]
    assert ann["url_citation"]["url"] == URL
    assert len(engine.prompts) == 3 and factory.made[0][0].state.current_cursor == 1
    # streaming: only reasoning and the answer reach the client
    client2, _ = make_client(StubEngine([SEARCH, OPEN, CITED]), tool_sessions=sessions(Factory(), ("browser",)))
    r = client2.post("/v1/chat/completions", json={"model": "m", "stream": True, "messages": [
        {"role": "user", "content": "Weather in Oslo?"}]})
    records = [json.loads(line[6:]) for line in r.text.split("\n\n") if line.startswith("data: {")]
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in records if c["choices"])
    assert content == msg["content"] and "oslo weather" not in content
    # tool_choice none: no built-ins declared
    client.post("/v1/chat/completions", json={"model": "m", "tool_choice": "none",
                                              "messages": [{"role": "user", "content": "hi"}]})
    assert "## browser" not in decode(engine.prompts[-1])


def test_builtin_not_enabled_and_max_tool_calls(make_client):
    client, _ = make_client()
    r = client.post("/v1/responses", json={"model": "m", "input": "x", "tools": [{"type": "code_interpreter"}]})
    assert r.status_code == 400 and "--python" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "tools[0].type"
    client, _ = make_client(StubEngine([PYTHON, PYTHON, SAID]), tool_sessions=sessions(Factory()))
    body = client.post("/v1/responses", json={"model": "m", "input": "x", "max_tool_calls": 1,
                                              "tools": [{"type": "code_interpreter"}]}).json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_tool_calls"}


def test_unknown_model_and_body_limit(make_client):
    client, _ = make_client(max_body_bytes=2000)
    r = client.post("/v1/responses", json={"model": "llama-3", "input": "x"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert r.json()["error"]["param"] == "model"
    for alias in ("gpt-oss-20b", "openai/gpt-oss-120b", "gpt-oss:20b", "m"):
        assert client.post("/v1/responses", json={"model": alias, "input": "x"}).status_code == 200
    r = client.post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    r = client.post("/v1/responses", json={"model": "m", "input": "x" * 5000})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():
        for _ in range(10):
            yield b" " * 500
    r = client.post("/v1/responses", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"


def test_real_python_tool_through_the_server(make_client):
    """The real PythonTool (made by tools.builtin from the serve options), its trained description in the
    system message, its output in the code_interpreter_call item; the interpreter is closed afterwards."""
    from gptoss.tools.builtin import BuiltinOptions

    opts = BuiltinOptions(python=True, unsafe_python=True)  # no sandbox needed for print(6*7)
    client, engine = make_client(StubEngine([PYTHON, SAID]), builtin=opts)
    body = client.post("/v1/responses", json={"model": "m", "input": "6*7?", "store": False,
                                              "tools": [{"type": "code_interpreter"}]}).json()
    assert body["status"] == "completed", body
    call = body["output"][0]
    assert call["type"] == "code_interpreter_call" and call["outputs"][0]["logs"].strip() == "42"
    assert "stateful" in decode(engine.prompts[0]) and "## python" in decode(engine.prompts[0])
    r = client.post("/v1/responses", json={"model": "m", "input": "x", "tools": [{"type": "web_search"}]})
    assert r.status_code == 400 and "--browser" in r.json()["error"]["message"]
