"""The gpt-oss-tiny evaluation: held-out corpus prompts, the real agent loop, scripted tool backends.

Each held-out task (:mod:`gptoss.train.corpus`) is cut after its user message and continued through the real
:class:`~gptoss.agent.Agent` loop by a token source -- the model (:func:`run_tasks_batched`: one agent per task in a
thread, each sampling round of a group of tasks decoded as one batch), or :func:`replay_source`, which replays the
corpus's own answer and must score 100% on every row (the check that harness and corpus agree). Tools are the task's
own backends (:meth:`Task.registry`): ``ast`` arithmetic for python, deterministic fake functions,
:class:`BrowserTool` over the task's documents.

Rows (targets in :data:`TARGETS`):

- ``well_formed``: every sampling round parses with no recovery and ends in ``<|call|>``, the last in ``<|return|>``;
- ``python``: a python call printed the expected value and the final answer contains it;
- ``functions``: the first call is the right function with exactly the expected JSON arguments;
- ``browser``: ``browser.search`` was called and the answer cites (``【c†La】``) a document page that was opened;
- ``json_valid``: the final answer is JSON valid against the response format's schema (the issue's criterion);
- ``json``: stricter, our own bar: valid against the schema and equal to the expected (copied) values;
- ``effort``: the median reasoning length (analysis tokens) strictly increases low < medium < high.

Informational rows (no target): ``browser_fact`` (the citation points at the line holding the fact, and the answer
states it) and ``chat`` (greeting / identity / refusal answered as trained, without tool calls).
"""

from __future__ import annotations

import itertools
import json
import queue
import re
import statistics
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptoss.agent import Agent, TokenSource, ToolResult, TurnDone
from gptoss.engine.generate import BatchGenerator
from gptoss.engine.sampling import SamplingParams
from gptoss.harmony.parser import ParsedMessage
from gptoss.harmony.render import EFFORTS, harmony_encoding
from gptoss.model.transformer import Transformer
from gptoss.tokenizer import SPECIAL_TOKENS, get_tokenizer
from gptoss.tools.base import ToolRegistry
from gptoss.train.corpus import FAMILIES, Task, generate_tasks

RETURN, CALL, END = SPECIAL_TOKENS["<|return|>"], SPECIAL_TOKENS["<|call|>"], SPECIAL_TOKENS["<|end|>"]
START = SPECIAL_TOKENS["<|start|>"]
TARGETS: dict[str, float] = {"well_formed": 0.99, "python": 0.90, "functions": 0.90, "browser": 0.80,
                             "json_valid": 0.90, "json": 0.90}
ROW_ORDER = ("well_formed", "python", "functions", "browser", "browser_fact", "json_valid", "json", "chat",
             "effort")
DEFAULT_MAX_TOOL_ROUNDS = 4
CITATION_RE = re.compile(r"【(\d+)†L(\d+)(?:-L(\d+))?】")


# --- running one task ---------------------------------------------------------------------------------------------

