"""End to end: the official ``openai`` client against uvicorn on 127.0.0.1, with the real engine on the tiny
random checkpoint, and a function-calling round trip with the StubEngine."""

from __future__ import annotations

import threading

import openai
import pytest
import torch
from server_helpers import ANSWER, CALL, WEATHER_TOOL, live_server

from gptoss.engine.sampling import SamplingParams
from gptoss.server import EngineBusy, ModelEngine, StubEngine, create_app


@pytest.fixture(scope="module")
def tiny_engine(tiny_checkpoint):
    from gptoss.api import Model

    engine = ModelEngine(Model.load(tiny_checkpoint, dtype="float32").transformer, "tiny-random", max_queue=1,
                         max_batch=1)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def tiny_client(tiny_engine, tmp_path_factory):
    app = create_app(tiny_engine, db_path=tmp_path_factory.mktemp("db") / "r.sqlite3", api_keys=["sk-test"])
    with live_server(app) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", timeout=60, max_retries=0)


def test_models(tiny_client):
    assert [m.id for m in tiny_client.models.list()] == ["tiny-random"]


def test_responses_create(tiny_client):
    resp = tiny_client.responses.create(model="gpt-oss-20b", input="Hello", max_output_tokens=8,
                                        reasoning={"effort": "low"}, temperature=0)
    assert resp.id.startswith("resp_") and resp.status == "incomplete"
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage.output_tokens == 8 and resp.usage.input_tokens > 50
    assert tiny_client.responses.retrieve(resp.id).id == resp.id


