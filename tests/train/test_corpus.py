"""The synthetic gpt-oss-tiny corpus: determinism, splits, rendering round trips, lengths, effort, the CLI."""

from __future__ import annotations

import argparse
import json
import statistics

import pytest

from gptoss.cli import corpus as corpus_cli
from gptoss.harmony.parser import parse_completion
from gptoss.harmony.render import EFFORTS
from gptoss.tokenizer import SPECIAL_TOKENS
from gptoss.tools.base import ToolCall
from gptoss.train.corpus import (
    FAMILIES,
    MAX_BODY_TOKENS,
    MAX_BROWSER_BODY_TOKENS,
    body_tokens,
    generate,
    generate_tasks,
    parse_weights,
)
from gptoss.train.corpus_io import analysis_length, write_jsonl
from gptoss.train.data import encode_conversation, load_jsonl
from gptoss.train.world import ArithmeticPython, run_arithmetic, split_of


@pytest.fixture(scope="module")
def tasks():
    return generate_tasks(12 * len(FAMILIES), seed=3, families=FAMILIES)


def _key(task):
    dev = task.messages[1] if task.prompt_len == 3 else None
    instructions = (getattr(dev.content[0], "instructions", None) or "") if dev is not None else ""
    return task.family, instructions, task.messages[task.prompt_len - 1].content[0].text


