"""Request bodies of the Responses and Chat Completions APIs (SPEC §6.2, §6.8), as pydantic models.

Unknown fields are accepted and ignored (``include``, ``truncation``, ``user``, ``service_tier``...), so
newer SDKs keep working. Items, messages and tools stay plain dicts: :mod:`harmony_bridge` checks them
and names the offending field (``input[2].call_id``) in its 400s.
"""

from __future__ import annotations

import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ReasoningParam(_Loose):
    effort: str | None = None
    summary: str | None = None


class TextParam(_Loose):
    format: dict[str, Any] | None = None


class ResponsesRequest(_Loose):
    model: str | None = None
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    reasoning: ReasoningParam | None = None
    reasoning_effort: str | None = None  # Chat spelling, honoured here too
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextParam | None = None
    stream: bool | None = False
    store: bool | None = True
    previous_response_id: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    metadata: dict[str, str] | None = None
    background: bool | None = None
    truncation: str | None = None
    user: str | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None


class ChatRequest(_Loose):
    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    reasoning: ReasoningParam | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None


def new_id(prefix: str) -> str:
    """``resp_…``, ``msg_…``, ``rs_…``, ``fc_…``, ``call_…``, ``chatcmpl-…``: unique, unguessable ids."""
    sep = "" if prefix.endswith(("-", "_")) else "_"
    return f"{prefix}{sep}{secrets.token_hex(16)}"
