"""ProcessEngine: the model in a child process behaves like ModelEngine in a thread (same tokens, constraints,
cancellation, errors), and a dead child fails its requests instead of hanging them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from gptoss.engine.sampling import SamplingParams
from gptoss.harmony.render import render_for_completion, stop_tokens, system_message, user_message
from gptoss.server import EngineBusy, ModelEngine
from gptoss.server.constrain import ConstraintSpec, HarmonyConstraint, compile_schema
from gptoss.server.process_engine import ProcessEngine

PROMPT = render_for_completion([system_message("low"), user_message("Hello, who are you?")])


def wait_idle(engine: ProcessEngine, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while engine._inflight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine._inflight == 0


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    eng = ProcessEngine(tiny_checkpoint, "tiny", dtype="float32", max_batch=2, max_queue=1)
    yield eng
    eng.close()


def test_same_greedy_tokens_as_the_thread_engine(engine, tiny_checkpoint):
    from gptoss.api import Model

    params = SamplingParams(max_tokens=12, temperature=0, stop=tuple(stop_tokens()))
    local = ModelEngine(Model.load(tiny_checkpoint, dtype="float32").transformer, "tiny")
    try:
        want = list(local.generate(PROMPT, params))
    finally:
        local.close()
    assert list(engine.generate(PROMPT, params)) == want
    assert engine.max_context == local.max_context and engine.threads >= 1


def test_concurrent_requests_and_seeded_sampling(engine):
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=5)
    outs: list[list[int]] = [[], [], []]

    def run(k: int) -> None:
        outs[k] = list(engine.generate(PROMPT, params))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]  # 2 decode together, 1 waits
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(len(o) == 10 for o in outs) and outs[0] == outs[1] == outs[2]  # a seed gives the same draw


def test_constraint_runs_in_the_child(engine):
    """A forced, strict function call: the random model writes the call header and valid arguments only
    because the child applies the request's constraint at every step."""
    schema = {"type": "object", "properties": {"c": {"enum": ["oslo", "paris"]}}, "required": ["c"],
              "additionalProperties": False}
    proc = HarmonyConstraint(ConstraintSpec(function_grammars={"f": compile_schema(schema)}, forced=("f",)))
    params = SamplingParams(max_tokens=80, temperature=1.0, seed=3, stop=tuple(stop_tokens()))
    from gptoss.harmony.render import render_text

    text = render_text(list(engine.generate(PROMPT, params, proc)))
    assert "to=functions.f" in text and text.endswith("<|call|>"), text
    assert json.loads(text.rsplit("<|message|>", 1)[1].removesuffix("<|call|>"))["c"] in ("oslo", "paris")


def test_cancel_frees_the_row(engine):
    cancel = threading.Event()
    stream = engine.generate(PROMPT, SamplingParams(max_tokens=5000, temperature=1.0, seed=1), cancel=cancel)
    assert len([next(stream) for _ in range(3)]) == 3
    cancel.set()
    list(stream)  # ends within a step or two instead of after 5000 tokens
    closed = engine.generate(PROMPT, SamplingParams(max_tokens=5000, temperature=1.0, seed=2))
    next(closed)
    closed.close()  # the consumer went away
    wait_idle(engine)
    assert len(list(engine.generate(PROMPT, SamplingParams(max_tokens=4, temperature=0)))) == 4
    assert not engine._jobs


def test_bad_prompt_fails_only_its_request(engine):
    with pytest.raises(RuntimeError, match=r"generation failed: .*token id"):
        list(engine.generate([10**9], SamplingParams(max_tokens=2)))
    assert len(list(engine.generate(PROMPT, SamplingParams(max_tokens=2, temperature=0)))) == 2


def test_busy_beyond_batch_and_queue(engine):
    streams = [engine.generate(PROMPT, SamplingParams(max_tokens=5000, temperature=1.0, seed=k)) for k in range(3)]
    try:
        with pytest.raises(EngineBusy):
            engine.generate(PROMPT, SamplingParams(max_tokens=2))
    finally:
        for s in streams:
            s.close()
    wait_idle(engine)  # the child drops the closed rows at its next step
    assert len(list(engine.generate(PROMPT, SamplingParams(max_tokens=2, temperature=0)))) == 2


def test_other_processors_are_refused(engine):
    with pytest.raises(TypeError, match="HarmonyConstraint"):
        engine.generate(PROMPT, SamplingParams(max_tokens=2), lambda tokens, logits: logits)


def test_a_dead_child_fails_open_and_later_requests(tiny_checkpoint):
    eng = ProcessEngine(tiny_checkpoint, "tiny", dtype="float32")
    try:
        stream = eng.generate(PROMPT, SamplingParams(max_tokens=100000, temperature=1.0, seed=1))
        next(stream)
        os.kill(eng._proc.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="engine process stopped"):
            list(stream)
        with pytest.raises(RuntimeError, match="engine process stopped"):
            eng.generate(PROMPT, SamplingParams(max_tokens=2))
    finally:
        eng.close()


def test_bad_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        ProcessEngine(tmp_path / "missing", "m")
