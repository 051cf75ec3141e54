"""The agent loop: generate -> parse -> run tools -> continue, as a stream of events.

One place used by the CLI and the server. Each round renders the conversation, samples until a
stop token, parses the completion with the tolerant harmony parser, and, if the model called a
tool the registry can run, appends the result as a tool message and goes again -- bounded by
``max_tool_rounds``. Calls the registry cannot run (declared developer functions) end the turn
with ``finish_reason="tool_calls"`` so the caller can run them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from openai_harmony import Message

from gptoss.engine.generate import BatchGenerator
from gptoss.engine.sampling import SamplingParams
from gptoss.harmony.parser import Event, ParsedMessage, StreamParser
from gptoss.harmony.render import render_for_completion, stop_tokens, tool_result_message
from gptoss.model.transformer import Transformer
from gptoss.tools.base import ToolCall, ToolRegistry

DEFAULT_MAX_TOOL_ROUNDS = 8

# A token source samples a completion for a prompt: the engine, or a script in tests.
TokenSource = Callable[[list[int], SamplingParams], Iterator[int]]


def engine_source(model: Transformer) -> TokenSource:
    """Sample from a model with the engine (stops on the harmony stop tokens)."""

    def source(prompt: list[int], params: SamplingParams) -> Iterator[int]:
        for event in BatchGenerator(model, [prompt], params):
            yield event.token

    return source


@dataclass
class ToolResult:
    """A tool ran: ``output`` was appended to the conversation as a tool message."""

    call: ParsedMessage
    output: str


@dataclass
class Usage:
    prompt_tokens: int = 0  # last round's rendered prompt
    completion_tokens: int = 0  # every sampled token, all rounds
    reasoning_tokens: int = 0  # sampled tokens of analysis messages without a recipient
    tool_rounds: int = 0
    seconds: float = 0.0  # wall time spent generating

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class TurnDone:
    """The turn ended. ``messages`` is the whole conversation afterwards (ready for the next
    user message); ``pending_calls`` are tool calls the caller must answer."""

    finish_reason: str  # stop | tool_calls | length | max_tool_rounds | cancelled
    messages: list[Message]
    new_messages: list[ParsedMessage]
    pending_calls: list[ParsedMessage] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    recoveries: list[str] = field(default_factory=list)


AgentEvent = Event | ToolResult | TurnDone


class Agent:
    """Runs turns of a conversation against a token source and a tool registry."""

    def __init__(self, source: TokenSource, tools: ToolRegistry | None = None,
                 max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS) -> None:
        if max_tool_rounds < 0:
            raise ValueError(f"max_tool_rounds must be >= 0, got {max_tool_rounds}")
        self.source = source
        self.tools = tools or ToolRegistry()
        self.max_tool_rounds = max_tool_rounds

    def run(self, messages: Sequence[Message], params: SamplingParams,
            cancel: threading.Event | None = None, prompt: Sequence[int] | None = None) -> Iterator[AgentEvent]:
        """Continue ``messages`` (ending with a user or tool message) until the model answers.

        ``params.max_tokens`` bounds the sampled tokens of the whole turn; harmony stop tokens
        are always added to ``params.stop``.
        """
        history = list(messages)
        usage = Usage()
        produced: list[ParsedMessage] = []
        recoveries: list[str] = []
        stops = tuple(dict.fromkeys((*params.stop, *stop_tokens())))
        budget = params.max_tokens
        for round_no in range(self.max_tool_rounds + 1):
            # ``prompt``: the caller's rendering of ``messages`` (the server renders once to check the context)
            prompt = list(prompt) if round_no == 0 and prompt is not None else render_for_completion(history)
            usage.prompt_tokens = len(prompt)
            parser = StreamParser()
            round_params = replace(params, max_tokens=budget, stop=stops)
            last = None
            start = time.perf_counter()
            cancelled = False
            try:
                for token in self.source(prompt, round_params):
                    last = token
                    usage.completion_tokens += 1
                    budget -= 1
                    yield from parser.feed(token)
                    if cancel is not None and cancel.is_set():
                        cancelled = True
                        break
            except KeyboardInterrupt:
                cancelled = True
            usage.seconds += time.perf_counter() - start
            yield from parser.finish()
            recoveries += parser.recoveries
            new = parser.messages
            produced += new
            # Only assistant turns enter history: a hallucinated user or tool turn must not.
            history += [m.to_harmony() for m in new if m.role == "assistant"]
            usage.reasoning_tokens += sum(len(m.tokens) for m in new
                                          if m.channel == "analysis" and m.recipient is None)
            calls = [m for m in new if m.is_tool_call]
            if cancelled:
                yield TurnDone("cancelled", history, produced, [], usage, recoveries)
                return
            if not calls:
                reason = "stop" if last in stops else "length"
                yield TurnDone(reason, history, produced, [], usage, recoveries)
                return
            if last not in stops and budget <= 0:
                yield TurnDone("length", history, produced, [], usage, recoveries)
                return
            pending = []
            for call in calls:
                output = self.tools.dispatch(ToolCall(call.recipient or "", call.content, call.channel))
                if output is None:
                    pending.append(call)
                    continue
                history.append(tool_result_message(call.recipient or "", output, call.channel or "commentary"))
                yield ToolResult(call, output)
            if pending:
                yield TurnDone("tool_calls", history, produced, pending, usage, recoveries)
                return
            usage.tool_rounds = round_no + 1
            if cancel is not None and cancel.is_set():  # stopped while a tool ran: its result is kept
                yield TurnDone("cancelled", history, produced, [], usage, recoveries)
                return
            if budget <= 0:
                yield TurnDone("length", history, produced, [], usage, recoveries)
                return
        yield TurnDone("max_tool_rounds", history, produced, [], usage, recoveries)
