"""Stored responses for ``GET``/``DELETE /v1/responses/{id}``, ``input_items`` and ``previous_response_id``.

SQLite in WAL mode, one row per response: the response object, the request's own input items, and the
*context* -- every item before this response's output (the previous chain plus this input), so a chain of
any length continues from one row. ``store: false`` responses are never written. Default path:
``$GPTOSS_CACHE_DIR/server/responses.sqlite3`` (else ``$XDG_CACHE_HOME/gptoss/...`` or ``~/.cache/gptoss/...``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    response TEXT NOT NULL,
    input_items TEXT NOT NULL,
    context TEXT NOT NULL
)
"""


def default_db_path() -> Path:
    base = os.environ.get("GPTOSS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "gptoss")
    return Path(base) / "server" / "responses.sqlite3"


@dataclass
class StoredResponse:
    response: dict
    input_items: list[dict]
    context: list[dict]


class ResponseStore:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(SCHEMA)
        except sqlite3.Error as e:
            raise ValueError(f"{self.path}: cannot open the response store ({e})") from None

    def put(self, response: dict, input_items: list[dict], context: list[dict]) -> None:
        row = (response["id"], int(response.get("created_at") or time.time()), json.dumps(response),
               json.dumps(input_items), json.dumps(context))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)", row)

    def get(self, response_id: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute("SELECT response, input_items, context FROM responses WHERE id = ?",
                                   (response_id,)).fetchone()
        if row is None:
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]), json.loads(row[2]))

    def delete(self, response_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
