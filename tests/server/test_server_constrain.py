"""Structured outputs and forced tool calls (SPEC §7): the grammar, not the model, makes output valid."""

from __future__ import annotations

import json
import time

import pytest
import torch
from server_helpers import ANSWER, WEATHER_TOOL

from gptoss.harmony.render import harmony_encoding
from gptoss.server import ModelEngine, StubEngine
from gptoss.server.constrain import END, RETURN, ConstraintSpec, HarmonyConstraint, compile_schema
from gptoss.tokenizer import VOCAB_SIZE

SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}, "ok": {"type": "boolean"}},
    "required": ["city", "unit", "ok"], "additionalProperties": False}
STRICT_TOOL = {**WEATHER_TOOL, "strict": True}
OTHER_TOOL = {"type": "function", "name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"enum": ["UTC", "CET"]}}, "required": ["tz"],
    "additionalProperties": False}}


def valid(value: object) -> bool:
    """SCHEMA, checked by hand (no jsonschema dependency)."""
    return (isinstance(value, dict) and set(value) == {"city", "unit", "ok"} and isinstance(value["city"], str)
            and len(value["city"]) <= 8 and value["unit"] in ("c", "f") and isinstance(value["ok"], bool))


def toks(text: str) -> list[int]:
    return harmony_encoding().encode(text, allowed_special="all")


