"""The agent loop with scripted model outputs, and with the real engine on a random checkpoint."""

from __future__ import annotations

import json
import threading

import pytest

import gptoss
from gptoss.agent import Agent, ToolResult, TurnDone, engine_source
from gptoss.engine.sampling import SamplingParams
from gptoss.harmony.parser import FinalDelta, ReasoningDelta, ToolCallArgsDelta, ToolCallStarted
from gptoss.harmony.render import FunctionTool, harmony_encoding, system_message, user_message
from gptoss.tokenizer import CONTROL_TOKENS
from gptoss.tools.base import ToolRegistry

WEATHER = FunctionTool("get_weather", "Current weather in a city",
                       {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
CALL = ('<|channel|>analysis<|message|>Need the weather; call the tool.<|end|>'
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json'
        '<|message|>{"city":"Oslo"}<|call|>')
ANSWER = ('<|channel|>analysis<|message|>It is 4 degrees.<|end|>'
          '<|start|>assistant<|channel|>final<|message|>Oslo: 4 °C.<|return|>')


def toks(text: str) -> list[int]:
    return harmony_encoding().encode(text, allowed_special="all")


class Script:
    """A token source replaying one completion per round and recording the prompts it saw."""

    def __init__(self, *completions: str, repeat_last: bool = False) -> None:
        self.completions = [toks(c) for c in completions]
        self.prompts: list[list[int]] = []
        self.repeat_last = repeat_last

    def __call__(self, prompt, params):
        self.prompts.append(prompt)
        i = len(self.prompts) - 1
        seq = self.completions[min(i, len(self.completions) - 1)] if self.repeat_last else self.completions[i]
        for n, t in enumerate(seq):
            if n >= params.max_tokens:
                return
            yield t
            if t in params.stop:
                return


def conversation(text: str = "Weather in Oslo?"):
    return [system_message("low", None), user_message(text)]


def run(agent, messages, **kw):
    events = list(agent.run(messages, SamplingParams(max_tokens=kw.pop("max_tokens", 512), temperature=0), **kw))
    assert isinstance(events[-1], TurnDone) and sum(isinstance(e, TurnDone) for e in events) == 1
    return events, events[-1]


def test_tool_round_trip():
    script = Script(CALL, ANSWER)
    tools = ToolRegistry()
    seen = []
    tools.add_function(WEATHER, lambda city: seen.append(city) or {"temp_c": 4})
    events, done = run(Agent(script, tools), conversation())
    assert seen == ["Oslo"]
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ToolCallStarted") < kinds.index("ToolResult") < kinds.index("FinalDelta")
    started = next(e for e in events if isinstance(e, ToolCallStarted))
    assert started.recipient == "functions.get_weather" and started.channel == "commentary"
    args = "".join(e.text for e in events if isinstance(e, ToolCallArgsDelta))
    assert json.loads(args) == {"city": "Oslo"}
    assert next(e for e in events if isinstance(e, ToolResult)).output == '{"temp_c": 4}'
    assert "".join(e.text for e in events if isinstance(e, FinalDelta)) == "Oslo: 4 °C."
    assert done.finish_reason == "stop" and done.usage.tool_rounds == 1
    # The second prompt carries the call (kept with <|call|>) and the tool result message.
    second = harmony_encoding().decode(script.prompts[1])
    assert ('<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json'
            '<|message|>{"city":"Oslo"}<|call|>') in second
    assert '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temp_c": 4}<|end|>' in second
    assert "Need the weather" in second  # analysis kept during the tool loop
    assert second.endswith("<|start|>assistant")
    assert done.usage.completion_tokens == len(toks(CALL)) + len(toks(ANSWER))
    assert 0 < done.usage.reasoning_tokens < done.usage.completion_tokens


def test_next_turn_drops_old_analysis():
    script = Script(CALL, ANSWER, ANSWER)
    tools = ToolRegistry()
    tools.add_function(WEATHER, lambda city: "sunny")
    agent = Agent(script, tools)
    _, done = run(agent, conversation())
    run(agent, [*done.messages, user_message("And tomorrow?")])
    third = harmony_encoding().decode(script.prompts[2])
    assert "Need the weather" not in third and "It is 4 degrees" not in third
    assert "Oslo: 4 °C." in third and "And tomorrow?" in third


def test_declared_function_without_implementation_is_returned():
    tools = ToolRegistry()
    tools.add_function(WEATHER)
    _, done = run(Agent(Script(CALL), tools), conversation())
    assert done.finish_reason == "tool_calls"
    assert [c.recipient for c in done.pending_calls] == ["functions.get_weather"]
    assert json.loads(done.pending_calls[0].content) == {"city": "Oslo"}


def test_tool_errors_become_tool_messages():
    bad = CALL.replace('{"city":"Oslo"}', '{"city": Oslo')
    tools = ToolRegistry()
    tools.add_function(WEATHER, lambda city: "x")
    events, done = run(Agent(Script(bad, ANSWER), tools), conversation())
    result = next(e for e in events if isinstance(e, ToolResult))
    assert result.output.startswith("Error: arguments are not valid JSON")
    assert done.finish_reason == "stop"
    unknown = CALL.replace("functions.get_weather", "functions.nope")
    events, _ = run(Agent(Script(unknown, ANSWER), tools), conversation())
    assert "no function named 'nope'" in next(e for e in events if isinstance(e, ToolResult)).output
    crash = ToolRegistry()
    crash.add_function(WEATHER, lambda city: 1 / 0)
    events, _ = run(Agent(Script(CALL, ANSWER), crash), conversation())
    assert "ZeroDivisionError" in next(e for e in events if isinstance(e, ToolResult)).output


def test_tool_rounds_are_bounded():
    tools = ToolRegistry()
    tools.add_function(WEATHER, lambda city: "sunny")
    script = Script(CALL, repeat_last=True)
    events, done = run(Agent(script, tools, max_tool_rounds=3), conversation())
    assert done.finish_reason == "max_tool_rounds"
    assert len(script.prompts) == 4 and sum(isinstance(e, ToolResult) for e in events) == 4


def test_token_budget_and_cancel():
    _, done = run(Agent(Script(ANSWER)), conversation(), max_tokens=5)
    assert done.finish_reason == "length" and done.usage.completion_tokens == 5
    cancel = threading.Event()
    cancel.set()
    _, done = run(Agent(Script(ANSWER)), conversation(), cancel=cancel)
    assert done.finish_reason == "cancelled" and done.usage.completion_tokens == 1


def test_real_engine_on_random_checkpoint(tiny_checkpoint):
    model = gptoss.load(tiny_checkpoint, dtype="float32")
    tools = ToolRegistry()
    tools.add_function(WEATHER, lambda city: "sunny")
    events, done = run(Agent(engine_source(model.transformer), tools), conversation(), max_tokens=24)
    assert done.finish_reason in ("stop", "length", "tool_calls", "max_tool_rounds")
    assert 0 < done.usage.completion_tokens <= 24 and done.usage.prompt_tokens > 20
    texts = [e.text for e in events if isinstance(e, FinalDelta | ReasoningDelta | ToolCallArgsDelta)]
    assert not any(c in t for t in texts for c in CONTROL_TOKENS)


@pytest.mark.parametrize("bad", [-1])
def test_agent_validates_rounds(bad):
    with pytest.raises(ValueError):
        Agent(Script(ANSWER), max_tool_rounds=bad)
