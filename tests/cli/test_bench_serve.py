"""``gptoss bench serve``: against a running loopback server (--url) and with a server it starts itself."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager

from gptoss.cli.bench_serve import Level, merge_levels
from gptoss.cli.main import main
from gptoss.harmony.render import harmony_encoding
from gptoss.server import StubEngine, create_app

SCRIPT = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final<|message|>Blue.<|return|>"


@contextmanager
def served(app):
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_against_a_running_server(tmp_path, capsys):
    engine = StubEngine([SCRIPT], delay=0.002)
    out = tmp_path / "bench.json"
    with served(create_app(engine, db_path=tmp_path / "db", api_keys=["k"])) as url:
        rc = main(["bench", "serve", "--url", f"{url}/v1", "--api-key", "k", "--streams", "1,3", "--rounds", "2",
                   "--repeat", "2", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    per_request = len(harmony_encoding().encode(SCRIPT, allowed_special="all"))
    assert [lv["streams"] for lv in report["levels"]] == [1, 3]
    assert [lv["requests"] for lv in report["levels"]] == [4, 12]  # two sweeps, totalled
    assert [lv["tokens"] for lv in report["levels"]] == [4 * per_request, 12 * per_request]
    assert all(len(lv["sweeps_tokens_per_s"]) == 2 for lv in report["levels"]) and report["repeat"] == 2
    assert all(lv["errors"] == 0 and lv["tokens_per_s"] > 0 for lv in report["levels"])
    assert report["speedup"]["1"] == 1.0 and report["model"] == "m"
    assert len(engine.prompts) == 1 + 2 * (2 + 6)  # warm-up + both levels, twice
    table = capsys.readouterr().out
    assert "aggregate tok/s" in table and "streams" in table


def test_responses_api_and_errors(tmp_path, capsys):
    with served(create_app(StubEngine([SCRIPT]), db_path=tmp_path / "db")) as url:
        assert main(["bench", "serve", "--url", url, "--api", "responses", "--streams", "2", "--rounds", "1",
                     "--repeat", "1", "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["levels"][0]["tokens"] > 0
    assert main(["bench-serve", "--url", url, "--streams", "0"]) == 1
    assert "--streams" in capsys.readouterr().err
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    assert main(["bench", "serve", "--url", f"http://127.0.0.1:{dead}"]) == 1
    err = capsys.readouterr().err
    assert "not a gptoss/OpenAI server" in err and "Traceback" not in err


def test_starts_its_own_server(tiny_checkpoint, tmp_path):
    out = tmp_path / "own.json"
    rc = main(["bench", "serve", "--model", str(tiny_checkpoint), "--dtype", "float32", "--streams", "1,2",
               "--repeat", "1", "--rounds", "1", "--max-tokens", "4", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["url"].startswith("http://127.0.0.1:")
    assert [lv["tokens"] for lv in report["levels"]] == [4, 8]  # a random model never stops early in 4 tokens


def test_merge_levels_totals_the_sweeps():
    a = Level(4, 8, 200, 2.0, 100.0, 30.0, 50.0)
    b = Level(4, 8, 200, 3.0, 66.67, 20.0, 70.0, errors=1)
    m = merge_levels([a, b])
    assert (m.streams, m.requests, m.tokens, m.seconds, m.errors) == (4, 16, 400, 5.0, 1)
    assert m.tokens_per_s == 80.0  # 400 tokens over 5 s, not the mean of 100 and 66.67
    assert m.per_stream_tokens_per_s == 25.0 and m.ttft_ms == 60.0
    assert m.sweeps_tokens_per_s == [100.0, 66.67]