def test_return_only_at_accept_states_and_analysis_free():
    proc = HarmonyConstraint(ConstraintSpec(final_grammar=compile_schema({"type": "object", "properties": {
        "n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False})))
    logits = torch.zeros(VOCAB_SIZE)
    seq = toks("<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>")
    start = seq.index(toks("<|start|>")[0])
    for i in range(len(seq)):
        out = proc(seq[:i], logits)
        if i == start:  # between messages: only <|start|> (harmony itself, not the schema)
            assert torch.isfinite(out).nonzero().flatten().tolist() == [seq[start]]
        else:
            assert out is logits  # headers and analysis: untouched
    body = toks('{"n":12}')
    for i in range(len(body) + 1):
        out = proc(seq + body[:i], logits)
        allowed = torch.isfinite(out)
        assert bool(allowed[RETURN]) == (i == len(body)), i
        assert not allowed[END] and (i == len(body) or allowed[body[i]])
    assert proc.mask_count == len(body) + 1


def test_json_format_plans_headers():
    """With a JSON answer format (and no built-ins), a header is analysis, final or a declared call: a small
    model's malformed header cannot make the answer escape the schema."""
    grammar = compile_schema({"type": "object"})
    proc = HarmonyConstraint(ConstraintSpec(final_grammar=grammar, header_functions=("get_time",)))
    logits = torch.zeros(VOCAB_SIZE)
    first = {int(i) for i in torch.isfinite(proc([], logits)).nonzero().flatten()}
    assert first == {toks("<|channel|>")[0]}
    seq = toks("<|channel|>analysis<|message|>hm<|end|>")
    nxt = proc(seq + toks("<|start|>assistant<|channel|>"), logits)
    allowed = set(torch.isfinite(nxt).nonzero().flatten().tolist())
    assert allowed == {toks("final")[0], toks("analysis")[0], toks("commentary")[0]}


def test_named_tool_choice_enforced_over_a_final_answer(make_client):
    client, _ = make_client(StubEngine([ANSWER]))  # the "model" wants to answer, not call
    for choice in ({"type": "function", "name": "get_time"}, "required"):
        body = client.post("/v1/responses", json={"model": "m", "input": "hi", "tools": [WEATHER_TOOL, OTHER_TOOL],
                                                  "tool_choice": choice, "max_output_tokens": 200}).json()
        assert body["status"] == "completed", body
        kinds = [it["type"] for it in body["output"]]
        assert kinds[0] == "reasoning" and kinds[-1] == "function_call" and "message" not in kinds  # reasoning kept
        call = body["output"][-1]
        args = json.loads(call["arguments"])
        if choice == "required":
            assert call["name"] in ("get_weather", "get_time")
            assert args in ({"city": "Oslo"}, {"city": "Paris"}, {"tz": "UTC"}, {"tz": "CET"})
        else:
            assert call["name"] == "get_time" and args in ({"tz": "UTC"}, {"tz": "CET"})


def test_required_without_reasoning_in_script(make_client):
    client, _ = make_client(StubEngine(["<|channel|>final<|message|>No tools today.<|return|>"], seed=3))
    body = client.post("/v1/chat/completions", json={
        "model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "required", "max_tokens": 200,
        "tools": [{"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}]}).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) in ({"city": "Oslo"},
                                                                                        {"city": "Paris"})


def test_strict_function_arguments_constrained(make_client):
    bad_call = ('<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>'
                '{"city":"Berlin","extra":1}<|call|>')
    client, _ = make_client(StubEngine([bad_call]))
    for tool in (STRICT_TOOL, WEATHER_TOOL):  # Responses tools are strict unless they say otherwise
        body = client.post("/v1/responses", json={"model": "m", "input": "hi", "tools": [tool],
                                                  "max_output_tokens": 100}).json()
        assert json.loads(body["output"][-1]["arguments"]) in ({"city": "Oslo"}, {"city": "Paris"})
    chat_tool = {"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}
    body = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                     "tools": [chat_tool]}).json()  # Chat: not strict by default
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"city":"Berlin","extra":1}'
    client2, _ = make_client(StubEngine([bad_call]))  # strict: false: passed through untouched
    body = client2.post("/v1/responses", json={"model": "m", "input": "hi",
                                                "tools": [{**WEATHER_TOOL, "strict": False}]}).json()
    assert body["output"][-1]["arguments"] == '{"city":"Berlin","extra":1}'


@pytest.mark.parametrize("fmt", [{"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True},
                                 {"type": "json_object"}])
def test_text_format_constrains_final_only(make_client, fmt):
    script = ('<|channel|>analysis<|message|>not json {{{<|end|>'
              '<|start|>assistant<|channel|>final<|message|>Sure! Here you go: {city: Oslo}<|return|>')
    client, engine = make_client(StubEngine([script]))
    body = client.post("/v1/responses", json={"model": "m", "input": "hi", "text": {"format": fmt},
                                              "max_output_tokens": 200}).json()
    assert body["status"] == "completed", body
    rs, msg = body["output"]
    assert rs["content"][0]["text"] == "not json {{{"  # analysis untouched
    value = json.loads(msg["content"][0]["text"])
    assert valid(value) if fmt["type"] == "json_schema" else isinstance(value, dict)
    assert body["text"]["format"] == fmt
    assert "# Response Formats" in harmony_encoding().decode(engine.prompts[0])


class Steered:
    """The real engine, with a test-only processor before the server's: forced first tokens, then biases."""

    def __init__(self, inner: ModelEngine, prefix: str = "", bias: dict[int, float] | None = None) -> None:
        self.inner, self.prefix, self.bias = inner, toks(prefix), bias or {}
        self.model_id, self.max_context = inner.model_id, inner.max_context

    def generate(self, prompt, params, logits_processor=None, cancel=None):
        def proc(tokens, logits):
            logits = logits.clone()
            for t, b in self.bias.items():
                logits[t] += b
            out = logits_processor(tokens, logits) if logits_processor is not None else logits
            if len(tokens) < len(self.prefix):
                out = torch.full_like(logits, float("-inf"))
                out[self.prefix[len(tokens)]] = 0.0
            return out

        return self.inner.generate(prompt, params, proc, cancel)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def tiny_engine(tiny_checkpoint):
    from gptoss.api import Model

    engine = ModelEngine(Model.load(tiny_checkpoint, dtype="float32").transformer, "m")
    yield engine
    engine.close()


def test_random_model_json_always_valid(make_client, tiny_engine):
    """A random-weight model never writes JSON by itself; with the mask every answer validates."""
    client, _ = make_client(Steered(tiny_engine, "<|channel|>final<|message|>"))
    fmt = {"type": "json_schema", "name": "weather", "schema": SCHEMA}
    for seed in range(3):
        body = client.post("/v1/responses", json={"model": "m", "input": "hi", "text": {"format": fmt},
                                                  "seed": seed, "max_output_tokens": 80, "store": False}).json()
        assert body["status"] == "completed", body
        assert valid(json.loads(body["output"][-1]["content"][0]["text"]))


def test_random_model_forced_call_valid(make_client, tiny_engine):
    client, _ = make_client(Steered(tiny_engine, bias={END: 40.0}))  # a model that thinks briefly
    for seed in range(2):
        body = client.post("/v1/responses", json={
            "model": "m", "input": "hi", "tools": [WEATHER_TOOL, OTHER_TOOL], "tool_choice": "required",
            "seed": seed, "max_output_tokens": 60, "store": False}).json()
        assert body["status"] == "completed", body
        call = body["output"][-1]
        assert call["type"] == "function_call"
        assert json.loads(call["arguments"]) in ({"city": "Oslo"}, {"city": "Paris"}, {"tz": "UTC"}, {"tz": "CET"})


def test_mask_cost_is_small():
    """Per-token llguidance mask on the 201088-token vocabulary, along a randomly sampled valid output."""
    proc = HarmonyConstraint(ConstraintSpec(final_grammar=compile_schema(SCHEMA)))
    gen = torch.Generator().manual_seed(0)
    tokens = toks("<|channel|>final<|message|>")
    t0 = time.perf_counter()
    while len(tokens) < 80:
        out = proc(tokens, torch.randn(VOCAB_SIZE, generator=gen))
        tokens.append(int(torch.argmax(out)))
        if tokens[-1] == RETURN:
            break
    elapsed = time.perf_counter() - t0
    assert tokens[-1] == RETURN and valid(json.loads(harmony_encoding().decode(tokens[3:-1])))
    per_token_ms = 1000 * proc.mask_seconds / proc.mask_count
    print(f"llguidance mask: {per_token_ms:.3f} ms/token over {proc.mask_count} tokens "
          f"(whole step incl. logits masking {1000 * elapsed / proc.mask_count:.2f} ms)")
    assert per_token_ms < 50
