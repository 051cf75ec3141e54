"""The world the gpt-oss-tiny corpus draws from: inventories of names and values, and the tool backends.

Everything a conversation is made of except the conversation itself: the name/city/number inventories and the
helpers that draw from them, the ``python`` tool's ``ast`` arithmetic (:class:`ArithmeticPython`), the pool of
developer-function kinds with their aliased spellings and fake implementations (:func:`declare`), and the
synthetic documents behind :class:`FakeSearch` for the browser. :mod:`gptoss.train.corpus` builds the
conversations from these; the evaluation runs the same backends, so corpus and eval agree on every tool output.
"""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gptoss.harmony.render import (
    FunctionTool,
)
from gptoss.tools.base import Tool, ToolCall
from gptoss.tools.browser.page import Page, Result

HELDOUT_BUCKETS = 10  # one bucket in ten is held out

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
TICKERS = (  # many, so that the held-out prompts ask for tickers seen in other wordings, never memorised whole
    "AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "NFLX", "INTC", "AMD", "IBM", "ORCL", "SAP", "SONY",
    "NKE", "KO", "PEP", "DIS", "JPM", "BAC", "WMT", "COST", "SHOP", "UBER", "ABNB", "SPOT", "ADBE", "CRM", "QCOM",
    "BA", "GE", "GM", "XOM", "CVX", "PFE", "CSCO", "AVGO", "TXN", "MU", "ASML", "TSM", "BABA", "PYPL", "SQ", "SNAP",
    "PINS", "LYFT", "ZM", "ROKU", "ETSY", "EBAY", "BKNG", "MAR", "HLT", "SBUX", "MCD", "YUM", "CMG", "TGT", "HD",
    "KR", "TM", "HMC", "RACE", "DE", "CAT", "MMM", "HON", "LMT", "RTX", "NOC", "UPS", "FDX", "DAL", "UAL", "AAL",
    "LUV", "AXP", "GS", "WFC", "BLK", "SCHW", "MO", "PM", "BUD", "DEO", "UL", "PG", "CL", "KMB", "JNJ", "MRK",
    "ABBV", "LLY", "BMY", "AMGN", "GILD", "MRNA", "BNTX", "CVS", "UNH", "CI", "HUM", "VZ", "TMUS", "CMCSA", "CHTR",
    "NEE", "DUK", "AMT", "PLD", "SPG", "VTI", "SPY", "QQQ",
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
TIMER_LABELS = ("pasta", "tea", "laundry", "workout", "nap", "pizza", "eggs", "bread", "rice", "soup", "cookies",
                "oven", "coffee", "study", "break", "meeting", "yoga", "homework", "bath", "parking", "pie", "cake",
                "roast", "beans", "reading", "piano", "dough", "muffins", "stretching", "potatoes")
EVENT_TITLES = ("Team lunch", "Dentist", "Yoga class", "Project review", "Call with {first}", "Dinner with {first}",
                "Book club", "Piano lesson", "Budget meeting", "Doctor visit")
SUBJECTS = ("Lunch on Friday", "Project update", "Meeting notes", "Invoice {n}", "Trip to {city}", "Weekly report",
            "Birthday party")
TODOS = ("buy milk", "call {first}", "pay rent", "water the plants", "fix the bike", "clean the kitchen",
         "email {first}", "book a dentist visit", "text {first}", "visit {first} in {city}", "book a hotel in {city}",
         "renew the passport", "order {n} envelopes", "send {first} the report", "buy a gift for {first}",
         "plan the trip to {city}", "return the library books", "pay invoice {n}", "wash the car", "meet {first}")
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
           {"": ("Set a timer for {minutes} minutes.", "Start a {minutes} minute timer.",
                 "Count down {minutes} minutes for me.", "Timer for {minutes} minutes, please."),
            "label": ("Set a {label} timer for {minutes} minutes.", "Start a timer called {label} for {minutes} "
                      "minutes.", "Set a timer for {minutes} minutes labeled {label}.",
                      "Timer for {minutes} minutes named {label}, please.")},
           "a timer for {minutes} minutes", lambda v, h: {"status": "running", "minutes": v["minutes"]},
           "Your timer for {minutes} minutes is running."),
    FnKind("stock", ("get_stock_price", "stock_quote"), "Get the latest price of a stock.",
           (Param("symbol", ("symbol", "ticker"), {"type": "string"}),),
           lambda r: {"symbol": r.choice(TICKERS)},
           {"": ("What is the stock price of {symbol}?", "How much is {symbol} trading at?", "Quote {symbol} for me.",
                 "Get me the latest price of {symbol}.", "What is {symbol} at right now?",
                 "Show the share price of {symbol}.")},
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
           lambda r: {"to": email_address(r), "subject": _fill(r.choice(SUBJECTS), r)},
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
           {"": ("Add {item} to my to-do list.", "Remind me to {item}. Put it on my list.",
                 "Put {item} on my to-do list.", "I need to {item}. Add it to my tasks.")},
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


SNIPPET_WORDS = 32  # as the local index's FTS5 snippet() window


class FakeSearch:
    """A :class:`~gptoss.tools.browser.tool.SearchBackend` over a few documents: a document matches when a query
    word is a word of its title; matches come back in the order the documents were given. ``snippets``: each
    result carries the start of its text, as the local index and most web backends give (the model must still
    open the page to cite a line); ``file:`` documents are Markdown notes, as ``gptoss index add`` serves them."""

    def __init__(self, docs: Sequence[Doc], snippets: bool = False) -> None:
        self.docs = list(docs)
        self.snippets = snippets

    def search(self, query: str, topn: int) -> list[Result]:
        words = set(re.findall(r"\w+", query.lower()))
        hits = [d for d in self.docs if words & set(re.findall(r"\w+", d.title.lower()))]
        return [Result(d.url, d.title, self._snippet(d) if self.snippets else "") for d in hits[:topn]]

    @staticmethod
    def _snippet(doc: Doc) -> str:
        text = " ".join(line.removeprefix("# ") for line in doc.lines if line).split()
        return " ".join(text[:SNIPPET_WORDS]) + ("…" if len(text) > SNIPPET_WORDS else "")

    def fetch(self, url: str) -> Page:
        for d in self.docs:
            if d.url == url:
                return Page(url=d.url, title=d.title, text="\n".join(d.lines), markdown=url.startswith("file:"))
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


def _place_doc(rng: random.Random, name: str, kind: PlaceKind, notes: str | None = None) -> tuple[Doc, dict]:
    """A page about ``name``'s ``kind`` and its facts (with the line each is on). ``notes``: a Markdown file in
    that folder (``file:`` URL, a heading first), as a user's indexed notes are."""
    entity = f"{name} {kind.word}"
    facts = {"year": rng.randint(1700, 2020), "size": rng.randint(3, 1500), "count": _number(rng, 3, 7),
             "city": rng.choice(CITIES)}
    order = ["year", "size", "count"]
    rng.shuffle(order)
    sentence = {"year": kind.year, "size": kind.size, "count": kind.count}
    lines = [f"{entity} is a {kind.word.lower()} in {facts['city']}."]
    lines += [sentence[f].format(**facts) for f in order]
    slug = entity.lower().replace(" ", "-")
    top = 0
    if notes is None:
        doc = Doc(f"https://{rng.choice(WEB_DOMAINS)}/{slug}", entity, tuple(lines))
    else:
        doc, top = Doc(f"file://{notes}/{slug}.md", entity, (f"# {entity}", "", *lines)), 2
    return doc, {"entity": entity, **facts, "line": {"city": top, **{f: top + i + 1 for i, f in enumerate(order)}}}


def notes_folder(rng: random.Random) -> str:
    """An absolute folder of Markdown notes, as a user indexes one."""
    user = rng.choice(FIRST_NAMES).lower()
    return rng.choice((f"/home/{user}/notes", f"/home/{user}/Documents/wiki", f"/Users/{user}/notes"))


def email_address(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES).lower()}.{rng.choice(LAST_NAMES).lower()}@{rng.choice(MAIL_DOMAINS)}"


