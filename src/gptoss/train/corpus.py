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

import ast
import hashlib
import json
import math
import operator
import random
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai_harmony import Message, Role

from gptoss.harmony.render import (
    EFFORTS,
    FunctionTool,
    ResponseFormat,
    assistant_message,
    developer_message,
    harmony_encoding,
    system_message,
    tool_call_message,
    tool_result_message,
    user_message,
)
from gptoss.tokenizer import get_tokenizer
from gptoss.tools.base import Tool, ToolCall, ToolRegistry
from gptoss.tools.browser.page import Page, Result
from gptoss.tools.browser.tool import BrowserTool

FAMILIES = ("python", "functions", "browser", "json", "chat")
DEFAULT_WEIGHTS = {"python": 0.22, "functions": 0.25, "browser": 0.18, "json": 0.17, "chat": 0.18}
SPLITS = ("train", "heldout")
HELDOUT_BUCKETS = 10  # one bucket in ten is held out
MAX_BODY_TOKENS = 350  # tokens after the system message (whose tool descriptions are fixed boilerplate)
MAX_TRIES = 2000
TINY_NAME = "gpt-oss-tiny"

# --- inventories --------------------------------------------------------------------------------------------------

CITIES = (
    "Oslo", "Lyon", "Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw", "Dublin", "Athens",
    "Cairo", "Nairobi", "Lagos", "Accra", "Dakar", "Tunis", "Casablanca", "Johannesburg", "Cape Town", "Mumbai",
    "Delhi", "Chennai", "Kolkata", "Dhaka", "Karachi", "Lahore", "Tehran", "Dubai", "Doha", "Riyadh", "Istanbul",
    "Ankara", "Moscow", "Kyiv", "Riga", "Tallinn", "Vilnius", "Helsinki", "Stockholm", "Copenhagen", "Bergen",
    "Reykjavik", "Edinburgh", "Glasgow", "Manchester", "Leeds", "Bristol", "London", "Cardiff", "Belfast",
    "Amsterdam", "Rotterdam", "Brussels", "Antwerp", "Zurich", "Geneva", "Basel", "Munich", "Hamburg", "Cologne",
    "Frankfurt", "Leipzig", "Dresden", "Milan", "Naples", "Turin", "Venice", "Florence", "Seville", "Valencia",
    "Bilbao", "Porto", "Marseille", "Nice", "Toulouse", "Bordeaux", "Nantes", "Tokyo", "Osaka", "Kyoto", "Seoul",
    "Busan", "Beijing", "Shanghai", "Shenzhen", "Taipei", "Hanoi", "Bangkok", "Manila", "Jakarta", "Singapore",
    "Sydney", "Melbourne", "Perth", "Auckland", "Toronto", "Montreal", "Vancouver", "Calgary", "Chicago", "Boston",
    "Denver", "Seattle", "Austin", "Dallas", "Houston", "Phoenix", "Miami", "Atlanta", "Detroit", "Portland",
    "Lima", "Quito", "Bogota", "Santiago", "Havana", "Mexico City", "Buenos Aires", "Montevideo", "Sao Paulo",
)
FIRST_NAMES = (
    "Maria", "Ahmed", "Lena", "Kofi", "Yuki", "Ravi", "Sofia", "Omar", "Elena", "Jonas", "Priya", "Diego", "Amara",
    "Chen", "Fatima", "Lucas", "Ingrid", "Tariq", "Mei", "Pablo", "Zara", "Nikolai", "Aisha", "Hugo", "Leila",
    "Mateo", "Freya", "Kwame", "Anya", "Emil", "Nadia", "Rahul", "Clara", "Idris", "Hana", "Felix", "Noor", "Arjun",
    "Greta", "Sami", "Lucia", "Oskar", "Imani", "Kenji", "Rosa", "Tomas", "Ayla", "Bruno", "Esme", "Malik", "Vera",
    "Ilya", "Nia", "Marco", "Selin", "Jamal", "Elif", "Theo", "Dalia", "Raj",
)
LAST_NAMES = (
    "Lopez", "Okafor", "Berg", "Tanaka", "Sharma", "Haddad", "Novak", "Rossi", "Silva", "Kim", "Nguyen", "Schmidt",
    "Dubois", "Moreau", "Kowalski", "Petrov", "Jensen", "Larsen", "Costa", "Mendes", "Ali", "Khan", "Mensah",
    "Sato", "Park", "Wang", "Garcia", "Fischer", "Weber", "Horvat", "Bianchi", "Russo", "Murphy", "Walsh", "Fraser",
    "Hughes", "Evans", "Patel", "Reddy", "Das", "Ortiz", "Reyes", "Castro", "Vega", "Lindqvist", "Nilsson", "Dahl",
    "Aziz", "Farouk", "Osei", "Diallo", "Toure", "Mwangi", "Adeyemi", "Eze", "Yilmaz", "Demir", "Harlow", "Denby",
)
ASSISTANT_NAMES = (
    "Nova", "Pip", "Ada", "Juniper", "Orbit", "Echo", "Sage", "Milo", "Luna", "Atlas", "Iris", "Pixel", "Remy",
    "Tala", "Quill", "Bea", "Kit", "Zephyr", "Olive", "Marlo", "Rune", "Cleo", "Dot", "Finch", "Wren",
)
TICKERS = (
    "AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "NFLX", "INTC", "AMD", "IBM", "ORCL", "SAP", "SONY",
    "NKE", "KO", "PEP", "DIS", "JPM", "BAC", "WMT", "COST", "SHOP", "UBER", "ABNB", "SPOT", "ADBE", "CRM", "QCOM",
    "BA", "GE", "GM", "XOM", "CVX", "PFE",
)
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "SEK", "NOK", "DKK", "INR", "BRL", "CAD", "AUD", "MXN", "ZAR",
              "KRW", "CNY", "PLN", "NZD", "SGD")
