"""The tolerant streaming harmony parser (SPEC §4.2, §4.5, §4.8) on real token sequences."""

from __future__ import annotations

import random

import pytest

from gptoss.harmony.parser import (
    CommentaryDelta,
    Event,
    FinalDelta,
    MessageDone,
    MessageStarted,
    ParsedMessage,
    ReasoningDelta,
    StreamParser,
    ToolCallArgsDelta,
    ToolCallStarted,
    _LiteralFilter,
    parse_completion,
    sanitize_text,
)
from gptoss.tokenizer import CONTROL_TOKENS, SPECIAL_TOKENS, configure_offline_env, get_tokenizer

configure_offline_env()
from openai_harmony import (  # noqa: E402 - needs the offline env first
    HarmonyEncodingName,
    Message,
    Role,
    load_harmony_encoding,
)

TOK = get_tokenizer()
ENC = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
PROMPT_TAIL = [SPECIAL_TOKENS["<|start|>"], *TOK.encode("assistant")]
DELTAS = (ReasoningDelta, FinalDelta, CommentaryDelta, ToolCallArgsDelta)


def ids(*parts: str) -> list[int]:
    """Control-token names become their ids; anything else is ordinary BPE text."""
    out: list[int] = []
    for p in parts:
        out += [SPECIAL_TOKENS[p]] if p in SPECIAL_TOKENS else TOK.encode(p)
    return out


def byte_ids(text: str) -> list[int]:
    """One token per UTF-8 byte: multi-byte characters are split across tokens."""
    return [TOK.enc.encode_single_token(bytes([b])) for b in text.encode()]


def completion(*msgs: Message) -> list[int]:
    """Render messages with openai-harmony and drop the prompt's ``<|start|>assistant``."""
    toks = [t for m in msgs for t in ENC.render(m)]
    assert toks[:2] == PROMPT_TAIL
    return toks[2:]


def run(tokens: list[int]) -> tuple[StreamParser, list[Event]]:
    """Feed token by token, then check the invariants every stream must keep."""
    parser = StreamParser(TOK)
    events: list[Event] = []
    for t in tokens:
        events += parser.feed(t)
    events += parser.finish()
    check_invariants(parser, events)
    return parser, events


def check_invariants(parser: StreamParser, events: list[Event]) -> None:
    pending: list[str] = []
    done: list[ParsedMessage] = []
    open_msg: ParsedMessage | None = None
    for e in events:
        if isinstance(e, MessageStarted):
            assert open_msg is None, "a message started inside another"
            open_msg = e.message
        elif isinstance(e, DELTAS):
            assert open_msg is not None, "a delta outside a started message"
            assert e.text, "empty delta"
            assert not any(c in e.text for c in CONTROL_TOKENS), e
            pending.append(e.text)
        elif isinstance(e, MessageDone):
            m = e.message
            assert m is open_msg, "MessageDone without its MessageStarted"
            open_msg = None
            assert sanitize_text(m.content) == m.content
            if m.role == "assistant":
                assert "".join(pending) == m.content
            else:  # hallucinated turns of other roles are never streamed
                assert not pending
            pending = []
            done.append(m)
    assert not pending, "deltas after the last MessageDone"
    assert done == parser.messages


def texts(events: list[Event], kind: type) -> str:
    return "".join(e.text for e in events if isinstance(e, kind))


def msg(channel: str, text: str, recipient: str | None = None, content_type: str | None = None) -> Message:
    m = Message.from_role_and_content(Role.ASSISTANT, text).with_channel(channel)
    if recipient:
        m = m.with_recipient(recipient)
    if content_type:
        m = m.with_content_type(content_type)
    return m


# -- well-formed completions -----------------------------------------------------------------------

def test_analysis_then_final_matches_openai_harmony():
    tokens = completion(msg("analysis", "User asks 2+2. Easy: 4."), msg("final", "2 + 2 = **4**."))
    parser, events = run(tokens)
    assert parser.recoveries == []
    ref = ENC.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
    assert [(m.channel, m.recipient, m.content[0].text) for m in ref] == [
        (m.channel, m.recipient, m.content) for m in parser.messages]
    assert texts(events, ReasoningDelta) == "User asks 2+2. Easy: 4."
    assert texts(events, FinalDelta) == "2 + 2 = **4**."
    assert [m.terminator for m in parser.messages] == ["end", "end"]
    assert [t for m in parser.messages for t in m.tokens] == tokens  # every token accounted for
    # Re-rendering a parsed message reproduces the sampled bytes.
    assert PROMPT_TAIL + parser.messages[0].tokens == ENC.render(parser.messages[0].to_harmony())


