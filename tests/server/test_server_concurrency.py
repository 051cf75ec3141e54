"""Admission (429), cancellation on client disconnect, and API keys."""

from __future__ import annotations

import threading
import time

import httpx
from server_helpers import ANSWER, live_server

from gptoss.server import StubEngine, create_app

LONG = "<|channel|>final<|message|>" + "word " * 400 + "<|return|>"


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_full_queue_answers_429(tmp_path):
    gate = threading.Event()
    engine = StubEngine([ANSWER], gate=gate)
    with live_server(create_app(engine, db_path=tmp_path / "db", max_queue=1)) as url, \
            httpx.Client(base_url=url, timeout=20) as client:
        results: list[int] = []
        body = {"model": "m", "input": "hi"}
        threads = [threading.Thread(target=lambda: results.append(client.post("/v1/responses", json=body).status_code))
                   for _ in range(2)]
        for t in threads:
            t.start()
        assert wait_until(lambda: client.get("/health").json()["active_requests"] == 2)
        r = client.post("/v1/responses", json=body)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        r = client.post("/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}],
                                                      "stream": True})
        assert r.status_code == 429
        gate.set()
        for t in threads:
            t.join(timeout=20)
        assert results == [200, 200]
        assert wait_until(lambda: client.get("/health").json()["active_requests"] == 0)
        assert client.post("/v1/responses", json=body).status_code == 200


def test_disconnect_cancels_generation(tmp_path):
    engine = StubEngine([LONG], delay=0.01)
    with live_server(create_app(engine, db_path=tmp_path / "db")) as url:
        with httpx.Client(base_url=url, timeout=20) as client:
            with client.stream("POST", "/v1/responses", json={"model": "m", "input": "hi", "stream": True}) as r:
                for line in r.iter_lines():
                    if "output_text.delta" in line:
                        break  # leave mid-answer
            assert wait_until(lambda: engine.cancelled == 1)
            # non-streaming: the client gives up waiting
            try:
                client.post("/v1/chat/completions", timeout=0.5,
                            json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
            except httpx.TimeoutException:
                pass
            assert wait_until(lambda: engine.cancelled == 2)
            assert wait_until(lambda: client.get("/health").json()["active_requests"] == 0)
        assert len(engine.prompts) == 2


def test_api_keys(make_client):
    client, _ = make_client(api_keys=["k1", "k2"])
    body = {"model": "m", "input": "hi"}
    r = client.post("/v1/responses", json=body)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.post("/v1/responses", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k2"}).status_code == 200
    assert client.post("/v1/responses", json=body, headers={"Authorization": "Bearer k1"}).status_code == 200
    assert client.get("/health").status_code == 200  # liveness needs no key
