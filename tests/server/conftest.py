"""Fixtures for the server tests (helpers live in server_helpers.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from server_helpers import ANSWER

from gptoss.server import StubEngine, create_app


@pytest.fixture
def make_client(tmp_path):
    """``make(engine=None, **create_app kwargs) -> (TestClient, engine)``; clients close at teardown."""
    clients = []

    def make(engine=None, **kw):
        engine = engine or StubEngine([ANSWER])
        kw.setdefault("db_path", tmp_path / "responses.sqlite3")
        client = TestClient(create_app(engine, **kw))
        client.__enter__()
        clients.append(client)
        return client, engine

    yield make
    for c in clients:
        c.__exit__(None, None, None)
