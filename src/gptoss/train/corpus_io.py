"""The synthetic corpus on disk and in numbers: JSONL output (what ``gptoss.train.data.load_jsonl`` reads) and the
per-family token statistics that ``gptoss corpus`` prints."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openai_harmony import Message, Role

from gptoss.harmony.render import EFFORTS
from gptoss.tokenizer import get_tokenizer
from gptoss.train.corpus import Task, body_tokens


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