def test_final_with_return_and_parse_completion():
    tokens = ids("<|channel|>", "final", "<|message|>", "Hello!", "<|return|>")
    messages, recoveries = parse_completion(tokens, TOK)
    assert recoveries == []
    assert [(m.channel, m.content, m.terminator) for m in messages] == [("final", "Hello!", "return")]
    # History stores <|return|> as <|end|> (SPEC §4.6): openai-harmony's renderer does that.
    assert TOK.decode(ENC.render(messages[0].to_harmony())).endswith("Hello!<|end|>")


def test_preamble_on_commentary():
    tokens = completion(msg("commentary", "Let me check the weather."))
    parser, events = run(tokens)
    assert texts(events, CommentaryDelta) == "Let me check the weather."
    assert not parser.messages[0].is_tool_call


# -- tool calls ---------------------------------------------------------------------------------

ARGS = '{"city":"Oslo","unit":"c"}'


def test_function_call_recipient_in_role_slot_round_trips():
    call = msg("commentary", ARGS, "functions.get_weather", "<|constrain|>json")
    tokens = completion(msg("analysis", "Need weather."), call)
    assert TOK.decode(tokens).endswith(
        '<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>'
        f'{ARGS}<|call|>')
    parser, events = run(tokens)
    assert parser.recoveries == []
    m = parser.messages[1]
    assert (m.role, m.channel, m.recipient, m.content_type, m.content, m.terminator) == (
        "assistant", "commentary", "functions.get_weather", "json", ARGS, "call")
    assert m.is_tool_call
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    assert started == [ToolCallStarted("functions.get_weather", "commentary", "json")]
    assert texts(events, ToolCallArgsDelta) == ARGS
    assert all(e.recipient == "functions.get_weather" for e in events if isinstance(e, ToolCallArgsDelta))
    # Byte-parity for history: the re-rendered call is exactly what was sampled.
    assert ENC.render(m.to_harmony()) == m.tokens
    ref = ENC.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
    assert (ref[1].recipient, ref[1].content[0].text) == (m.recipient, m.content)


@pytest.mark.parametrize("header", [
    ("<|channel|>", "commentary to=functions.get_weather ", "<|constrain|>", "json"),
    ("<|channel|>", "commentary to=functions.get_weather", "<|constrain|>", "json"),  # glued
    (" to=functions.get_weather", "<|channel|>", "commentary ", "<|constrain|>", "json"),
    ("<|channel|>", "commentary to=functions.get_weather json"),  # bare json
])
def test_function_call_header_variants(header):
    tokens = ids(*header, "<|message|>", ARGS, "<|call|>")
    parser, events = run(tokens)
    assert parser.recoveries == []
    [m] = parser.messages
    assert (m.channel, m.recipient, m.content_type, m.content) == (
        "commentary", "functions.get_weather", "json", ARGS)
    assert isinstance(events[0], MessageStarted) and events[0].message is m
    assert events[1] == ToolCallStarted("functions.get_weather", "commentary", "json")
    ref = ENC.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
    assert (ref[0].channel, ref[0].recipient, ref[0].content[0].text) == (m.channel, m.recipient, m.content)
    # History always gets the canonical "<|constrain|>json" form.
    assert TOK.decode(ENC.render(m.to_harmony())) == (
        f"<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{ARGS}"
        "<|call|>")