AIRLINES = ("BA", "AF", "LH", "KL", "IB", "AZ", "SK", "AY", "TK", "EK", "QR", "DL", "UA", "AA", "AC", "QF", "NH",
            "JL", "SQ", "LX")
ITEMS = ("apples", "notebooks", "pencils", "chairs", "lamps", "mugs", "batteries", "candles", "plates", "towels",
         "cables", "bottles", "boxes", "pens", "shirts", "socks", "cups", "bananas", "eggs", "books")
PRODUCTS = ("desk lamp", "coffee maker", "backpack", "phone case", "water bottle", "keyboard", "headphones",
            "rain jacket", "yoga mat", "toaster", "umbrella", "blender")
SPECIES = ("cat", "dog", "bird", "rabbit", "horse", "fish")
CONDITIONS = ("sunny", "cloudy", "rainy", "windy", "snowy", "foggy")
FLIGHT_STATES = ("on time", "delayed", "boarding", "landed")
COLORS = ("Red", "Blue", "Green", "Golden", "Silver", "Black")
ANIMALS = ("Lion", "Fox", "Owl", "Bear", "Swan", "Horse")
TIMER_LABELS = ("pasta", "tea", "laundry", "workout", "nap", "pizza", "eggs", "bread")
EVENT_TITLES = ("Team lunch", "Dentist", "Yoga class", "Project review", "Call with {first}", "Dinner with {first}",
                "Book club", "Piano lesson", "Budget meeting", "Doctor visit")
SUBJECTS = ("Lunch on Friday", "Project update", "Meeting notes", "Invoice {n}", "Trip to {city}", "Weekly report",
            "Birthday party")
TODOS = ("buy milk", "call {first}", "pay rent", "water the plants", "fix the bike", "clean the kitchen",
         "email {first}", "book a dentist visit")
MAIL_DOMAINS = ("mail.com", "example.org", "post.net", "inbox.io")
WEB_DOMAINS = ("cityguide.org", "travelwiki.net", "localhistory.com", "urbanfacts.io", "visitnotes.org")
LANGUAGES = ("Spanish", "French", "German", "Italian")
PHRASES = {  # phrase -> translations in LANGUAGES order
    "hello": ("hola", "bonjour", "hallo", "ciao"),
    "thank you": ("gracias", "merci", "danke", "grazie"),
    "good morning": ("buenos dias", "bonjour", "guten Morgen", "buongiorno"),
    "good night": ("buenas noches", "bonne nuit", "gute Nacht", "buona notte"),
    "see you soon": ("hasta pronto", "a bientot", "bis bald", "a presto"),
    "how are you": ("como estas", "comment ca va", "wie geht es dir", "come stai"),
}