def test_responses_stream(tiny_client):
    events = list(tiny_client.responses.create(model="gpt-oss-20b", input="Hello", max_output_tokens=8, stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1].type == "response.incomplete" and events[-1].response.usage.output_tokens == 8


def test_chat_create_and_stream(tiny_client):
    messages = [{"role": "user", "content": "Hello"}]
    out = tiny_client.chat.completions.create(model="gpt-oss-20b", messages=messages, max_tokens=6, seed=1)
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 6
    chunks = list(tiny_client.chat.completions.create(model="gpt-oss-20b", messages=messages, max_tokens=6,
                                                      stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


def test_shared_preamble_is_reported_as_cached_tokens(tiny_client):
    """The second request with the same system and developer messages starts from the engine's prefix cache,
    and usage says how much of its prompt that was (both APIs)."""
    def chat(text: str):
        messages = [{"role": "system", "content": "You answer questions about the prefix-cache test."},
                    {"role": "user", "content": text}]
        return tiny_client.chat.completions.create(model="gpt-oss-20b", messages=messages, max_tokens=2, seed=1,
                                                   reasoning_effort="high").usage
    first, second = chat("What is the first question?"), chat("And a second, different one?")
    cached = second.prompt_tokens_details.cached_tokens
    assert cached > first.prompt_tokens_details.cached_tokens
    assert 50 < cached < second.prompt_tokens
    resp = tiny_client.responses.create(model="gpt-oss-20b", input="Third question", max_output_tokens=2,
                                        instructions="You answer questions about the prefix-cache test.",
                                        reasoning={"effort": "high"})
    assert resp.usage.input_tokens_details.cached_tokens == cached


def test_bad_key_and_bad_request(tiny_client):
    bad = tiny_client.with_options(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.BadRequestError) as e:
        tiny_client.responses.create(model="gpt-oss-20b", input="x", reasoning={"effort": "ultra"})
    assert e.value.body["param"] == "reasoning.effort"


def test_engine_queue_bound_and_serialised(tiny_engine):
    """max_batch=1: one generation at a time; with max_queue=1 a third concurrent request is refused."""
    release = threading.Event()
    started = threading.Event()

    def blocking(tokens, logits):
        started.set()
        release.wait(10)
        return logits

    params = SamplingParams(max_tokens=2, temperature=0)
    first = tiny_engine.generate([200006, 1428, 200008], params, blocking)
    out: list[list[int]] = []
    t = threading.Thread(target=lambda: out.append(list(first)))
    t.start()
    try:
        assert started.wait(10)
        second = tiny_engine.generate([200006, 1428, 200008], params)  # waits in the queue
        with pytest.raises(EngineBusy):
            tiny_engine.generate([200006, 1428, 200008], params)
    finally:
        release.set()
        t.join(10)
    assert len(out[0]) == 2 and len(list(second)) == 2
    cancel = threading.Event()
    cancel.set()
    assert list(tiny_engine.generate([200006, 1428], params, cancel=cancel)) == []
    assert torch.is_inference_mode_enabled() is False


def test_requests_join_and_leave_running_decode_steps(tiny_checkpoint):
    """Continuous batching: requests arriving while another is decoding join its forwards, a cancelled one
    leaves at once, and every output equals the same request generated alone."""
    from gptoss.api import Model

    model = Model.load(tiny_checkpoint, dtype="float32")
    engine = ModelEngine(model.transformer, "tiny", max_queue=0, max_batch=5)
    prompts = [[200006, 1428, 200008], [200006, 17360, 11, 2375, 200008, 1], [5, 6]]
    params = SamplingParams(max_tokens=5, temperature=0)
    long = SamplingParams(max_tokens=40, temperature=0)
    step = threading.Semaphore(0)

    def paced(tokens, logits):  # the long request advances one decode step per release
        step.acquire(timeout=10)
        return logits

    try:
        first = engine.generate([1, 2], long, paced)
        got: list[int] = []

        def read() -> None:
            for t in first:
                got.append(t)

        reader = threading.Thread(target=read)
        reader.start()
        for _ in range(3):
            step.release()
        assert wait(lambda: len(got) >= 3)
        cancel = threading.Event()
        doomed = engine.generate([9, 10, 11], long, cancel=cancel)
        streams = [engine.generate(p, params) for p in prompts]
        with pytest.raises(EngineBusy):  # 5 running, no queue
            engine.generate([3], params)
        for _ in range(3):
            step.release()
        doomed_out = [next(doomed)]
        cancel.set()
        doomed_out += list(doomed)
        for _ in range(60):
            step.release()
        outs = [list(s) for s in streams]
        reader.join(20)
        assert outs == [model.generate(p, max_tokens=5, temperature=0) for p in prompts]
        assert got == model.generate([1, 2], max_tokens=40, temperature=0)
        assert len(doomed_out) < 10  # it left the batch when cancelled
        assert engine.step_sizes[:3] == [1, 1, 1] and max(engine.step_sizes) == 5  # joined the running forwards
        assert engine.step_sizes[-1] == 1  # the others left; the long one went on alone
        assert wait(lambda: engine._inflight == 0)
    finally:
        for _ in range(60):
            step.release()
        engine.close()


def wait(predicate, timeout: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_failing_processor_fails_only_its_request(tiny_engine):
    def broken(tokens, logits):
        raise ValueError("boom")

    params = SamplingParams(max_tokens=3, temperature=0)
    with pytest.raises(RuntimeError, match="boom"):
        list(tiny_engine.generate([1, 2, 3], params, broken))
    assert len(list(tiny_engine.generate([1, 2, 3], params))) == 3  # the worker lives on


def test_function_calling_round_trip_with_openai_client(tmp_path):
    engine = StubEngine([CALL, ANSWER, CALL, ANSWER])
    with live_server(create_app(engine, db_path=tmp_path / "db")) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="anything", timeout=30, max_retries=0)
        first = client.responses.create(model="gpt-oss-20b", input="Weather in Oslo?", tools=[WEATHER_TOOL])
        call = next(item for item in first.output if item.type == "function_call")
        assert call.name == "get_weather" and call.arguments == '{"city":"Oslo"}'
        second = client.responses.create(model="gpt-oss-20b", previous_response_id=first.id, tools=[WEATHER_TOOL],
                                          input=[{"type": "function_call_output", "call_id": call.call_id,
                                                  "output": '{"temp_c": 4}'}])
        assert second.output_text == "Oslo: 4 °C."
        items = client.responses.input_items.list(second.id)
        assert [it.type for it in items.data] == ["function_call_output"]

        tool = {"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}
        messages = [{"role": "user", "content": "Weather in Oslo?"}]
        chat = client.chat.completions.create(model="gpt-oss-20b", messages=messages, tools=[tool])
        msg = chat.choices[0].message
        assert chat.choices[0].finish_reason == "tool_calls" and msg.tool_calls[0].function.name == "get_weather"
        messages += [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": '{"temp_c": 4}'}]
        chat = client.chat.completions.create(model="gpt-oss-20b", messages=messages, tools=[tool])
        assert chat.choices[0].message.content == "Oslo: 4 °C."
        assert chat.choices[0].message.model_extra["reasoning_content"] == "It is 4 degrees."


def test_concurrent_streams_and_disconnect_on_the_real_engine(tiny_checkpoint, tmp_path):
    """N official-client streams at once on one continuous batch all finish correctly; a stream whose client
    leaves is cancelled and its row freed while the others go on."""
    import httpx

    from gptoss.api import Model

    engine = ModelEngine(Model.load(tiny_checkpoint, dtype="float32").transformer, "tiny", max_batch=8)
    n = 6
    try:
        with live_server(create_app(engine, db_path=tmp_path / "db")) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", timeout=120, max_retries=0)
            results: dict[int, list] = {}
            errors: list[BaseException] = []

            def run(k: int) -> None:
                try:
                    if k % 2:
                        results[k] = list(client.responses.create(model="gpt-oss-20b", input=f"Hi {k}", stream=True,
                                                                  max_output_tokens=24, extra_body={"seed": k}))
                    else:
                        results[k] = list(client.chat.completions.create(
                            model="gpt-oss-20b", messages=[{"role": "user", "content": f"Hi {k}"}], max_tokens=24,
                            seed=k, stream=True, stream_options={"include_usage": True}))
                except BaseException as e:  # reported below
                    errors.append(e)

            threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
            for t in threads:
                t.start()
            # meanwhile one more client leaves after its first few events
            with httpx.Client(base_url=url, timeout=60) as raw:
                with raw.stream("POST", "/v1/responses", json={"model": "m", "input": "bye", "stream": True,
                                                                "max_output_tokens": 2000}) as r:
                    for i, _ in enumerate(r.iter_lines()):
                        if i > 6:
                            break
            for t in threads:
                t.join(120)
            assert not errors, errors
            for k, events in results.items():
                if k % 2:
                    assert [e.sequence_number for e in events] == list(range(len(events)))
                    assert events[-1].type in ("response.completed", "response.incomplete")
                    assert events[-1].response.usage.output_tokens <= 24
                else:
                    assert events[-1].choices == [] and 0 < events[-1].usage.completion_tokens <= 24
            assert len(results) == n
            assert max(engine.step_sizes) >= 3  # they shared forwards
            assert wait(lambda: engine._inflight == 0, 30)  # the abandoned one was cancelled, not run to 2000
            assert sum(engine.step_sizes) < n * 24 + 2000 / 4
    finally:
        engine.close()