@pytest.mark.parametrize(("recipient", "content_type", "body"), [
    ("browser.search", None, '{"query":"gpt-oss release date"}'),
    ("python", "code", "import math\nprint(math.pi)"),
    ("functions.lookup", "json", '{"id": 7}'),  # a function call on analysis: still a tool call
])
def test_calls_on_analysis_are_routed_by_recipient(recipient, content_type, body):
    parts = ["<|channel|>", f"analysis to={recipient}"]
    if content_type:
        parts[-1] += f" {content_type}"
    tokens = ids("<|channel|>", "analysis", "<|message|>", "Look it up.", "<|end|>", "<|start|>", "assistant",
                 *parts, "<|message|>", body, "<|call|>")
    parser, events = run(tokens)
    assert parser.recoveries == []
    call = parser.messages[1]
    assert (call.channel, call.recipient, call.content_type, call.content) == ("analysis", recipient, content_type,
                                                                              body)
    assert texts(events, ReasoningDelta) == "Look it up."  # only the first message is reasoning
    assert texts(events, ToolCallArgsDelta) == body
    assert ToolCallStarted(recipient, "analysis", content_type) in events


@pytest.mark.parametrize("ending", [[], ["<|end|>"], ["<|return|>"], ["<|endoftext|>"]])
def test_missing_call_is_still_a_tool_call(ending):
    tokens = ids("<|channel|>", "commentary to=functions.get_weather ", "<|constrain|>", "json", "<|message|>",
                 ARGS, *ending)
    parser, events = run(tokens)
    [m] = parser.messages
    assert m.is_tool_call and m.content == ARGS
    assert m.terminator == {"<|end|>": "end", "<|return|>": "return"}.get(ending[0] if ending else "")
    assert len(parser.recoveries) == 1 and "not <|call|>" in parser.recoveries[0]
    assert isinstance(events[-1], MessageDone)


# -- recoveries (SPEC §4.8) -----------------------------------------------------------------------

def test_return_right_after_end_is_ignored():
    tokens = ids("<|channel|>", "final", "<|message|>", "Done.", "<|end|>", "<|return|>")
    parser, _ = run(tokens)
    assert [(m.content, m.terminator) for m in parser.messages] == [("Done.", "end")]
    assert len(parser.recoveries) == 1 and "<|return|>" in parser.recoveries[0]


def test_text_after_end_becomes_implicit_final_message():
    tokens = ids("<|channel|>", "analysis", "<|message|>", "think", "<|end|>", "\n\n", "The answer is 4.", "<|return|>")
    parser, events = run(tokens)
    _, f = parser.messages
    assert (f.role, f.channel, f.recipient, f.content, f.terminator) == (
        "assistant", "final", None, "The answer is 4.", "return")
    assert texts(events, FinalDelta) == "The answer is 4."
    assert any("implicit final" in r for r in parser.recoveries)


def test_bare_role_word_after_end_opens_a_header():
    tokens = ids("<|channel|>", "analysis", "<|message|>", "think", "<|end|>", "assistant", "<|channel|>",
                 "final", "<|message|>", "Hi", "<|return|>")
    parser, events = run(tokens)
    assert [(m.channel, m.content) for m in parser.messages] == [("analysis", "think"), ("final", "Hi")]
    assert texts(events, FinalDelta) == "Hi"
    assert len(parser.recoveries) == 1
    # ... but the same word followed by text is just text.
    parser, events = run(ids("<|channel|>", "final", "<|message|>", "x", "<|end|>", "assistant", " here"))
    assert parser.messages[1].content == "assistant here"


def test_channel_right_after_end_opens_new_header():
    tokens = ids("<|channel|>", "analysis", "<|message|>", "a", "<|end|>", "<|channel|>", "final", "<|message|>",
                 "b", "<|return|>")
    parser, _ = run(tokens)
    assert [(m.channel, m.content) for m in parser.messages] == [("analysis", "a"), ("final", "b")]
    assert len(parser.recoveries) == 1


def test_missing_channel_is_final():
    tokens = ids("<|message|>", "I can't help with that.", "<|end|>")
    parser, events = run(tokens)
    [m] = parser.messages
    assert (m.channel, m.recipient, m.content) == ("final", None, "I can't help with that.")
    assert texts(events, FinalDelta) == "I can't help with that."
    assert len(parser.recoveries) == 1 and "no valid channel" in parser.recoveries[0]
    ref = ENC.parse_messages_from_completion_tokens(tokens, Role.ASSISTANT)
    assert ref[0].channel is None and ref[0].content[0].text == m.content


