"""POST /v1/chat/completions against the StubEngine."""

from __future__ import annotations

import json

import pytest
from server_helpers import ANSWER, CALL, WEATHER_TOOL, chat_chunks, decode

from gptoss.server import StubEngine

CHAT_TOOL = {"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}


def chat(client, **kw):
    kw.setdefault("model", "m")
    kw.setdefault("messages", [{"role": "user", "content": "Weather in Oslo?"}])
    return client.post("/v1/chat/completions", json=kw)


def test_non_streaming(make_client):
    client, engine = make_client()
    r = chat(client, messages=[{"role": "system", "content": "Be brief."},
                               {"role": "developer", "content": "Use metric."},
                               {"role": "user", "content": [{"type": "text", "text": "Weather?"}]}])
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    msg = choice["message"]
    assert msg["role"] == "assistant" and msg["content"] == "Oslo: 4 °C."
    assert msg["reasoning"] == msg["reasoning_content"] == "It is 4 degrees."
    assert "tool_calls" not in msg
    u = body["usage"]
    assert u["prompt_tokens"] == len(engine.prompts[0]) and u["completion_tokens"] == len(engine.scripts[0])
    assert u["completion_tokens_details"]["reasoning_tokens"] > 0 and u["prompt_tokens_details"]["cached_tokens"] == 0
    assert "# Instructions\n\nBe brief.\n\nUse metric." in decode(engine.prompts[0])


def test_streaming_chunks_and_usage(make_client):
    client, _ = make_client()
    r = chat(client, stream=True, stream_options={"include_usage": True})
    chunks = chat_chunks(r.text)
    assert chunks[-1] == "[DONE]"
    usage_chunk, finish_chunk, body = chunks[-2], chunks[-3], chunks[:-3]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] > 0
    assert finish_chunk["choices"][0]["finish_reason"] == "stop"
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == body[0]["id"] for c in chunks[:-1])
    deltas = [c["choices"][0]["delta"] for c in body[1:]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "It is 4 degrees."
    assert "".join(d.get("reasoning", "") for d in deltas) == "It is 4 degrees."
    assert "".join(d.get("content", "") for d in deltas) == "Oslo: 4 °C."
    no_usage = chat_chunks(chat(client, stream=True).text)
    assert no_usage[-1] == "[DONE]" and "usage" not in no_usage[-2]


def test_tool_call_round_trip(make_client):
    engine = StubEngine([CALL, ANSWER])
    client, _ = make_client(engine)
    chunks = chat_chunks(chat(client, tools=[CHAT_TOOL], stream=True).text)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:-1]
             if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0]["index"] == 0 and calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert all("id" not in c and "name" not in c["function"] for c in calls[1:])
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Oslo"}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks[:-1] if c["choices"])

    # the client answers; reasoning comes back as reasoning_content
    messages = [{"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": None, "reasoning_content": reasoning,
                 "tool_calls": [{"id": calls[0]["id"], "type": "function",
                                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]},
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": '{"temp_c": 4}'}]
    body = chat(client, tools=[CHAT_TOOL], messages=messages).json()
    assert body["choices"][0]["message"]["content"] == "Oslo: 4 °C."
    prompt = decode(engine.prompts[1])
    assert "<|channel|>analysis<|message|>Need the weather; call the tool.<|end|>" in prompt
    assert "<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{\"temp_c\": 4}" in prompt


def test_non_streaming_tool_calls(make_client):
    client, _ = make_client(StubEngine([CALL]))
    body = chat(client, tools=[CHAT_TOOL]).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}


def test_reasoning_field_accepted_back(make_client):
    client, engine = make_client(StubEngine([ANSWER]))
    chat(client, messages=[{"role": "user", "content": "a"},
                           {"role": "assistant", "content": None, "reasoning": "thinking hard",
                            "tool_calls": [{"id": "c1", "type": "function",
                                            "function": {"name": "get_weather", "arguments": "{}"}}]},
                           {"role": "tool", "tool_call_id": "c1", "content": "sunny"}], tools=[CHAT_TOOL])
    assert "<|channel|>analysis<|message|>thinking hard<|end|>" in decode(engine.prompts[0])


def test_stop_strings_and_length(make_client):
    client, engine = make_client()
    body = chat(client, stop=[": 4"]).json()
    assert body["choices"][0]["message"]["content"] == "Oslo" and body["choices"][0]["finish_reason"] == "stop"
    chunks = chat_chunks(chat(client, stop="°", stream=True).text)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Oslo: 4 "
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    body = chat(client, max_tokens=4, seed=7, temperature=0.5, top_p=0.9).json()
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 4
    p = engine.params[-1]
    assert (p.max_tokens, p.seed, p.temperature, p.top_p) == (4, 7, 0.5, 0.9)
    chat(client, max_tokens=4, max_completion_tokens=6)
    assert engine.params[-1].max_tokens == 6


@pytest.mark.parametrize("spelling", [{"reasoning_effort": "low"}, {"reasoning": {"effort": "low"}},
                                      {"chat_template_kwargs": {"reasoning_effort": "minimal"}}])
def test_effort_spellings(make_client, spelling):
    client, engine = make_client()
    assert chat(client, **spelling).status_code == 200
    assert "Reasoning: low" in decode(engine.prompts[0])


@pytest.mark.parametrize(("payload", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"n": 2}, "n"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"tools": [CHAT_TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [{"role": "assistant", "content": "x", "tool_calls": 1}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "tool", "tool_call_id": ["x"], "content": "x"}]}, "messages[0].tool_call_id"),
])
def test_bad_requests(make_client, payload, param):
    client, engine = make_client()
    r = chat(client, **payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    assert not engine.prompts
