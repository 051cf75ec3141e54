"""Helpers for the server tests: scripted completions, SSE readers and a real uvicorn server on a random
loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from gptoss.harmony.render import harmony_encoding

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo", "Paris"]}},
                               "required": ["city"], "additionalProperties": False}}
CALL = ('<|channel|>analysis<|message|>Need the weather; call the tool.<|end|>'
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json'
        '<|message|>{"city":"Oslo"}<|call|>')
ANSWER = ('<|channel|>analysis<|message|>It is 4 degrees.<|end|>'
          '<|start|>assistant<|channel|>final<|message|>Oslo: 4 °C.<|return|>')


def decode(tokens: list[int]) -> str:
    return harmony_encoding().decode(tokens)


def sse_events(text: str) -> list[dict]:
    """Parse Responses SSE records: each has ``event:`` and ``data:``; they must agree on the type."""
    out = []
    for record in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in record.splitlines())
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        out.append(data)
    return out


def chat_chunks(text: str) -> list[dict | str]:
    out: list[dict | str] = []
    for record in text.strip().split("\n\n"):
        assert record.startswith("data: ")
        payload = record[len("data: "):]
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
