"""A synthetic harmony corpus that teaches a tiny model the format and tool use (gpt-oss-tiny).

Five task families, each a short single-turn conversation built from a handful of fixed templates whose slots
(names, cities, numbers, codes) vary widely, so the model has to copy values from its context rather than memorise
them:

- ``python``: arithmetic and unit conversions through the python tool (analysis channel, content type ``code``);
- ``functions``: 2-4 developer functions drawn from a pool with varied names and schemas; the assistant picks the
  right one and copies the arguments as JSON (commentary, ``<|constrain|>json``), then answers from the result;
- ``browser``: ``browser.search`` -> results page -> ``browser.open`` -> page -> an answer citing
  ``【{cursor}†L{line}】``, served by :class:`FakeSearch` over a few synthetic documents;
- ``json``: a developer response format; the answer is JSON valid against it, values copied from the user's text;
- ``chat``: greetings, who-are-you (a developer-given name or ``gpt-oss-tiny``) and polite refusals of requests
  no tool can serve.

A training aid, ``echo`` (weight 0 unless asked for, never evaluated): the user gives random values and the
answer repeats them exactly, so all of its loss is on copying from context.

Every conversation has ``Reasoning: low|medium|high`` (uniform) and analysis whose length grows with effort: one
short clause at low, two clauses at medium, three or four ``Step n:`` sentences at high.

Tool outputs are produced by running the very tools the evaluation harness uses (:meth:`Task.registry`) -- the
python tool (``ast`` arithmetic, no ``exec``), deterministic fake functions and the real :class:`BrowserTool` over
:class:`FakeSearch` -- so the corpus and ``gptoss eval tiny`` cannot disagree about what a tool says.

Splits: a prompt belongs to ``heldout`` when the SHA-256 of its family, developer instructions and user text falls
in one bucket of ten, else to ``train``; candidates are drawn and rejected until they land in the requested split.
Both splits share the name/number inventories (so a trimmed vocabulary covers both) but never share a prompt.
Everything is deterministic under the seed (one ``random.Random``; no global RNG, no ``hash()``).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openai_harmony import Message

from gptoss.harmony.render import (
    EFFORTS,
    ResponseFormat,
    assistant_message,
    developer_message,
    harmony_encoding,
    system_message,
    tool_call_message,
    tool_result_message,
    user_message,
)
from gptoss.tools.base import ToolCall, ToolRegistry
from gptoss.tools.browser.tool import BrowserTool
from gptoss.train.world import (
    _PLACES,
    ASSISTANT_NAMES,
    CITIES,
    FIRST_NAMES,
    FN_KINDS,
    ITEMS,
    LAST_NAMES,
    PRODUCTS,
    SPECIES,
    TICKERS,
    TIMER_LABELS,
    ArithmeticPython,
    DeclaredFunction,
    Doc,
    FakeSearch,
    _by_effort,
    _clock,
    _date,
    _join,
    _number,
    _person,
    _place_doc,
    _price,
    _steps,
    compact_json,
    declare,
    email_address,
    notes_folder,
    split_of,
)

FAMILIES = ("python", "functions", "browser", "json", "chat")  # what the model is for (and what eval scores)
# Training aids: families that teach a skill the others need but that is not a use case. Weight 0 by default.
AUX_FAMILIES = ("echo",)
DEFAULT_WEIGHTS = {"python": 0.22, "functions": 0.25, "browser": 0.18, "json": 0.17, "chat": 0.18, "echo": 0.0}
SPLITS = ("train", "heldout")
MAX_BODY_TOKENS = 350  # tokens after the system message (whose tool descriptions are fixed boilerplate)
# Search results with snippets (3 x ~40 words) need more; under 350 almost every notes task was dropped.
MAX_BROWSER_BODY_TOKENS = 560
MAX_TRIES = 2000
TINY_NAME = "gpt-oss-tiny"

# --- tasks --------------------------------------------------------------------------------------------------------

@dataclass
class Task:
    """One generated conversation and what the evaluation needs to replay and score it."""

    family: str
    kind: str
    effort: str
    messages: list[Message]
    prompt_len: int  # messages[:prompt_len] is the prompt: system, developer (if any), user
    expect: dict[str, Any] = field(default_factory=dict)
    python: bool = False
    browser: bool = False
    functions: tuple[DeclaredFunction, ...] = ()
    docs: tuple[Doc, ...] = ()
    snippets: bool = False  # search results carry text (FakeSearch)

    @property
    def prompt(self) -> list[Message]:
        return self.messages[:self.prompt_len]

    def registry(self) -> ToolRegistry:
        """Fresh tool backends for this task (the browser's page stack is per conversation)."""
        registry = ToolRegistry()
        for f in self.functions:
            registry.add_function(f.tool(), f.implementation())
        if self.python:
            registry.add(ArithmeticPython())
        if self.browser:
            registry.add(BrowserTool(FakeSearch(self.docs, self.snippets)))
        return registry

    def meta(self) -> dict[str, str]:
        return {"family": self.family, "kind": self.kind, "effort": self.effort}


class _Builder:
    """Accumulates a conversation, running tool calls through the task's registry."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.registry = task.registry()

    def think(self, text: str) -> None:
        self.task.messages.append(assistant_message(text, "analysis"))

    def call(self, recipient: str, arguments: str, channel: str, content_type: str) -> str:
        self.task.messages.append(tool_call_message(recipient, arguments, channel, content_type))
        output = self.registry.dispatch(ToolCall(recipient, arguments, channel))
        assert output is not None, f"no backend for {recipient}"
        self.task.messages.append(tool_result_message(recipient, output, channel))
        return output

    def answer(self, text: str) -> None:
        self.task.messages.append(assistant_message(text, "final"))


def _new_task(rng: random.Random, family: str, kind: str, effort: str, user: str, *, instructions: str | None = None,
              functions: Sequence[DeclaredFunction] = (), response_format: ResponseFormat | None = None,
              python: bool = False, browser: bool = False, docs: Sequence[Doc] = ()) -> Task:
    date = _date(rng) if rng.random() < 0.5 else None
    messages = [system_message(effort, date, browser=browser, python=python)]
    dev = developer_message(instructions, [f.tool() for f in functions], response_format)
    if dev is not None:
        messages.append(dev)
    messages.append(user_message(user))
    return Task(family, kind, effort, messages, len(messages), python=python, browser=browser,
                functions=tuple(functions), docs=tuple(docs))


# python ----------------------------------------------------------------------------------------------------------

_CONVERSIONS = (  # (from, to, code template, rule for high-effort analysis)
    ("km", "miles", "round({x} * 0.621371, 2)", "one km is 0.621371 miles"),
    ("miles", "km", "round({x} * 1.609344, 2)", "one mile is 1.609344 km"),
    ("kg", "pounds", "round({x} * 2.204623, 2)", "one kg is 2.204623 pounds"),
    ("pounds", "kg", "round({x} * 0.453592, 2)", "one pound is 0.453592 kg"),
    ("meters", "feet", "round({x} * 3.28084, 2)", "one meter is 3.28084 feet"),
    ("feet", "meters", "round({x} * 0.3048, 2)", "one foot is 0.3048 meters"),
    ("liters", "gallons", "round({x} * 0.264172, 2)", "one liter is 0.264172 gallons"),
    ("gallons", "liters", "round({x} * 3.785412, 2)", "one gallon is 3.785412 liters"),
    ("inches", "cm", "round({x} * 2.54, 2)", "one inch is 2.54 cm"),
    ("cm", "inches", "round({x} * 0.393701, 2)", "one cm is 0.393701 inches"),
    ("celsius", "fahrenheit", "round({x} * 9 / 5 + 32, 1)", "F is C * 9 / 5 + 32"),
    ("fahrenheit", "celsius", "round(({x} - 32) * 5 / 9, 1)", "C is (F - 32) * 5 / 9"),
)


def _python_task(rng: random.Random, effort: str) -> tuple[Task, Callable[[_Builder], None]]:
    if rng.random() < 0.6:
        op = rng.choice("+-*/")
        a = _number(rng, 1, 6)
        b = _number(rng, 1, 4) if op != "*" else _number(rng, 1, 3)
        expr = f"{a} {op} {b}"
        code = f"print({expr})" if op != "/" else f"print(round({expr}, 2))"
        user = rng.choice(("What is {e}?", "Compute {e}.", "Calculate {e}.", "What is {e} exactly?")).format(e=expr)
        kind, need = "arithmetic", expr
        plan = _by_effort(effort, f"Compute {expr} with python.",
                          f"The user asks for {expr}. Use python to be exact.",
                          _steps(f"the user asks for {expr}.", "exact math needs python.", "print the result."))
        answer = "{e} = {out}." if op != "/" else "{e} is about {out}."
        answer = answer.replace("{e}", expr)
    else:
        src, dst, template, rule = rng.choice(_CONVERSIONS)
        x: float | int = rng.randint(1, 1000) if rng.random() < 0.7 else rng.randint(1, 9999) / 10
        code = f"print({template.format(x=x)})"
        user = rng.choice(("Convert {x} {s} to {d}.", "How many {d} is {x} {s}?", "What is {x} {s} in {d}?")
                          ).format(x=x, s=src, d=dst)
        kind, need = "convert", f"{x} {src} in {dst}"
        plan = _by_effort(effort, f"Convert {need} with python.",
                          f"The user wants {need}. Use python for the math.",
                          _steps(f"the user wants {need}.", f"{rule}.", "compute it in python."))
        answer = f"{x} {src} is {{out}} {dst}."
    task = _new_task(rng, "python", kind, effort, user, python=True)

    def build(b: _Builder) -> None:
        b.think(plan)
        out = b.call("python", code, "analysis", "code").strip()
        b.think(_by_effort(effort, f"Result: {out}.", f"Python printed {out}. That answers it.",
                           _steps(f"python printed {out}.", "this is the answer.", "reply briefly.")))
        b.answer(answer.format(out=out))
        task.expect.update(code=code, output=out, need=need)

    return task, build


# functions -------------------------------------------------------------------------------------------------------

def _functions_task(rng: random.Random, effort: str) -> tuple[Task, Callable[[_Builder], None]]:
    kind = rng.choice(list(FN_KINDS))
    spec = FN_KINDS[kind]
    n_other = rng.choice((1, 1, 1, 2, 2, 3))
    others = rng.sample([k for k in FN_KINDS if k != kind], n_other)
    target = declare(kind, rng)
    declared = [target, *(declare(k, rng) for k in others)]
    rng.shuffle(declared)
    values = spec.sample(rng)
    optional = "+".join(p.key for p in spec.params if not p.required and p.key in values)
    user = rng.choice(spec.requests[optional]).format(**values)
    args = target.arguments(values)
    need = spec.need.format(**values)
    task = _new_task(rng, "functions", kind, effort, user, functions=declared)
    task.expect.update(name=target.name, arguments=args)
    settings = _join([f"{k} to {v}" for k, v in args.items()])

    def build(b: _Builder) -> None:
        b.think(_by_effort(effort, f"Use {target.name}.", f"The user wants {need}. Call {target.name}.",
                           _steps(f"the user wants {need}.", f"call {target.name}.", f"set {settings}.")))
        out = b.call(f"functions.{target.name}", compact_json(args), "commentary", "<|constrain|>json")
        result = json.loads(out)
        b.think(_by_effort(effort, "Got the result.", "The tool answered. Now reply.",
                           _steps("the tool answered.", "reply with its data.")))
        b.answer(spec.answer.format(**{**values, **result}))

    return task, build


# browser ---------------------------------------------------------------------------------------------------------

def _browser_task(rng: random.Random, effort: str) -> tuple[Task, Callable[[_Builder], None]]:
    kind = rng.choice(_PLACES)
    name, other_name = rng.sample(LAST_NAMES, 2)
    other_kind = rng.choice([k for k in _PLACES if k is not kind])
    notes = notes_folder(rng) if rng.random() < 0.35 else None  # a user's indexed notes, or the web
    doc, facts = _place_doc(rng, name, kind, notes)
    docs = [doc, _place_doc(rng, name, other_kind, notes)[0], _place_doc(rng, other_name, kind, notes)[0]]
    # none, one or two distractors sharing a word with the query; a lone result teaches "open id 0", not "id 1"
    docs = docs[:rng.choice((1, 2, 3, 3))]
    rng.shuffle(docs)
    result_id = docs.index(doc)
    entity = facts["entity"]
    fact = rng.choice(("year", "size", "count", "city"))
    if fact == "city":
        question, need, statement = "Where is {e}?", "where {e} is", "{e} is in {city}"
    else:
        question, need, statement = kind.questions[fact]
    fill = {"e": entity, **facts}
    question, need, statement = (s.format(**fill) for s in (question, need, statement))
    value = str(facts[fact])
    line = facts["line"][fact]
    task = _new_task(rng, "browser", fact, effort, question, browser=True, docs=docs)
    task.snippets = notes is not None or rng.random() < 0.5
    task.expect.update(url=doc.url, line=line, value=value, query=entity)
    open_args = {"cursor": 0, "id": result_id} if rng.random() < 0.3 else {"id": result_id}

    def build(b: _Builder) -> None:
        b.think(_by_effort(effort, f"Search for {entity}.", f"The user wants {need}. Search for it.",
                           _steps(f"the user wants {need}.", "I must look it up.", f"search for {entity}.")))
        b.call("browser.search", compact_json({"query": entity}), "analysis", "code")
        b.think(_by_effort(effort, f"Open result {result_id}.", f"Result {result_id} is {entity}. Open it.",
                           _steps(f"result {result_id} is {entity}.", "open it.")))
        page = b.call("browser.open", compact_json(open_args), "analysis", "code")
        cursor = int(page[1:page.index("]")])
        assert f"L{line}: " in page and value in page.split(f"L{line}: ", 1)[1].split("\n", 1)[0], page
        b.think(_by_effort(effort, f"L{line} has it.", f"L{line} says {value}. Cite it.",
                           _steps(f"L{line} says {value}.", "cite it.")))
        b.answer(f"{statement}【{cursor}†L{line}】.")
        task.expect.update(cursor=cursor)

    return task, build


# json ------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SchemaKind:
    name: str
    fields: tuple[tuple[str, dict], ...]  # (property, JSON schema)
    sample: Callable[[random.Random], dict]
    texts: tuple[str, ...]
    about: str  # "a person"

    def schema(self) -> dict:
        return {"type": "object", "properties": dict(self.fields), "required": [f for f, _ in self.fields],
                "additionalProperties": False}


SCHEMA_KINDS: dict[str, SchemaKind] = {k.name: k for k in (
    SchemaKind("person", (("name", {"type": "string"}), ("age", {"type": "integer"}), ("city", {"type": "string"})),
               lambda r: {"name": _person(r), "age": r.randint(18, 95), "city": r.choice(CITIES)},
               ("{name} is {age} years old and lives in {city}.", "{name}, age {age}, lives in {city}.",
                "Meet {name} from {city}, who is {age}."), "a person"),
    SchemaKind("order", (("item", {"type": "string"}), ("quantity", {"type": "integer"}),
                         ("price", {"type": "number"})),
               lambda r: {"item": r.choice(ITEMS), "quantity": r.randint(1, 60), "price": _price(r)},
               ("Order {quantity} {item} at {price} dollars each.", "I want {quantity} {item} for {price} dollars "
                "each."), "an order"),
    SchemaKind("pet", (("name", {"type": "string"}), ("species", {"type": "string", "enum": list(SPECIES)}),
                       ("age", {"type": "integer"})),
               lambda r: {"name": r.choice(FIRST_NAMES), "species": r.choice(SPECIES), "age": r.randint(1, 20)},
               ("{name} is a {species} and is {age} years old.", "My {species} {name} is {age}."), "a pet"),
    SchemaKind("trip", (("origin", {"type": "string"}), ("destination", {"type": "string"}),
                        ("passengers", {"type": "integer"})),
               lambda r: dict(zip(("origin", "destination"), r.sample(CITIES, 2), strict=True),
                              passengers=r.randint(1, 9)),
               ("{passengers} people fly from {origin} to {destination}.",
                "A trip from {origin} to {destination} for {passengers} people."), "a trip"),
    SchemaKind("product", (("product", {"type": "string"}), ("price", {"type": "number"}),
                           ("in_stock", {"type": "boolean"})),
               lambda r: {"product": r.choice(PRODUCTS), "price": _price(r), "in_stock": r.random() < 0.5},
               ("The {product} costs {price} dollars and is {stock}.", "{stock_cap}: the {product} at {price} "
                "dollars."), "a product"),
    SchemaKind("booking", (("guest", {"type": "string"}), ("hotel", {"type": "string"}),
                           ("nights", {"type": "integer"})),
               lambda r: {"guest": _person(r), "hotel": f"Hotel {r.choice(CITIES)}", "nights": r.randint(1, 14)},
               ("{guest} booked {nights} nights at {hotel}.", "{hotel} has {guest} for {nights} nights."),
               "a booking"),
)}
JSON_INSTRUCTIONS = ("Extract the data as JSON.", "Reply with JSON only.")


def _json_task(rng: random.Random, effort: str) -> tuple[Task, Callable[[_Builder], None]]:
    kind = SCHEMA_KINDS[rng.choice(list(SCHEMA_KINDS))]
    values = kind.sample(rng)
    stock = "in stock" if values.get("in_stock") else "sold out"
    text = rng.choice(kind.texts).format(**values, stock=stock, stock_cap=stock.capitalize())
    fmt = ResponseFormat(kind.name, kind.schema())
    instructions = rng.choice(JSON_INSTRUCTIONS)
    task = _new_task(rng, "json", kind.name, effort, text, instructions=instructions, response_format=fmt)
    task.expect.update(schema=kind.schema(), value=values)
    fields = [f for f, _ in kind.fields]
    assigned = ", ".join(f"{f} is {compact_json(values[f]).strip(chr(34))}" for f in fields)

    def build(b: _Builder) -> None:
        b.think(_by_effort(effort, f"Extract {_join(fields)}.",
                           f"The text describes {kind.about}. Copy {_join(fields)} into JSON.",
                           _steps("read the text.", f"{assigned}.", f"match the {kind.name} schema.",
                                  "write the JSON.")))
        b.answer(compact_json(values))

    return task, build


# chat ------------------------------------------------------------------------------------------------------------

_GREETINGS = ("Hi!", "Hello!", "Hey there.", "Good morning!", "Good evening!", "Hi, how are you?")
_NAMED_GREETINGS = ("Hi, I am {first}.", "Hello, my name is {first}.", "Hey, {first} here.")
_IDENTITY_QUESTIONS = ("Who are you?", "What is your name?", "What should I call you?", "What's your name?",
                       "Who am I talking to?", "Tell me who you are.", "Introduce yourself.", "Do you have a name?")
_IMPOSSIBLE = (  # (request template, what it needs)
    ("Book a flight to {city} for tomorrow.", "book flights"),
    ("Order a pizza for {first}.", "order food"),
    ("Call {first} {last} for me.", "make phone calls"),
    ("Send {n} dollars to {first}.", "send money"),
    ("Turn off the lights in the kitchen.", "control devices"),
    ("Buy two tickets for the game in {city}.", "buy tickets"),
)


def _chat_task(rng: random.Random, effort: str) -> tuple[Task, Callable[[_Builder], None]]:
    kind = rng.choice(("greet", "identity", "refuse"))
    python = rng.random() < 0.2
    instructions, functions = None, ()
    if kind == "greet":
        if rng.random() < 0.5:
            first = rng.choice(FIRST_NAMES)
            user = rng.choice(_NAMED_GREETINGS).format(first=first)
            reply = f"Hello {first}! How can I help you today?"
        else:
            user, reply = rng.choice(_GREETINGS), "Hello! How can I help you today?"
        plan = _by_effort(effort, "Greet back.", "The user says hello. Reply politely.",
                          _steps("the user says hello.", "no tool is needed.", "greet back and offer help."))
        expect = {"contains": "Hello"}
    elif kind == "identity":
        user = rng.choice(_IDENTITY_QUESTIONS)
        if rng.random() < 0.7:
            name = rng.choice(ASSISTANT_NAMES)
            instructions = f"You are {name}, a helpful assistant."
            reply, source = f"I am {name}, a helpful assistant. How can I help?", f"the developer named me {name}."
        else:
            name = TINY_NAME
            reply, source = f"I am {name}, a small open model. How can I help?", f"I am {name}."
        plan = _by_effort(effort, "State my name.", f"The user asks who I am. My name is {name}.",
                          _steps("the user asks who I am.", source, "answer briefly."))
        expect = {"contains": name}
    else:
        template, need = rng.choice(_IMPOSSIBLE)
        user = template.format(city=rng.choice(CITIES), first=rng.choice(FIRST_NAMES), last=rng.choice(LAST_NAMES),
                               n=rng.randint(5, 900))
        if rng.random() < 0.4:  # unrelated functions declared: still nothing to call
            functions = tuple(declare(k, rng) for k in rng.sample(["weather", "timer", "stock", "clock", "todo"], 2))
        reply = f"Sorry, I can't {need} because I have no tool for that here. I can help you plan it instead."
        plan = _by_effort(effort, f"No tool to {need}.", f"The user wants me to {need}. I have no tool for that.",
                          _steps(f"the user wants me to {need}.", "I have no tool for that.",
                                 "say so politely and offer help."))
        expect = {"contains": "can't", "no_calls": True}
    task = _new_task(rng, "chat", kind, effort, user, instructions=instructions, functions=functions, python=python)
    task.expect.update(expect)

    def build(b: _Builder) -> None:
        b.think(plan)
        b.answer(reply)

    return task, build


# echo (training aid) ---------------------------------------------------------------------------------------------

_ECHO_REQUESTS = ("Repeat exactly: {text}", "Say this back to me: {text}", "Copy this: {text}",
                  "Please repeat {text}", "Echo: {text}", "Write down: {text}")


def _echo_value(rng: random.Random) -> str:
    """One value of the kinds the other families copy: numbers of any length, prices, dates, clock times, names,
    cities, tickers, e-mail addresses, items, products and labels (names, cities and lowercase words most: they
    are the hardest to copy)."""
    makers: tuple[Callable[[], str], ...] = (
        lambda: str(_number(rng, 1, 9)), lambda: str(_number(rng, 1, 9)), lambda: str(_price(rng)),
        lambda: _date(rng), lambda: _clock(rng), lambda: rng.choice(TICKERS), *[lambda: email_address(rng)] * 2,
        lambda: rng.choice(ITEMS), lambda: rng.choice(PRODUCTS), lambda: rng.choice(TIMER_LABELS),
        *[lambda: _person(rng)] * 3, *[lambda: rng.choice(CITIES)] * 3)
    return rng.choice(makers)()


def _echo_task(rng: random.Random, effort: str) -> tuple[Task, Callable[[_Builder], None]]:
    """The user gives 2-10 random values; the answer repeats them exactly. Nothing in the answer can be guessed,
    so the whole loss is on copying from context: the skill every other family needs for its values and the one
    a small model is slowest to pick up from them alone (README, gpt-oss-tiny)."""
    text = rng.choice((" ", ", ", "; ")).join(_echo_value(rng) for _ in range(rng.randint(2, 10)))
    user = rng.choice(_ECHO_REQUESTS).format(text=text)
    plan = _by_effort(effort, "Repeat it.", "The user wants the text repeated. Copy it exactly.",
                      _steps("the user wants the text repeated.", "no tool is needed.", "copy it exactly."))
    task = _new_task(rng, "echo", "echo", effort, user, python=rng.random() < 0.3, browser=rng.random() < 0.2)
    task.expect.update({"contains": text})

    def build(b: _Builder) -> None:
        b.think(plan)
        b.answer(text)

    return task, build


_FAMILY_BUILDERS: dict[str, Callable[[random.Random, str], tuple[Task, Callable[[_Builder], None]]]] = {
    "python": _python_task, "functions": _functions_task, "browser": _browser_task, "json": _json_task,
    "chat": _chat_task, "echo": _echo_task,
}


def _instructions_text(task: Task) -> str:
    dev = task.messages[1] if task.prompt_len == 3 else None
    if dev is None:
        return ""
    instructions = getattr(dev.content[0], "instructions", None)
    return instructions or ""


def _user_text(task: Task) -> str:
    return task.messages[task.prompt_len - 1].content[0].text


def body_tokens(messages: Sequence[Message]) -> int:
    """Tokens after the system message, each message rendered on its own."""
    enc = harmony_encoding()
    return sum(len(enc.render(m)) for m in messages[1:])


def make_task(rng: random.Random, family: str, split: str = "train") -> Task:
    """One conversation of ``family`` whose prompt belongs to ``split`` (rejection sampling)."""
    if family not in _FAMILY_BUILDERS:
        raise ValueError(f"unknown task family {family!r}; choose from {', '.join(FAMILIES + AUX_FAMILIES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'heldout'")
    for _ in range(MAX_TRIES):
        effort = rng.choice(EFFORTS)
        task, build = _FAMILY_BUILDERS[family](rng, effort)
        if split_of(family, _instructions_text(task), _user_text(task)) != split:
            continue
        build(_Builder(task))
        if body_tokens(task.messages) <= (MAX_BROWSER_BODY_TOKENS if family == "browser" else MAX_BODY_TOKENS):
            return task
    raise RuntimeError(f"could not draw a {family!r} conversation for split {split!r}")  # pragma: no cover


def parse_weights(text: str | None) -> dict[str, float]:
    """``"python=2,browser=1"`` -> weights (families not named keep their default weight)."""
    weights = dict(DEFAULT_WEIGHTS)
    if not text:
        return weights
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in weights:
            raise ValueError(f"bad weight {part!r}: expected FAMILY=NUMBER with FAMILY in "
                             f"{', '.join(FAMILIES + AUX_FAMILIES)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"bad weight {part!r}: {value!r} is not a number") from None
        if weights[name] < 0:
            raise ValueError(f"bad weight {part!r}: must be >= 0")
    if not any(weights.values()):
        raise ValueError("at least one family needs a positive weight")
    return weights


def generate_tasks(n: int, seed: int, split: str = "train", weights: dict[str, float] | None = None,
                   families: Sequence[str] | None = None) -> list[Task]:
    """``n`` tasks; the family of each is drawn by ``weights`` (or cycled through ``families`` when given)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"gptoss-tiny-corpus:{seed}:{split}")
    if families is not None:
        return [make_task(rng, families[i % len(families)], split) for i in range(n)]
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    names = [f for f in FAMILIES + AUX_FAMILIES if w.get(f, 0) > 0]
    picks = rng.choices(names, weights=[w[f] for f in names], k=n)
    return [make_task(rng, fam, split) for fam in picks]


def generate(n: int, seed: int, split: str = "train", weights: dict[str, float] | None = None
             ) -> list[list[Message]]:
    """``n`` conversations (harmony messages) of ``split``, deterministic under ``seed``."""
    return [t.messages for t in generate_tasks(n, seed, split, weights)]