# --- small helpers ------------------------------------------------------------------------------------------------

def stable_int(*parts: Any) -> int:
    """A process-independent hash (never Python's salted ``hash``)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def split_of(family: str, instructions: str, user_text: str) -> str:
    return "heldout" if stable_int("split", family, instructions, user_text) % HELDOUT_BUCKETS == 0 else "train"


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _number(rng: random.Random, lo_digits: int = 1, hi_digits: int = 4) -> int:
    """A positive integer of ``lo_digits``..``hi_digits`` digits. The tokenizer cuts digits into groups of three
    from the left; a group after the first starts with 0 about a third of the time (uniform digits: a tenth), so
    that tokens such as ``041`` are common enough to be learned and kept in a trimmed vocabulary."""
    digits = rng.randint(lo_digits, hi_digits)
    text = str(rng.randint(10 ** (digits - 1) if digits > 1 else 1, 10 ** digits - 1))
    groups = [text[i:i + 3] for i in range(0, len(text), 3)]
    groups[1:] = ["0" + g[1:] if rng.random() < 0.25 else g for g in groups[1:]]
    return int("".join(groups))


def _price(rng: random.Random) -> float | int:
    """Dollars with cents that print as typed (12.35, never 12.50), or a whole number."""
    if rng.random() < 0.3:
        return rng.randint(1, 900)
    cents = rng.choice([c for c in range(1, 100) if c % 10])
    return float(f"{rng.randint(0, 499)}.{cents:02d}")


def _date(rng: random.Random) -> str:
    return f"{rng.randint(2024, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _clock(rng: random.Random) -> str:
    return f"{rng.randint(6, 22):02d}:{rng.choice((0, 15, 30, 45)):02d}"


def _fill(template: str, rng: random.Random) -> str:
    return template.format(first=rng.choice(FIRST_NAMES), city=rng.choice(CITIES), n=rng.randint(100, 999))


def _steps(*sentences: str) -> str:
    return " ".join(f"Step {i}: {s}" for i, s in enumerate(sentences, 1))


def _by_effort(effort: str, low: str, medium: str, high: str) -> str:
    return {"low": low, "medium": medium, "high": high}[effort]


# --- the python tool (arithmetic only, evaluated with ast) --------------------------------------------------------

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCS: dict[str, Callable[..., Any]] = {"round": round, "abs": abs, "int": int, "float": float, "min": min,
                                         "max": max}
NO_OUTPUT = "[WARN] No output available. Use print() to output anything to stdout to receive the output"


def _eval_node(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 10 ** 6):
            raise ValueError("exponent too large for this sandbox")
        value = _BINOPS[type(node.op)](left, right)
        if abs(value) > 10 ** 30:
            raise OverflowError("result too large for this sandbox")
        return value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
            and not node.keywords):
        return _FUNCS[node.func.id](*(_eval_node(a) for a in node.args))
    raise ValueError(f"unsupported syntax: {ast.dump(node)[:60]}")


def run_arithmetic(code: str) -> str:
    """Notebook-like output of arithmetic code: ``print(...)`` lines and a final bare expression; anything else
    (names, imports, attributes) is an error message. Nothing is executed."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        return f"SyntaxError: {e.msg} (line {e.lineno})"
    out: list[str] = []
    try:
        for i, stmt in enumerate(tree.body):
            if not isinstance(stmt, ast.Expr):
                raise ValueError("only expressions and print() are supported")
            call = stmt.value
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "print":
                if call.keywords:
                    raise ValueError("print() keywords are not supported")
                out.append(" ".join(str(_eval_node(a)) for a in call.args) + "\n")
            elif i == len(tree.body) - 1:
                out.append(repr(_eval_node(call)) + "\n")
            else:
                _eval_node(call)
    except (ValueError, TypeError, ArithmeticError) as e:
        out.append(f"{type(e).__name__}: {e}\n")
    return "".join(out) or NO_OUTPUT


