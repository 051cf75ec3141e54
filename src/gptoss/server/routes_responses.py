"""``/v1/responses``: create (streaming or not), retrieve, delete, list input items (SPEC §6.2-6.5)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gptoss.engine.sampling import SamplingParams
from gptoss.harmony.render import render_for_completion
from gptoss.server import harmony_bridge as hb
from gptoss.server.app import ServerContext
from gptoss.server.errors import APIError, bad_request, check_model, not_found
from gptoss.server.protocol import ResponsesRequest, new_id
from gptoss.server.sessions import ToolSession
from gptoss.server.streaming import sse_event, stream_from_thread, wait_for_thread
from gptoss.server.turn import (
    ItemAdded,
    ItemAnnotation,
    ItemDelta,
    ItemDone,
    ItemEvent,
    ItemProgress,
    Turn,
    TurnRequest,
    TurnResult,
)

router = APIRouter()


@dataclass
class Plan:
    response: dict[str, Any]  # the response object, without output/usage yet
    turn: TurnRequest
    input_items: list[dict]
    context: list[dict]
    store: bool
    session: ToolSession


def plan_response(body: ResponsesRequest, ctx: ServerContext) -> Plan:
    if body.background:
        raise bad_request("background mode is not supported", param="background")
    effort = hb.resolve_effort(hb.effort_spellings(body.reasoning, body.reasoning_effort, body.chat_template_kwargs))
    functions = hb.parse_functions(body.tools, chat=False)
    choice = hb.parse_tool_choice(body.tool_choice, functions, chat=False)
    fmt, schema = hb.parse_format(body.text.format if body.text else None, "text.format", chat=False)
    rendered = [] if choice.mode == "none" else functions
    builtins = hb.parse_builtins(body.tools, ctx.sessions.available)
    context: list[dict] = []
    if body.previous_response_id:
        prev = ctx.store.get(body.previous_response_id)
        if prev is None:
            raise not_found(f"no stored response with id {body.previous_response_id!r}", param="previous_response_id")
        context = prev.context + [it for it in prev.response.get("output", []) if it.get("status") != "in_progress"]
    input_items = hb.normalize_input(body.input)
    if not input_items and not context:
        raise bad_request("input is required", param="input")
    context = context + input_items
    convo, extra = hb.items_to_messages(context)
    instructions = ([body.instructions] if body.instructions else []) + extra
    check_model(body.model, ctx)
    constraint = hb.constraint_spec(schema, rendered, choice, () if choice.mode == "none" else builtins)
    session = ctx.sessions.checkout(() if choice.mode == "none" else builtins, body.previous_response_id)
    try:
        messages = hb.header_messages(effort, instructions, rendered, fmt, session.system_options()) + convo
        prompt = render_for_completion(messages)
        prompt_len = len(prompt)
        params = SamplingParams(max_tokens=ctx.budget(prompt_len, body.max_output_tokens),
                                temperature=1.0 if body.temperature is None else body.temperature,
                                top_p=1.0 if body.top_p is None else body.top_p, seed=body.seed)
    except BaseException:
        ctx.sessions.checkin(session, None)
        raise
    rounds = ctx.max_tool_rounds if body.max_tool_calls is None else min(ctx.max_tool_rounds, body.max_tool_calls)
    turn = TurnRequest(messages, params, tuple(f.name for f in rendered), constraint, max_tool_rounds=rounds,
                       builtins=session.tools, container_id=session.container_id, prompt=prompt)
    tool_choice = body.tool_choice if body.tool_choice is not None else "auto"
    response = {
        "id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None, "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens, "max_tool_calls": body.max_tool_calls,
        "model": body.model or ctx.engine.model_id, "output": [], "parallel_tool_calls": body.parallel_tool_calls
        if body.parallel_tool_calls is not None else True, "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": effort, "summary": None}, "store": body.store is not False,
        "temperature": params.temperature, "text": {"format": (body.text.format if body.text and body.text.format
                                                               else {"type": "text"})},
        "tool_choice": tool_choice, "tools": body.tools or [], "top_p": params.top_p, "truncation": "disabled",
        "usage": None, "user": body.user, "metadata": body.metadata or {},
    }
    return Plan(response, turn, input_items, context, body.store is not False, session)


def finish_response(response: dict[str, Any], result: TurnResult) -> dict[str, Any]:
    out = dict(response)
    out["status"] = result.status
    out["output"] = [i.to_dict() for i in result.items]
    out["incomplete_details"] = {"reason": result.incomplete_reason} if result.incomplete_reason else None
    out["error"] = result.error
    out["usage"] = {
        "input_tokens": result.input_tokens, "input_tokens_details": {"cached_tokens": result.cached_tokens},
        "output_tokens": result.output_tokens,
        "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens},
        "total_tokens": result.input_tokens + result.output_tokens,
    }
    return out


class ResponseEvents:
    """Item events -> the Responses SSE sequence (SPEC §6.4), numbered from 0."""

    def __init__(self, response: dict[str, Any], emit) -> None:
        self.response = response
        self.emit = emit
        self.seq = 0

    def send(self, kind: str, **payload: Any) -> None:
        self.emit(sse_event(kind, {"type": kind, "sequence_number": self.seq, **payload}))
        self.seq += 1

    def start(self) -> None:
        self.send("response.created", response=self.response)
        self.send("response.in_progress", response=self.response)

    def __call__(self, ev: ItemEvent) -> None:
        item, idx = ev.item, ev.index
        ids = {"item_id": item.id, "output_index": idx}
        kind = item.kind
        if isinstance(ev, ItemAdded):
            self.send("response.output_item.added", output_index=idx, item=item.to_dict(empty=True))
            if kind in ("reasoning", "message"):
                self.send("response.content_part.added", **ids, content_index=0, part=self._part(item, ""))
            elif kind in ("web_search_call", "code_interpreter_call"):
                self.send(f"response.{kind}.in_progress", **ids)
        elif isinstance(ev, ItemDelta):
            if kind == "reasoning":
                self.send("response.reasoning_text.delta", **ids, content_index=0, delta=ev.delta)
            elif kind == "message":
                self.send("response.output_text.delta", **ids, content_index=0, delta=ev.delta, logprobs=[])
            elif kind == "code_interpreter_call":
                self.send("response.code_interpreter_call_code.delta", **ids, delta=ev.delta)
            elif kind == "function_call":
                self.send("response.function_call_arguments.delta", **ids, delta=ev.delta)
        elif isinstance(ev, ItemAnnotation):
            self.send("response.output_text.annotation.added", **ids, content_index=0,
                      annotation_index=ev.annotation_index, annotation=ev.annotation)
        elif isinstance(ev, ItemProgress):
            if kind == "web_search_call":
                self.send("response.web_search_call.searching", **ids)
            else:
                self.send("response.code_interpreter_call_code.done", **ids, code=item.text)
                self.send("response.code_interpreter_call.interpreting", **ids)
        elif isinstance(ev, ItemDone):
            if kind == "reasoning":
                self.send("response.reasoning_text.done", **ids, content_index=0, text=item.text)
            elif kind == "message":
                self.send("response.output_text.done", **ids, content_index=0, text=item.text, logprobs=[])
            elif kind == "function_call":
                self.send("response.function_call_arguments.done", **ids, name=item.name, arguments=item.text)
            elif item.status == "completed":  # a built-in call whose tool answered
                self.send(f"response.{kind}.completed", **ids)
            if kind in ("reasoning", "message"):
                self.send("response.content_part.done", **ids, content_index=0, part=self._part(item, item.text))
            self.send("response.output_item.done", output_index=idx, item=item.to_dict())

    @staticmethod
    def _part(item, text: str) -> dict[str, Any]:
        if item.kind == "reasoning":
            return {"type": "reasoning_text", "text": text}
        annotations = list(item.annotations) if text else []
        return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}

    def end(self, final: dict[str, Any]) -> None:
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            final["status"], "response.failed")
        self.send(kind, response=final)


def _run(ctx: ServerContext, plan: Plan, cancel: threading.Event, sink=None) -> dict[str, Any]:
    keep: str | None = None
    try:
        result = Turn(ctx.engine, plan.turn, sink, cancel).run()
        final = finish_response(plan.response, result)
        if plan.store:
            ctx.store.put(final, plan.input_items, plan.context)
            keep = final["id"]
        return final
    finally:
        ctx.sessions.checkin(plan.session, keep)


@router.post("/v1/responses")
async def create_response(body: ResponsesRequest, request: Request):
    ctx: ServerContext = request.app.state.ctx
    plan = plan_response(body, ctx)
    try:
        ctx.admission.acquire()
    except APIError:
        ctx.sessions.checkin(plan.session, None)
        raise
    cancel = threading.Event()
    if not body.stream:
        final = await wait_for_thread(lambda: _run(ctx, plan, cancel), cancel, request, ctx.admission.release)
        return JSONResponse(final)

    def work(emit) -> None:
        events = ResponseEvents(plan.response, emit)
        events.start()
        events.end(_run(ctx, plan, cancel, events))

    stream = stream_from_thread(work, cancel, ctx.admission.release)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _stored(ctx: ServerContext, response_id: str):
    found = ctx.store.get(response_id)
    if found is None:
        raise not_found(f"no stored response with id {response_id!r}", param="response_id")
    return found


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request) -> JSONResponse:
    return JSONResponse(_stored(request.app.state.ctx, response_id).response)


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> JSONResponse:
    ctx: ServerContext = request.app.state.ctx
    if not ctx.store.delete(response_id):
        raise not_found(f"no stored response with id {response_id!r}", param="response_id")
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


@router.get("/v1/responses/{response_id}/input_items")
async def input_items(response_id: str, request: Request, limit: int = 20, order: str = "desc",
                      after: str | None = None, before: str | None = None) -> JSONResponse:
    if not 1 <= limit <= 100:
        raise bad_request("limit must be between 1 and 100", param="limit")
    if order not in ("asc", "desc"):
        raise bad_request("order must be 'asc' or 'desc'", param="order")
    items = list(_stored(request.app.state.ctx, response_id).input_items)
    if order == "desc":
        items.reverse()
    ids = [it.get("id") for it in items]
    for cursor, keep_after in ((after, True), (before, False)):
        if cursor is not None:
            if cursor not in ids:
                raise bad_request(f"no input item with id {cursor!r}", param="after" if keep_after else "before")
            k = ids.index(cursor)
            items, ids = (items[k + 1:], ids[k + 1:]) if keep_after else (items[:k], ids[:k])
    page = items[:limit]
    return JSONResponse({"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
                         "last_id": page[-1].get("id") if page else None, "has_more": len(items) > limit})