@pytest.mark.parametrize(("header", "channel"), [
    (("<|channel|>", "final final"), "final"),
    (("<|channel|>", "analysis", "<|channel|>", "analysis"), "analysis"),
    (("<|channel|>", "finalfinal"), "final"),
    (("<|channel|>", "foo commentary final"), "commentary"),
    (("<|channel|>", "nonsense"), "final"),
])
def test_header_junk_keeps_first_valid_channel(header, channel):
    parser, _ = run(ids(*header, "<|message|>", "text", "<|end|>"))
    [m] = parser.messages
    assert (m.channel, m.recipient, m.content) == (channel, None, "text")
    assert parser.recoveries  # junk is always noted


def test_start_inside_content_ends_the_message():
    tokens = ids("<|channel|>", "analysis", "<|message|>", "thinking", "<|start|>", "assistant", "<|channel|>",
                 "final", "<|message|>", "Answer", "<|return|>")
    parser, events = run(tokens)
    a, f = parser.messages
    assert (a.channel, a.content, a.terminator) == ("analysis", "thinking", None)
    assert (f.channel, f.content, f.terminator) == ("final", "Answer", "return")
    assert texts(events, ReasoningDelta) == "thinking" and texts(events, FinalDelta) == "Answer"
    assert len(parser.recoveries) == 1


def test_channel_inside_content_ends_the_message():
    tokens = ids("<|channel|>", "analysis", "<|message|>", "thinking", "<|channel|>", "final", "<|message|>", "Ok")
    parser, _ = run(tokens)
    assert [(m.channel, m.content) for m in parser.messages] == [("analysis", "thinking"), ("final", "Ok")]


def test_stray_specials_inside_content_are_dropped():
    tokens = ids("<|channel|>", "final", "<|message|>", "a", "<|message|>", "b", "<|constrain|>", "c",
                 "<|reserved_200010|>", "d", "<|startoftext|>", "e", "f", "<|end|>")
    tokens[-2:-2] = [201088, -5]  # out of the vocabulary: dropped too
    parser, events = run(tokens)
    [m] = parser.messages
    assert m.content == "abcdef" and texts(events, FinalDelta) == "abcdef"
    assert m.tokens == tokens
    assert len(parser.recoveries) == 6


def test_unterminated_header_at_end_of_stream_is_dropped():
    parser, events = run(ids("<|channel|>", "commentary to=functions.get_weather"))
    assert parser.messages == [] and events == []
    assert len(parser.recoveries) == 1 and "header" in parser.recoveries[0]


def test_terminator_inside_header_drops_it():
    tokens = ids("<|channel|>", "analysis", "<|end|>", "<|start|>", "assistant", "<|channel|>", "final",
                 "<|message|>", "ok", "<|return|>")
    parser, _ = run(tokens)
    assert [(m.channel, m.content) for m in parser.messages] == [("final", "ok")]
    assert len(parser.recoveries) == 1


def test_endoftext_ends_the_stream():
    tokens = ids("<|channel|>", "final", "<|message|>", "bye", "<|endoftext|>", "more", "<|end|>")
    parser, _ = run(tokens)
    assert [(m.content, m.terminator) for m in parser.messages] == [("bye", None)]
    assert parser.recoveries == ["token 5: tokens after end of stream ignored"]
    assert parser.feed(SPECIAL_TOKENS["<|start|>"]) == [] and parser.finish() == []


def test_hallucinated_user_turn_is_not_streamed():
    tokens = ids("<|channel|>", "final", "<|message|>", "Hi", "<|end|>", "<|start|>", "user", "<|message|>",
                 "thanks", "<|end|>")
    parser, events = run(tokens)
    assert texts(events, FinalDelta) == "Hi"
    assert parser.messages[1].role == "user" and parser.messages[1].content == "thanks"


def test_hallucinated_tool_result_is_not_a_call():
    tokens = ids("<|channel|>", "commentary to=functions.f json", "<|message|>", "{}", "<|end|>", "<|start|>",
                 "functions.f to=assistant", "<|channel|>", "commentary", "<|message|>", "42", "<|end|>")
    parser, events = run(tokens)
    call, result = parser.messages
    assert call.is_tool_call and call.terminator == "end"
    assert (result.role, result.recipient, result.content) == ("functions.f", "assistant", "42")
    assert not result.is_tool_call
    assert texts(events, ToolCallArgsDelta) == "{}"  # the fake result is never streamed
    assert [e.recipient for e in events if isinstance(e, ToolCallStarted)] == ["functions.f"]
    assert TOK.decode(ENC.render(result.to_harmony())).startswith("<|start|>functions.f to=assistant<|channel|>")