class _Recorder:
    """Wraps a token source and keeps each round's sampled tokens."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source
        self.rounds: list[list[int]] = []
        self.prompts: list[list[int]] = []

    def __call__(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        tokens: list[int] = []
        self.rounds.append(tokens)
        self.prompts.append(list(prompt))
        for t in self.source(prompt, params):
            tokens.append(t)
            yield t


@dataclass
class Run:
    """A task continued by a token source: the sampled rounds, the agent's result and the tools' final state."""

    task: Task
    rounds: list[list[int]]
    prompts: list[list[int]]
    done: TurnDone
    tool_results: list[ToolResult]
    registry: ToolRegistry

    @property
    def messages(self) -> list[ParsedMessage]:
        return [m for m in self.done.new_messages if m.role == "assistant"]

    @property
    def calls(self) -> list[ParsedMessage]:
        return [m for m in self.messages if m.is_tool_call]

    @property
    def final(self) -> str:
        return "".join(m.content for m in self.messages if m.channel == "final" and not m.is_tool_call)

    @property
    def reasoning_tokens(self) -> int:
        tok = get_tokenizer()
        return sum(len(tok.encode(m.content)) for m in self.messages if m.channel == "analysis" and not m.recipient)


def run_task(task: Task, source: TokenSource, params: SamplingParams,
             max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS) -> Run:
    """Continue ``task``'s prompt with ``source`` through the agent loop and the task's own tools."""
    registry = task.registry()
    recorder = _Recorder(source)
    results: list[ToolResult] = []
    done: TurnDone | None = None
    for event in Agent(recorder, registry, max_tool_rounds).run(task.prompt, params):
        if isinstance(event, ToolResult):
            results.append(event)
        elif isinstance(event, TurnDone):
            done = event
    assert done is not None
    return Run(task, recorder.rounds, recorder.prompts, done, results, registry)


def run_tasks(tasks: Iterable[Task], source_for: Callable[[Task], TokenSource], params: SamplingParams,
              max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS) -> Iterator[Run]:
    """One task after the other, each with its own token source."""
    for task in tasks:
        yield run_task(task, source_for(task), params, max_tool_rounds)


class _RoundBatcher:
    """Token sources for agent loops running in threads: the prompts of one round of every live conversation are
    decoded together in one :class:`BatchGenerator`, whose tokens are handed to each conversation's thread."""

    def __init__(self, model: Transformer, live: int) -> None:
        self.model = model
        self.live = live
        self.cond = threading.Condition()
        self.waiting: list[tuple[list[int], SamplingParams, queue.SimpleQueue]] = []

    def source(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        q: queue.SimpleQueue = queue.SimpleQueue()
        with self.cond:
            self.waiting.append((prompt, params, q))
            self.cond.notify_all()
        while (token := q.get()) is not None:
            yield token

    def finished(self) -> None:
        with self.cond:
            self.live -= 1
            self.cond.notify_all()

    def drive(self) -> None:
        """Decode rounds until every conversation has finished (called on the main thread)."""
        while True:
            with self.cond:
                self.cond.wait_for(lambda: len(self.waiting) == self.live)
                batch, self.waiting = self.waiting, []
            if not batch:
                return
            try:
                gen = BatchGenerator(self.model, [p for p, _, _ in batch], [params for _, params, _ in batch])
                for event in gen:
                    batch[event.row][2].put(event.token)
            finally:
                for _, _, q in batch:
                    q.put(None)


def run_tasks_batched(tasks: Sequence[Task], model: Transformer, params: SamplingParams, batch_size: int = 32,
                      max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS) -> Iterator[Run]:
    """Like :func:`run_tasks` with the model, ``batch_size`` conversations at a time: each runs the real agent
    loop in a thread, and every sampling round of the group is one batched decode."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(tasks), batch_size):
        group = tasks[start:start + batch_size]
        batcher = _RoundBatcher(model, len(group))
        runs: list[Run | None] = [None] * len(group)
        errors: list[BaseException] = []

        def work(i: int, task: Task, batcher: _RoundBatcher = batcher, runs: list = runs,
                 errors: list = errors) -> None:
            try:
                runs[i] = run_task(task, batcher.source, params, max_tool_rounds)
            except BaseException as e:  # re-raised on the main thread
                errors.append(e)
            finally:
                batcher.finished()

        threads = [threading.Thread(target=work, args=(i, t), daemon=True) for i, t in enumerate(group)]
        for t in threads:
            t.start()
        batcher.drive()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        yield from (r for r in runs if r is not None)


# --- the corpus's own answers as a token source ---------------------------------------------------------------

def replay_rounds(task: Task) -> list[list[int]]:
    """What the model should sample for ``task``, one token list per round (a round ends at a tool call): each
    message rendered as in training, the prompt's ``<|start|>assistant`` not repeated, the answer ending in
    ``<|return|>``."""
    enc = harmony_encoding()
    prefix = [START, *get_tokenizer().encode("assistant")]
    rounds: list[list[int]] = []
    current: list[int] | None = None
    for m in task.messages[task.prompt_len:]:
        if m.author.role.value != "assistant":
            current = None
            continue
        tokens = list(enc.render(m))
        if current is None:
            assert tokens[:len(prefix)] == prefix
            tokens = tokens[len(prefix):]
            current = []
            rounds.append(current)
        current += tokens
    if rounds and rounds[-1] and rounds[-1][-1] == END:
        rounds[-1][-1] = RETURN
    return rounds


def replay_source(task: Task) -> TokenSource:
    """A token source that plays ``task``'s corpus answer round by round (then only ``<|return|>``)."""
    rounds = replay_rounds(task)
    counter = itertools.count()

    def source(prompt: list[int], params: SamplingParams) -> Iterator[int]:
        k = next(counter)
        for n, t in enumerate(rounds[k] if k < len(rounds) else [RETURN]):
            if n >= params.max_tokens:
                return
            yield t
            if t in params.stop:
                return

    return source


# --- checks -------------------------------------------------------------------------------------------------------

def same_json(a: Any, b: Any) -> bool:
    """JSON equality that tells booleans from numbers (``True != 1``) but not ints from equal floats."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict), "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool), "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def validate(instance: Any, schema: dict, path: str = "$") -> list[str]:
    """JSON Schema errors for ``instance`` -- the ``jsonschema`` package when installed, else the subset the corpus
    generates: ``type`` (one or a list), ``enum``, ``properties``, ``required``, ``additionalProperties: false``,
    ``items``."""
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:
        return _validate_subset(instance, schema, path)
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
            for e in jsonschema.Draft202012Validator(schema).iter_errors(instance)]


def _validate_subset(instance: Any, schema: dict, path: str) -> list[str]:
    errors: list[str] = []
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_TYPES.get(t, lambda v: False)(instance) for t in names):
            return [f"{path}: {json.dumps(instance)[:40]} is not of type {' or '.join(names)}"]
    if "enum" in schema and not any(same_json(instance, e) for e in schema["enum"]):
        errors.append(f"{path}: {json.dumps(instance)[:40]} is not one of {schema['enum']}")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        errors += [f"{path}: missing required property {k!r}" for k in schema.get("required", ()) if k not in instance]
        for k, v in instance.items():
            if k in props:
                errors += _validate_subset(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: unexpected property {k!r}")
    if isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(instance):
            errors += _validate_subset(v, schema["items"], f"{path}[{i}]")
    return errors


def contains_number(text: str, number: str) -> bool:
    """``number`` appears in ``text`` as a whole number (not inside a longer one)."""
    return re.search(rf"(?<![\d.]){re.escape(number)}(?!\.?\d)", text) is not None


def check_well_formed(run: Run) -> bool:
    rounds = run.rounds
    return (bool(rounds) and run.done.finish_reason == "stop" and not run.done.recoveries
            and all(r and r[-1] in (CALL, RETURN) for r in rounds) and rounds[-1][-1] == RETURN
            and all(r[-1] == CALL for r in rounds[:-1]))


def check_python(run: Run) -> bool:
    expected = run.task.expect["output"]
    ran = any(r.call.recipient == "python" and r.output.strip() == expected for r in run.tool_results)
    return ran and contains_number(run.final, expected)


def check_functions(run: Run) -> bool:
    expect = run.task.expect
    calls = run.calls
    if not calls or calls[0].recipient != f"functions.{expect['name']}":
        return False
    try:
        args = json.loads(calls[0].content)
    except json.JSONDecodeError:
        return False
    return same_json(args, expect["arguments"])


def _citations(run: Run) -> list[tuple[int, int, int]]:
    return [(int(c), int(a), int(b) if b else int(a)) for c, a, b in CITATION_RE.findall(run.final)]


def check_browser(run: Run) -> bool:
    tool = run.registry.get("browser")
    if tool is None or not any(m.recipient == "browser.search" for m in run.calls):
        return False
    state = tool.state  # type: ignore[attr-defined]
    return any((page := state.page_at(c)) is not None and page.kind == "page" for c, _, _ in _citations(run))


def check_browser_fact(run: Run) -> bool:
    tool = run.registry.get("browser")
    if tool is None or not check_browser(run):
        return False
    expect = run.task.expect
    state = tool.state  # type: ignore[attr-defined]
    cited = any((page := state.page_at(c)) is not None and page.url == expect["url"] and a <= expect["line"] <= b
                for c, a, b in _citations(run))
    return cited and expect["value"] in run.final


def _final_json(run: Run) -> tuple[bool, Any]:
    try:
        return True, json.loads(run.final.strip())
    except json.JSONDecodeError:
        return False, None


def check_json_valid(run: Run) -> bool:
    ok, value = _final_json(run)
    return ok and not validate(value, run.task.expect["schema"])


def check_json(run: Run) -> bool:
    return check_json_valid(run) and same_json(_final_json(run)[1], run.task.expect["value"])


def check_chat(run: Run) -> bool:
    expect = run.task.expect
    final = run.final
    return bool(final.strip()) and expect["contains"] in final and not run.calls


CHECKS: dict[str, tuple[tuple[str, Callable[[Run], bool]], ...]] = {
    "python": (("python", check_python),),
    "functions": (("functions", check_functions),),
    "browser": (("browser", check_browser), ("browser_fact", check_browser_fact)),
    "json": (("json_valid", check_json_valid), ("json", check_json)),
    "chat": (("chat", check_chat),),
}


def score_run(run: Run) -> dict[str, bool]:
    """Row -> pass for one run: ``well_formed`` plus the rows of the task's family."""
    scores = {"well_formed": check_well_formed(run)}
    for row, check in CHECKS[run.task.family]:
        scores[row] = check(run)
    return scores


# --- a whole evaluation ---------------------------------------------------------------------------------------

@dataclass
class Row:
    name: str
    n: int = 0
    passed: int = 0
    target: float | None = None

    @property
    def score(self) -> float:
        return self.passed / self.n if self.n else 0.0

    @property
    def ok(self) -> bool | None:
        return None if self.target is None else self.n > 0 and self.score >= self.target


@dataclass
class Report:
    rows: dict[str, Row]
    effort_medians: dict[str, float | None]
    runs: list[dict] = field(default_factory=list)
    unreachable: int = 0

    @property
    def effort_ok(self) -> bool:
        m = [self.effort_medians.get(e) for e in EFFORTS]
        return all(x is not None for x in m) and m[0] < m[1] < m[2]  # type: ignore[operator]

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.rows.values() if r.target is not None) and self.effort_ok

    def to_json(self) -> dict:
        return {
            "rows": {name: {"n": r.n, "passed": r.passed, "score": round(r.score, 4), "target": r.target,
                            "ok": r.ok} for name, r in self.rows.items()},
            "effort": {"medians": self.effort_medians, "target": "low < medium < high", "ok": self.effort_ok},
            "passed": self.passed,
            "unreachable_tasks": self.unreachable,
            "runs": self.runs,
        }


