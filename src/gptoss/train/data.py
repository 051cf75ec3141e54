"""Harmony conversations -> token ids and loss masks.

A training example looks exactly like inference: the context is rendered as the engine would
render it (earlier turns' analysis dropped), and only the tokens the model itself would sample
in the last turn are learned -- assistant headers after ``<|start|>assistant``, contents and
terminators, the final answer ending in ``<|return|>``. Tool results, user and system text are
context only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from openai_harmony import Conversation, Message, RenderConversationConfig, Role

from gptoss.harmony.render import filter_history, harmony_encoding, system_message
from gptoss.tokenizer import SPECIAL_TOKENS, get_tokenizer

RETURN, END = SPECIAL_TOKENS["<|return|>"], SPECIAL_TOKENS["<|end|>"]


@dataclass
class Example:
    tokens: list[int]
    mask: list[bool]  # mask[i]: token i is a learned target (predicted from tokens[:i])

    def __post_init__(self) -> None:
        assert len(self.tokens) == len(self.mask), f"{len(self.tokens)=} {len(self.mask)=}"


def message_from_dict(d: dict) -> Message:
    d = dict(d)
    if isinstance(d.get("content"), str):
        d["content"] = [{"type": "text", "text": d["content"]}]
    return Message.from_dict(d)


def encode_conversation(messages: Sequence[Message], system: bool = True) -> Example:
    """Tokens and targets for the last turn of ``messages`` (its assistant messages).

    ``system=False`` drops the system message instead of supplying a default one: a short-context form for a
    training curriculum (a long fixed prefix slows learning to copy, ``scripts/probe_copy.py --prefix``)."""
    enc = harmony_encoding()
    messages = list(messages)
    if not system:
        messages = [m for m in messages if m.author.role != Role.SYSTEM]
    elif not messages or messages[0].author.role != Role.SYSTEM:
        messages.insert(0, system_message())
    last_user = max((i for i, m in enumerate(messages) if m.author.role in (Role.USER, Role.DEVELOPER,
                                                                             Role.SYSTEM)), default=0)
    context = filter_history(messages[:last_user + 1])
    turn = messages[last_user + 1:]
    if not any(m.author.role == Role.ASSISTANT for m in turn):
        raise ValueError("the conversation has no assistant message after its last user message")
    prefix = [SPECIAL_TOKENS["<|start|>"], *get_tokenizer().encode("assistant")]
    tokens: list[int] = []
    mask: list[bool] = []
    # The context is rendered as one conversation, as at inference: openai-harmony then adds to the system
    # message what depends on later messages (the commentary-channel rule when the developer declares functions).
    tokens += enc.render_conversation(Conversation.from_messages(context),
                                      RenderConversationConfig(auto_drop_analysis=False))
    mask += [False] * len(tokens)
    last_assistant = max(i for i, m in enumerate(turn) if m.author.role == Role.ASSISTANT)
    for i, m in enumerate(turn):
        t = list(enc.render(m))
        if m.author.role != Role.ASSISTANT:
            tokens += t
            mask += [False] * len(t)
            continue
        if i == last_assistant and m.channel == "final" and t[-1] == END:
            t[-1] = RETURN  # the answer that ends a turn is sampled with <|return|>
        assert t[:len(prefix)] == prefix, f"{t[:4]=}"
        tokens += t
        # The prompt supplies <|start|>assistant only where a round begins (after user/tool messages); after the
        # model's own <|end|> it samples the next header itself, so there the header is learned too.
        given = len(prefix) if i == 0 or turn[i - 1].author.role != Role.ASSISTANT else 0
        mask += [False] * given + [True] * (len(t) - given)
    return Example(tokens, mask)


def load_jsonl(path: str | Path) -> list[Example]:
    """One conversation per line: ``{"messages": [...]}`` in openai-harmony's message JSON
    (``gptoss chat``'s /save format; ``content`` may be a plain string)."""
    path = Path(path)
    examples = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ValueError(f"{path}: cannot read training data ({e.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            examples.append(encode_conversation([message_from_dict(m) for m in data["messages"]]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: not a harmony conversation ({type(e).__name__}: {e})") from None
    if not examples:
        raise ValueError(f"{path}: no conversations")
    return examples


def batches(examples: Sequence[Example], batch_size: int, max_len: int, seed: int,
            epochs: int | None = None, bucket: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, right-padded ``(tokens, mask)`` batches, ``(B, T)`` each; endless by default.

    ``bucket`` > 1: each window of ``bucket`` batches is sorted by length before it is cut into batches (and
    the batches then shuffled), so little compute goes to padding; the order stays a function of ``seed``."""
    rng = random.Random(seed)
    order = list(range(len(examples)))
    epoch = 0
    while epochs is None or epoch < epochs:
        rng.shuffle(order)
        if bucket > 1:
            window = bucket * batch_size
            grouped: list[list[int]] = []
            for w in range(0, len(order), window):
                part = sorted(order[w:w + window], key=lambda j: len(examples[j].tokens))
                cut = [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
                rng.shuffle(cut)
                grouped += cut
            order = [j for b in grouped for j in b]
        for i in range(0, len(order), batch_size):
            chunk = [examples[j] for j in order[i:i + batch_size]]
            t = min(max(len(e.tokens) for e in chunk), max_len)
            tokens = torch.zeros(len(chunk), t, dtype=torch.long)
            mask = torch.zeros(len(chunk), t, dtype=torch.bool)
            for r, e in enumerate(chunk):
                n = min(len(e.tokens), t)
                tokens[r, :n] = torch.tensor(e.tokens[:n])
                mask[r, :n] = torch.tensor(e.mask[:n])
            yield tokens, mask
        epoch += 1