class ArithmeticPython(Tool):
    """The ``python`` tool of the tiny corpus: safe arithmetic (see :func:`run_arithmetic`)."""

    namespace = "python"

    def _process(self, call: ToolCall) -> str:
        return run_arithmetic(call.arguments)


# --- developer functions: a pool of kinds with aliased names ------------------------------------------------------

@dataclass(frozen=True)
class Param:
    key: str  # canonical name
    aliases: tuple[str, ...]
    schema: dict
    required: bool = True


@dataclass(frozen=True)
class FnKind:
    """One kind of function with several spellings (names, parameter names) and a fake implementation."""

    key: str
    names: tuple[str, ...]
    description: str
    params: tuple[Param, ...]
    sample: Callable[[random.Random], dict]  # canonical argument values (optional ones may be absent)
    requests: dict[str, tuple[str, ...]]  # "+"-joined optional keys present -> user templates
    need: str  # "the weather in {city}"
    result: Callable[[dict, int], dict]  # (values, stable hash) -> JSON result
    answer: str  # final answer template over values + result


def _weather_result(v: dict, h: int) -> dict:
    unit = v.get("unit", "celsius")
    t = h % 35 - 5 if unit == "celsius" else h % 60 + 25
    return {"city": v["city"], "temperature": t, "unit": unit, "condition": CONDITIONS[h // 7 % len(CONDITIONS)]}


def _currency_result(v: dict, h: int) -> dict:
    rate = (h % 5000 + 10) / 1000
    return {"amount": v["amount"], "from": v["from_currency"], "to": v["to_currency"],
            "converted": round(v["amount"] * rate, 2)}


FN_KINDS: dict[str, FnKind] = {k.key: k for k in (
    FnKind("weather", ("get_weather", "current_weather", "weather_now"), "Get the current weather in a city.",
           (Param("city", ("city", "location"), {"type": "string"}),
            Param("unit", ("unit",), {"type": "string", "enum": ["celsius", "fahrenheit"]}, required=False)),
           lambda r: {"city": r.choice(CITIES), **({"unit": r.choice(("celsius", "fahrenheit"))}
                                                   if r.random() < 0.4 else {})},
           {"": ("What is the weather in {city}?", "How is the weather in {city} today?",
                 "Weather in {city}, please."),
            "unit": ("What is the weather in {city} in {unit}?", "Weather in {city} in {unit}, please.")},
           "the weather in {city}", _weather_result,
           "It is {temperature} degrees {unit} and {condition} in {city}."),
    FnKind("currency", ("convert_currency", "currency_convert", "exchange_money"),
           "Convert an amount of money between currencies.",
           (Param("amount", ("amount", "value"), {"type": "number"}),
            Param("from_currency", ("from_currency", "source"), {"type": "string"}),
            Param("to_currency", ("to_currency", "target"), {"type": "string"})),
           lambda r: dict(zip(("from_currency", "to_currency"), r.sample(CURRENCIES, 2), strict=True),
                          amount=_price(r) if r.random() < 0.3 else _number(r, 1, 4)),
           {"": ("Convert {amount} {from_currency} to {to_currency}.",
                 "How much is {amount} {from_currency} in {to_currency}?")},
           "{amount} {from_currency} in {to_currency}", _currency_result,
           "{amount} {from_currency} is {converted} {to_currency}."),
    FnKind("event", ("create_event", "add_calendar_event", "schedule_event"), "Add an event to the calendar.",
           (Param("title", ("title", "name"), {"type": "string"}),
            Param("date", ("date",), {"type": "string", "description": "YYYY-MM-DD"}),
            Param("time", ("time",), {"type": "string", "description": "HH:MM"}, required=False)),
           lambda r: {"title": _fill(r.choice(EVENT_TITLES), r), "date": _date(r),
                      **({"time": _clock(r)} if r.random() < 0.5 else {})},
           {"": ("Add {title} to my calendar on {date}.", "Put {title} on {date} in my calendar."),
            "time": ("Add {title} to my calendar on {date} at {time}.", "Schedule {title} on {date} at {time}.")},
           "to add {title} on {date}", lambda v, h: {"status": "created", "event_id": h % 9000 + 1000},
           "Done. {title} is on your calendar for {date}."),
    FnKind("timer", ("set_timer", "start_timer"), "Start a countdown timer.",
           (Param("minutes", ("minutes", "duration_minutes"), {"type": "integer"}),
            Param("label", ("label",), {"type": "string"}, required=False)),
           lambda r: {"minutes": r.randint(1, 180), **({"label": r.choice(TIMER_LABELS)} if r.random() < 0.5
                                                       else {})},
           {"": ("Set a timer for {minutes} minutes.", "Start a {minutes} minute timer."),
            "label": ("Set a {label} timer for {minutes} minutes.", "Start a timer called {label} for {minutes} "
                      "minutes.")},
           "a timer for {minutes} minutes", lambda v, h: {"status": "running", "minutes": v["minutes"]},
           "Your timer for {minutes} minutes is running."),
    FnKind("stock", ("get_stock_price", "stock_quote"), "Get the latest price of a stock.",
           (Param("symbol", ("symbol", "ticker"), {"type": "string"}),),
           lambda r: {"symbol": r.choice(TICKERS)},
           {"": ("What is the stock price of {symbol}?", "How much is {symbol} trading at?", "Quote {symbol} for me.")},
           "the price of {symbol}", lambda v, h: {"symbol": v["symbol"], "price": round(h % 90000 / 100 + 5, 2),
                                                  "currency": "USD"},
           "{symbol} is trading at {price} USD."),
    FnKind("translate", ("translate_text", "translate"), "Translate a short text.",
           (Param("text", ("text",), {"type": "string"}),
            Param("target_language", ("target_language", "language"), {"type": "string"})),
           lambda r: {"text": r.choice(list(PHRASES)), "target_language": r.choice(LANGUAGES)},
           {"": ("Translate {text} to {target_language}.", "How do you say {text} in {target_language}?")},
           "{text} in {target_language}",
           lambda v, h: {"translation": PHRASES.get(v["text"], ("?",) * 4)[LANGUAGES.index(v["target_language"])]
                         if v["target_language"] in LANGUAGES else "?"},
           "In {target_language}, {text} is {translation}."),
    FnKind("email", ("send_email", "email_send"), "Send a short email.",
           (Param("to", ("to", "recipient"), {"type": "string"}),
            Param("subject", ("subject",), {"type": "string"})),
           lambda r: {"to": f"{r.choice(FIRST_NAMES).lower()}.{r.choice(LAST_NAMES).lower()}@"
                            f"{r.choice(MAIL_DOMAINS)}", "subject": _fill(r.choice(SUBJECTS), r)},
           {"": ("Email {to} with the subject {subject}.", "Send an email to {to} about {subject}.")},
           "an email to {to}", lambda v, h: {"status": "sent", "message_id": h % 90000 + 10000},
           "I sent the email about {subject} to {to}."),
    FnKind("table", ("book_table", "reserve_table"), "Book a restaurant table.",
           (Param("restaurant", ("restaurant",), {"type": "string"}),
            Param("people", ("people", "party_size"), {"type": "integer"}),
            Param("time", ("time",), {"type": "string", "description": "HH:MM"})),
           lambda r: {"restaurant": r.choice((f"{r.choice(LAST_NAMES)} Kitchen", f"Cafe {r.choice(CITIES)}",
                                              f"The {r.choice(COLORS)} {r.choice(ANIMALS)}")),
                      "people": r.randint(1, 12), "time": _clock(r)},
           {"": ("Book a table for {people} at {restaurant} at {time}.",
                 "Reserve {restaurant} for {people} people at {time}.")},
           "a table for {people} at {restaurant}", lambda v, h: {"status": "booked", "confirmation": h % 9000 + 1000},
           "Booked {restaurant} for {people} at {time}. Confirmation {confirmation}."),
    FnKind("flight", ("get_flight_status", "flight_status"), "Get the status of a flight.",
           (Param("flight_number", ("flight_number", "flight"), {"type": "string"}),),
           lambda r: {"flight_number": f"{r.choice(AIRLINES)}{r.randint(10, 9999)}"},
           {"": ("Is flight {flight_number} on time?", "What is the status of flight {flight_number}?")},
           "the status of flight {flight_number}",
           lambda v, h: {"flight": v["flight_number"], "status": FLIGHT_STATES[h % len(FLIGHT_STATES)],
                         "gate": f"{'ABCDE'[h // 5 % 5]}{h // 25 % 40 + 1}"},
           "Flight {flight_number} is {status} at gate {gate}."),
    FnKind("clock", ("get_local_time", "time_in_city"), "Get the local time in a city.",
           (Param("city", ("city", "place"), {"type": "string"}),),
           lambda r: {"city": r.choice(CITIES)},
           {"": ("What time is it in {city}?", "Tell me the local time in {city}.")},
           "the time in {city}", lambda v, h: {"city": v["city"], "time": f"{h % 24:02d}:{h // 24 % 60:02d}"},
           "It is {time} in {city}."),
    FnKind("distance", ("get_distance", "distance_between"), "Get the distance between two cities.",
           (Param("origin", ("origin", "start"), {"type": "string"}),
            Param("destination", ("destination", "end"), {"type": "string"})),
           lambda r: dict(zip(("origin", "destination"), r.sample(CITIES, 2), strict=True)),
           {"": ("How far is {origin} from {destination}?", "What is the distance from {origin} to {destination}?")},
           "the distance from {origin} to {destination}", lambda v, h: {"km": h % 15000 + 20},
           "{origin} is {km} km from {destination}."),
    FnKind("todo", ("add_todo", "add_task"), "Add an item to the to-do list.",
           (Param("item", ("item", "task"), {"type": "string"}),),
           lambda r: {"item": _fill(r.choice(TODOS), r)},
           {"": ("Add {item} to my to-do list.", "Remind me to {item}. Put it on my list.")},
           "to add {item} to the list", lambda v, h: {"status": "added", "open_items": h % 20 + 1},
           "Added {item}. You have {open_items} open items."),
)}


@dataclass(frozen=True)
class DeclaredFunction:
    """One function as declared in a developer message: its kind, its name and its parameter spellings."""

    kind: str
    name: str
    aliases: tuple[tuple[str, str], ...]  # (canonical, declared) in declaration order

    @property
    def spec(self) -> FnKind:
        return FN_KINDS[self.kind]

    def tool(self) -> FunctionTool:
        props, required = {}, []
        for p in self.spec.params:
            alias = dict(self.aliases)[p.key]
            props[alias] = dict(p.schema)
            if p.required:
                required.append(alias)
        return FunctionTool(self.name, self.spec.description,
                            {"type": "object", "properties": props, "required": required})

    def arguments(self, values: dict) -> dict:
        """Canonical values -> the JSON arguments under the declared names, in declaration order."""
        return {alias: values[key] for key, alias in self.aliases if key in values}

    def implementation(self) -> Callable[..., dict]:
        declared = {alias: key for key, alias in self.aliases}
        spec = self.spec

        def impl(**kwargs: Any) -> dict:
            unknown = sorted(set(kwargs) - set(declared))
            if unknown:
                raise TypeError(f"unexpected argument(s) {', '.join(unknown)}")
            values = {declared[k]: v for k, v in kwargs.items()}
            missing = [dict(self.aliases)[p.key] for p in spec.params if p.required and p.key not in values]
            if missing:
                raise TypeError(f"missing required argument(s) {', '.join(missing)}")
            return spec.result(values, stable_int(spec.key, values))

        return impl


def declare(kind: str, rng: random.Random) -> DeclaredFunction:
    spec = FN_KINDS[kind]
    return DeclaredFunction(kind, rng.choice(spec.names), tuple((p.key, rng.choice(p.aliases)) for p in spec.params))


# --- browser: synthetic documents and a fake search backend -------------------------------------------------------

@dataclass(frozen=True)
class Doc:
    url: str
    title: str
    lines: tuple[str, ...]


class FakeSearch:
    """A :class:`~gptoss.tools.browser.tool.SearchBackend` over a few documents: a document matches when a query
    word is a word of its title; matches come back in the order the documents were given."""

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.docs = list(docs)

    def search(self, query: str, topn: int) -> list[Result]:
        words = set(re.findall(r"\w+", query.lower()))
        hits = [d for d in self.docs if words & set(re.findall(r"\w+", d.title.lower()))]
        return [Result(d.url, d.title) for d in hits[:topn]]  # no snippets: titles suffice, tokens are dear

    def fetch(self, url: str) -> Page:
        for d in self.docs:
            if d.url == url:
                return Page(url=d.url, title=d.title, text="\n".join(d.lines))
        raise LookupError("404 Not Found")


@dataclass(frozen=True)
class PlaceKind:
    word: str
    year: str  # fact sentences, e.g. "It opened in {year}."
    size: str
    count: str
    questions: dict[str, tuple[str, str, str]]  # fact -> (question, need, answer)


_PLACES = (
    PlaceKind("Bridge", "It opened in {year}.", "It is {size} meters long.", "About {count} people cross it each day.",
              {"year": ("When did {e} open?", "when {e} opened", "{e} opened in {year}"),
               "size": ("How long is {e}?", "how long {e} is", "{e} is {size} meters long"),
               "count": ("How many people cross {e} each day?", "how many people cross {e}",
                         "About {count} people cross {e} each day")}),
    PlaceKind("Tower", "It was built in {year}.", "It is {size} meters tall.",
              "About {count} people visit it each year.",
              {"year": ("When was {e} built?", "when {e} was built", "{e} was built in {year}"),
               "size": ("How tall is {e}?", "how tall {e} is", "{e} is {size} meters tall"),
               "count": ("How many people visit {e} each year?", "how many people visit {e}",
                         "About {count} people visit {e} each year")}),
    PlaceKind("Museum", "It was founded in {year}.", "It has {size} rooms.", "About {count} people visit it each year.",
              {"year": ("When was {e} founded?", "when {e} was founded", "{e} was founded in {year}"),
               "size": ("How many rooms does {e} have?", "how many rooms {e} has", "{e} has {size} rooms"),
               "count": ("How many people visit {e} each year?", "how many people visit {e}",
                         "About {count} people visit {e} each year")}),
    PlaceKind("Library", "It was founded in {year}.", "It has {size} reading rooms.", "It holds {count} books.",
              {"year": ("When was {e} founded?", "when {e} was founded", "{e} was founded in {year}"),
               "size": ("How many reading rooms does {e} have?", "how many reading rooms {e} has",
                        "{e} has {size} reading rooms"),
               "count": ("How many books does {e} hold?", "how many books {e} holds", "{e} holds {count} books")}),
    PlaceKind("Park", "It opened in {year}.", "It covers {size} hectares.", "About {count} people visit it each year.",
              {"year": ("When did {e} open?", "when {e} opened", "{e} opened in {year}"),
               "size": ("How big is {e}?", "how big {e} is", "{e} covers {size} hectares"),
               "count": ("How many people visit {e} each year?", "how many people visit {e}",
                         "About {count} people visit {e} each year")}),
)
_PLACE_BY_WORD = {k.word: k for k in _PLACES}


def _place_doc(rng: random.Random, name: str, kind: PlaceKind) -> tuple[Doc, dict]:
    entity = f"{name} {kind.word}"
    facts = {"year": rng.randint(1700, 2020), "size": rng.randint(3, 1500), "count": _number(rng, 3, 7),
             "city": rng.choice(CITIES)}
    order = ["year", "size", "count"]
    rng.shuffle(order)
    sentence = {"year": kind.year, "size": kind.size, "count": kind.count}
    lines = [f"{entity} is a {kind.word.lower()} in {facts['city']}."]
    lines += [sentence[f].format(**facts) for f in order]
    slug = entity.lower().replace(" ", "-")
    doc = Doc(f"https://{rng.choice(WEB_DOMAINS)}/{slug}", entity, tuple(lines))
    return doc, {"entity": entity, **facts, "line": {"city": 0, **{f: i + 1 for i, f in enumerate(order)}}}


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
            registry.add(BrowserTool(FakeSearch(self.docs)))
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
    doc, facts = _place_doc(rng, name, kind)
    docs = [doc, _place_doc(rng, name, other_kind)[0], _place_doc(rng, other_name, kind)[0]]
    docs = docs[:rng.choice((2, 3))]  # one or two distractors sharing a word with the query
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
_IDENTITY_QUESTIONS = ("Who are you?", "What is your name?", "What should I call you?")
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


_FAMILY_BUILDERS: dict[str, Callable[[random.Random, str], tuple[Task, Callable[[_Builder], None]]]] = {
    "python": _python_task, "functions": _functions_task, "browser": _browser_task, "json": _json_task,
    "chat": _chat_task,
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
        raise ValueError(f"unknown task family {family!r}; choose from {', '.join(FAMILIES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'heldout'")
    for _ in range(MAX_TRIES):
        effort = rng.choice(EFFORTS)
        task, build = _FAMILY_BUILDERS[family](rng, effort)
        if split_of(family, _instructions_text(task), _user_text(task)) != split:
            continue
        build(_Builder(task))
        if body_tokens(task.messages) <= MAX_BODY_TOKENS:
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
            raise ValueError(f"bad weight {part!r}: expected FAMILY=NUMBER with FAMILY in {', '.join(FAMILIES)}")
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
    names = [f for f in FAMILIES if w.get(f, 0) > 0]
    picks = rng.choices(names, weights=[w[f] for f in names], k=n)
    return [make_task(rng, fam, split) for fam in picks]


def generate(n: int, seed: int, split: str = "train", weights: dict[str, float] | None = None
             ) -> list[list[Message]]:
    """``n`` conversations (harmony messages) of ``split``, deterministic under ``seed``."""
    return [t.messages for t in generate_tasks(n, seed, split, weights)]


# --- output -------------------------------------------------------------------------------------------------------

def message_to_dict(message: Message) -> dict:
    """openai-harmony's ``to_dict`` with plain-string text content and no null name (what ``load_jsonl`` reads)."""
    d = message.to_dict()
    if d.get("name") is None:
        d.pop("name", None)
    content = d.get("content")
    if isinstance(content, list) and len(content) == 1 and content[0].get("type") == "text":
        d["content"] = content[0]["text"]
    return d


def to_jsonl_line(item: Task | Sequence[Message]) -> str:
    if isinstance(item, Task):
        row = {"messages": [message_to_dict(m) for m in item.messages], "meta": item.meta()}
    else:
        row = {"messages": [message_to_dict(m) for m in item]}
    return json.dumps(row, ensure_ascii=False)


def write_jsonl(items: Iterable[Task | Sequence[Message]], path: str | Path) -> int:
    """One conversation per line, readable by :func:`gptoss.train.data.load_jsonl`; returns the line count."""
    path = Path(path)
    lines = [to_jsonl_line(item) for item in items]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


@dataclass
class FamilyStats:
    n: int = 0
    total: list[int] = field(default_factory=list)  # whole training example (system message included)
    body: list[int] = field(default_factory=list)  # after the system message
    learned: list[int] = field(default_factory=list)  # loss-masked target tokens
    analysis: dict[str, list[int]] = field(default_factory=lambda: {e: [] for e in EFFORTS})


def corpus_stats(tasks: Sequence[Task]) -> tuple[dict[str, FamilyStats], set[int]]:
    """Token statistics per family (as ``encode_conversation`` renders them) and the set of token ids used."""
    from gptoss.train.data import encode_conversation

    stats: dict[str, FamilyStats] = {}
    ids: set[int] = set()
    for t in tasks:
        ex = encode_conversation(t.messages)
        s = stats.setdefault(t.family, FamilyStats())
        s.n += 1
        s.total.append(len(ex.tokens))
        s.body.append(body_tokens(t.messages))
        s.learned.append(sum(ex.mask))
        s.analysis[t.effort].append(analysis_length(t.messages[t.prompt_len:]))
        ids.update(ex.tokens)
    return stats, ids


def analysis_length(messages: Sequence[Message]) -> int:
    """Tokens of assistant reasoning (analysis messages without a recipient) in ``messages``."""
    tok = get_tokenizer()
    return sum(len(tok.encode(m.content[0].text)) for m in messages
               if m.author.role == Role.ASSISTANT and m.channel == "analysis" and not m.recipient)


def summarize(values: Sequence[int]) -> tuple[float, int]:
    return (statistics.fmean(values) if values else math.nan), (max(values) if values else 0)