def test_same_seed_same_bytes(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_jsonl(generate_tasks(40, seed=7), a)
    write_jsonl(generate_tasks(40, seed=7), b)
    write_jsonl(generate_tasks(40, seed=8), c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert len(generate(5, seed=7)) == 5


def test_splits_never_share_a_prompt():
    train = generate_tasks(300, seed=0, split="train")
    held = generate_tasks(100, seed=0, split="heldout")
    assert {t.family for t in held} == set(FAMILIES)
    assert all(split_of(*_key(t)) == "train" for t in train)
    assert all(split_of(*_key(t)) == "heldout" for t in held)
    assert not {_key(t) for t in train} & {_key(t) for t in held}


def test_jsonl_round_trip_and_clean_parse(tasks, tmp_path):
    from gptoss.evals.tiny import replay_rounds

    path = tmp_path / "c.jsonl"
    write_jsonl(tasks, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["meta"]["family"] for r in rows] == [t.family for t in tasks]
    loaded = load_jsonl(path)
    for task, ex in zip(tasks, loaded, strict=True):
        want = encode_conversation(task.messages)
        assert ex.tokens == want.tokens and ex.mask == want.mask
        assert ex.tokens[-1] == SPECIAL_TOKENS["<|return|>"] and ex.mask[-1]
        # The assistant part parses back, round by round, into the corpus messages with no recovery.
        corpus_assistant = [m for m in task.messages[task.prompt_len:] if m.author.role.value == "assistant"]
        parsed = []
        for r in replay_rounds(task):
            messages, recoveries = parse_completion(r)
            assert recoveries == [], (task.family, recoveries)
            parsed += messages
        assert [(m.channel, m.recipient, m.content) for m in parsed] == \
            [(m.channel, m.recipient, m.content[0].text) for m in corpus_assistant]
        assert [p.to_harmony() for p in parsed] == corpus_assistant


def test_families_look_as_specified(tasks):
    for t in tasks:
        system = t.messages[0].content[0]
        assert t.effort in EFFORTS and system.reasoning_effort.value.lower() == t.effort
        after = t.messages[t.prompt_len:]
        calls = [m for m in after if m.recipient and m.author.role.value == "assistant"]
        assert after[-1].channel == "final" and after[0].channel == "analysis"
        if t.family == "python":
            assert [(m.recipient, m.channel, m.content_type) for m in calls] == [("python", "analysis", "code")]
            assert t.expect["output"] in after[-1].content[0].text
        elif t.family == "functions":
            assert len(calls) == 1 and calls[0].channel == "commentary"
            assert calls[0].content_type == "<|constrain|>json"
            assert calls[0].recipient == f"functions.{t.expect['name']}"
            assert json.loads(calls[0].content[0].text) == t.expect["arguments"]
            assert 2 <= len(t.functions) <= 4
        elif t.family == "browser":
            assert [m.recipient for m in calls] == ["browser.search", "browser.open"]
            page = after[after.index(calls[1]) + 1].content[0].text
            line = page.split(f"\nL{t.expect['line']}: ", 1)[1].split("\n", 1)[0]
            assert t.expect["value"] in line
            assert f"【1†L{t.expect['line']}】" in after[-1].content[0].text
        elif t.family == "json":
            assert not calls and json.loads(after[-1].content[0].text) == t.expect["value"]
        else:
            assert not calls


def test_token_bounds():
    tasks = generate_tasks(250, seed=11)
    bodies = [body_tokens(t.messages) for t in tasks]
    assert max(b for b, t in zip(bodies, tasks, strict=True) if t.family != "browser") <= MAX_BODY_TOKENS
    assert max(bodies) <= MAX_BROWSER_BODY_TOKENS
    assert max(len(encode_conversation(t.messages).tokens) for t in tasks) <= 1024  # train-tiny's max_seq_len
    assert sum(b <= 200 for b in bodies) / len(bodies) > 0.55  # browser and many function tasks run longer


def test_reasoning_grows_with_effort():
    tasks = generate_tasks(360, seed=5)
    for family in FAMILIES:
        mean = {e: statistics.fmean(analysis_length(t.messages[t.prompt_len:]) for t in tasks
                                    if t.family == family and t.effort == e) for e in EFFORTS}
        assert mean["low"] < mean["medium"] < mean["high"], (family, mean)


@pytest.mark.parametrize(("code", "out"), [
    ("print(347 * 29)", "10063\n"),
    ("print(round(12 * 0.621371, 2))", "7.46\n"),
    ("print(round((100 - 32) * 5 / 9, 1))", "37.8\n"),
    ("2 ** 10", "1024\n"),
    ("print(1)\nprint(2, 3)", "1\n2 3\n"),
    ("x = 3", "ValueError: only expressions and print() are supported\n"),
    ("print(1 / 0)", "ZeroDivisionError: division by zero\n"),
])
def test_arithmetic_python(code, out):
    assert run_arithmetic(code) == out


@pytest.mark.parametrize("code", ["import os", "__import__('os').system('true')", "open('/etc/passwd')",
                                  "print(().__class__)", "9 ** 9 ** 9", "print(len)"])
def test_arithmetic_python_refuses_everything_else(code):
    out = ArithmeticPython().process(ToolCall("python", code, "analysis"))
    assert out.startswith(("ValueError", "SyntaxError", "OverflowError")), out


def test_weights():
    assert parse_weights("python=2,chat=0")["python"] == 2.0
    for bad in ("pyton=1", "python", "python=x", "python=-1", ",".join(f"{f}=0" for f in FAMILIES)):
        with pytest.raises(ValueError):
            parse_weights(bad)
    only = generate_tasks(20, seed=1, weights={f: (1 if f == "json" else 0) for f in FAMILIES})
    assert {t.family for t in only} == {"json"}


def test_corpus_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    corpus_cli.add_arguments(parser)
    out = tmp_path / "c.jsonl"
    args = parser.parse_args(["--n", "25", "--seed", "2", "--split", "heldout", "--out", str(out)])
    assert corpus_cli.run(args) == 0
    assert len(load_jsonl(out)) == 25
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps the title at 80 columns (long tmp paths)
    assert "distinct token ids" in printed and "python" in printed and "25 heldout conversations" in printed
    with pytest.raises(ValueError, match="bad weight"):
        corpus_cli.run(parser.parse_args(["--n", "1", "--weights", "nope=1", "--out", str(out)]))


def test_echo_is_a_training_aid_off_by_default():
    """The echo family (repeat the user's values exactly) is drawn only when weighted; its answer is a copy."""
    assert "echo" not in FAMILIES and parse_weights(None)["echo"] == 0
    assert all(t.family != "echo" for t in generate_tasks(200, seed=4))
    echo = generate_tasks(30, seed=4, weights={**{f: 0 for f in FAMILIES}, "echo": 1})
    assert {t.family for t in echo} == {"echo"}
    for t in echo:
        answer = t.messages[-1]
        assert answer.channel == "final"
        text = answer.content[0].text
        assert t.messages[t.prompt_len - 1].content[0].text.endswith(text) and text == t.expect["contains"]
        ex = encode_conversation(t.messages)
        assert sum(ex.mask) > len(text.split())  # the copy is learned, token by token
    mixed = generate_tasks(100, seed=4, weights={"echo": 0.5})
    assert 20 < sum(t.family == "echo" for t in mixed) < 60


def test_search_snippets_and_notes_look_like_the_real_backends():
    """FakeSearch results carry the start of the text when asked (32 words, as the local index's FTS5 snippet);
    ``file:`` documents are Markdown notes with a heading first, as ``gptoss index add`` serves them."""
    import random

    from gptoss.tools.browser.tool import BrowserTool
    from gptoss.train.world import _PLACES, FakeSearch, _place_doc

    rng = random.Random(0)
    doc, facts = _place_doc(rng, "Okafor", _PLACES[0], notes="/home/ada/notes")
    web, _ = _place_doc(rng, "Okafor", _PLACES[1])
    assert doc.url == "file:///home/ada/notes/okafor-bridge.md" and doc.lines[:2] == ("# Okafor Bridge", "")
    long = doc.__class__("https://x.org/a", "Okafor Long", tuple(f"word{i}" for i in range(40)))
    results = FakeSearch([doc, web, long], snippets=True).search("Okafor", 5)
    assert results[0].snippet.startswith("Okafor Bridge Okafor Bridge is a bridge in")
    assert str(facts["year"]) in results[0].snippet and results[2].snippet.endswith("word31…")
    assert all(not r.snippet for r in FakeSearch([doc, web]).search("Okafor", 5))
    tool = BrowserTool(FakeSearch([doc]))
    tool.search("Okafor Bridge")
    page = tool.open(id=0)
    assert "\nL0: # Okafor Bridge\n" in page and f"\nL{facts['line']['city']}: Okafor Bridge is a bridge" in page


def test_browser_tasks_mix_web_pages_notes_and_snippets(tasks):
    browser = [t for t in generate_tasks(60, seed=5, weights={**{f: 0 for f in FAMILIES}, "browser": 1})]
    notes = [t for t in browser if t.expect["url"].startswith("file://")]
    assert 5 < len(notes) < 40 and all(t.snippets for t in notes)
    assert 0 < sum(t.snippets for t in browser if t not in notes) < len(browser) - len(notes)


def test_echo_copies_emails_tickers_and_lowercase_words():
    from gptoss.train.world import PRODUCTS, TICKERS

    echo = generate_tasks(60, seed=6, weights={**{f: 0 for f in FAMILIES}, "echo": 1})
    text = " ".join(t.expect["contains"] for t in echo)
    assert "@" in text and any(s in text for s in TICKERS) and any(p in text for p in PRODUCTS)


def test_heldout_function_prompts_are_varied_and_their_values_seen_in_training():
    """Held-out function prompts must test copying, not recall: they are mostly distinct (with 35 tickers and
    two timer wordings, "What is the stock price of JPM?" was 4 of 200), and each ticker and timer label they
    ask for also occurs in training prompts, in another wording (6,000 function conversations: train-tiny's corpus
    has about 7,000)."""
    from gptoss.train.world import TICKERS, TIMER_LABELS

    held = generate_tasks(200, seed=0, split="heldout", families=["functions"])
    prompts = [_key(t)[2] for t in held]
    assert len(set(prompts)) >= 0.85 * len(prompts)
    train = " ".join(_key(t)[2] for t in generate_tasks(6000, seed=0, families=["functions"]))
    asked = {v for t in held if t.kind in ("stock", "timer") for v in t.expect["arguments"].values()
             if isinstance(v, str)}
    assert asked and asked <= set(TICKERS) | set(TIMER_LABELS)
    assert all(f" {v}" in train for v in asked)