# -- text safety ----------------------------------------------------------------------------------

def test_multibyte_utf8_split_across_tokens():
    text = "Weather: ☀️ 晴れ 😀 ok"
    tokens = ids("<|channel|>", "final", "<|message|>") + byte_ids(text) + ids("<|end|>")
    parser, events = run(tokens)
    deltas = [e.text for e in events if isinstance(e, FinalDelta)]
    assert "".join(deltas) == text == parser.messages[0].content
    assert all("\ufffd" not in d for d in deltas)
    assert "😀" in deltas  # the 4-byte character came out whole, in one delta


@pytest.mark.parametrize("spell", [TOK.encode, byte_ids])
def test_typed_control_literal_never_reaches_a_delta(spell):
    body = "Type <|end|> then <|start|>assistant<|channel|>final and <|en<|call|>d|> done <|"
    tokens = ids("<|channel|>", "final", "<|message|>") + spell(body) + ids("<|end|>")
    assert all(t < 199998 for t in spell(body))  # ordinary BPE, not control tokens
    parser, events = run(tokens)
    expected = "Type  then assistantfinal and  done <|"
    assert parser.messages[0].content == expected == texts(events, FinalDelta)
    # Same in tool arguments and reasoning.
    for header in (("<|channel|>", "commentary to=functions.f json"), ("<|channel|>", "analysis")):
        parser, events = run(ids(*header, "<|message|>") + spell(body) + ids("<|end|>"))
        assert parser.messages[0].content == expected


def test_sanitize_text():
    assert sanitize_text("a<|end|>b<|call|>c") == "abc"
    assert sanitize_text("<|en<|end|>d|>") == ""  # deleting one literal must not form another
    assert sanitize_text("<|reserved_200010|> <| |> <|end") == "<|reserved_200010|> <| |> <|end"


def test_literal_filter_matches_sanitize_on_random_chunks():
    rng = random.Random(1)
    alphabet = ["<", "|", ">", "e", "n", "d", "x", " ", "<|", "|>", "<|end|>", "<|call", "<|en", "d|>", "start"]
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        f, out, i = _LiteralFilter(), [], 0
        while i < len(text):
            n = rng.randint(1, 4)
            out.append(f.feed(text[i:i + n]))
            i += n
        out.append(f.flush())
        assert "".join(out) == sanitize_text(text), text
        assert all(c not in "".join(out) for c in CONTROL_TOKENS)


# -- robustness ------------------------------------------------------------------------------------

_WORDS = ["analysis", "final", "commentary", " to=functions.get_weather", " to=browser.search", " json", " code",
          "assistant", "user", " to=all", "Hello", " world", "\n", "<|", "end", "|>", "<|end|>", "{\"a\":1}", "😀",
          "晴", " ", "to="]
_TEXT_POOL = sorted({t for w in _WORDS for t in TOK.encode(w)} | set(byte_ids("😀晴")))
_SPECIAL_POOL = [*{SPECIAL_TOKENS[c] for c in CONTROL_TOKENS}, 200000, 200010, 200018, 201087, 201088, -1]


@pytest.mark.parametrize("seed", range(6))
def test_random_token_sequences_never_break_invariants(seed):
    rng = random.Random(seed)
    for _ in range(50):
        n = rng.randint(0, 40)
        tokens = [rng.choice(_SPECIAL_POOL) if rng.random() < 0.35 else rng.choice(_TEXT_POOL) for _ in range(n)]
        parser, _events = run(tokens)  # run() checks: no raise, no literal, deltas == content
        for m in parser.messages:
            assert m.channel in ("analysis", "commentary", "final")
            assert m.recipient != "all"
            m.to_harmony()  # always convertible
        messages, recoveries = parse_completion(tokens, TOK)
        assert messages == parser.messages and recoveries == parser.recoveries
        assert not any("internal error" in r for r in recoveries)