def heldout_tasks(n_per_family: int, seed: int, families: Sequence[str] = FAMILIES) -> list[Task]:
    """``n_per_family`` held-out tasks of each family, interleaved."""
    return generate_tasks(n_per_family * len(families), seed, "heldout", families=list(families))


def _unreachable(task: Task, kept: set[int]) -> bool:
    return any(t not in kept for r in replay_rounds(task) for t in r)


def evaluate(runs: Iterable[Run], kept_token_ids: Sequence[int] | None = None,
             on_run: Callable[[Run], None] | None = None) -> Report:
    """Score runs (from :func:`run_tasks` or :func:`run_tasks_batched`). ``kept_token_ids`` (a trimmed-vocabulary
    model) counts tasks whose answer needs a token the model cannot produce."""
    rows = {name: Row(name, target=TARGETS.get(name)) for name in ROW_ORDER if name != "effort"}
    lengths: dict[str, list[int]] = {e: [] for e in EFFORTS}
    report = Report(rows, {})
    kept = set(kept_token_ids) if kept_token_ids is not None else None
    for run in runs:
        task = run.task
        scores = score_run(run)
        for name, ok in scores.items():
            rows[name].n += 1
            rows[name].passed += int(ok)
        lengths[task.effort].append(run.reasoning_tokens)
        if kept is not None and _unreachable(task, kept):
            report.unreachable += 1
        report.runs.append({**task.meta(), "scores": scores, "finish_reason": run.done.finish_reason,
                            "reasoning_tokens": run.reasoning_tokens, "final": run.final[:300],
                            "calls": [{"recipient": c.recipient, "arguments": c.content[:300]} for c in run.calls],
                            "recoveries": run.done.recoveries[:5]})
        if on_run is not None:
            on_run(run)
    report.effort_medians = {e: (statistics.median(v) if v else None) for e, v in lengths.items()}
    return report
