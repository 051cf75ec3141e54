"""``gptoss bench serve``: aggregate tokens/s of a live server at 1, 4 and 8 concurrent streams.

Unless ``--url`` is given, it starts ``gptoss serve`` (the given or bundled model) as a child process on a
free loopback port, with a throw-away response store, and stops it at the end. Then for each concurrency
level N it runs ``N * --rounds`` streaming requests, N at a time (each stream starts its next request when
the previous one ends), through ``/v1/chat/completions`` (``--api chat``, default) or ``/v1/responses``.

What is measured, per level:

- **tokens**: completion tokens the server reports in each stream's usage (every sampled token);
- **seconds**: wall time from the first request sent to the last stream ended;
- **aggregate tok/s** = tokens / seconds; **per-stream tok/s** = the mean over requests of tokens divided by
  that request's time from its first streamed token to its end; **TTFT** = mean time to the first delta.

The sweep over the levels runs ``--repeat`` times, interleaved (1, 4, 8, 1, 4, 8, ...), and each level's
figures are the totals over its sweeps: a machine whose speed drifts (shared cores, thermal limits) then
slows every level alike instead of skewing the speed-up; each sweep's aggregate tok/s is kept in the JSON.

One untimed warm-up request runs first. Every request has a fixed ``max_tokens`` budget (the model may stop
earlier; counts are what was sampled). Results go to a table and, with ``--json OUT``, to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gptoss.cli.common import err_console, positive_int

DEFAULT_PROMPT = "Explain in a few sentences why the sky is blue."
EPILOG = """examples:
  gptoss bench serve                                   # bundled model, 1/4/8 streams, table only
  gptoss bench serve --json bench-serve.json --max-tokens 128
  gptoss bench serve --url http://127.0.0.1:8000 --api-key KEY --streams 1,2,4,8,16
"""


@dataclass
class Level:
    streams: int
    requests: int
    tokens: int
    seconds: float
    tokens_per_s: float
    per_stream_tokens_per_s: float
    ttft_ms: float
    errors: int = 0
    sweeps_tokens_per_s: list[float] = field(default_factory=list)  # aggregate tok/s of each sweep


@dataclass
class Report:
    url: str
    model: str
    api: str
    max_tokens: int
    rounds: int
    repeat: int = 1
    levels: list[Level] = field(default_factory=list)
    speedup: dict[str, float] = field(default_factory=dict)  # "N": aggregate tok/s at N / at the first level


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    # Not add_model_arguments: the model is the child server's business (it resolves the bundled default),
    # and --url needs none.
    p.add_argument("--model", default="", metavar="PATH",
                   help="checkpoint for the server it starts (default: the bundled gpt-oss-tiny)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="--dtype of the server it starts (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="--device of the server it starts (default: %(default)s)")
    p.add_argument("--server-ops", dest="server_ops", default="auto", choices=["auto", "reference", "cpu"],
                   help="--ops of the server it starts (default: %(default)s)")
    p.add_argument("--server-threads", type=positive_int, metavar="N",
                   help="--threads of the server it starts (default: the server's own choice)")
    p.add_argument("--prefix-cache", type=int, default=256, metavar="MB",
                   help="--prefix-cache of the server it starts; 0 turns the prefix cache off (default: %(default)s)")
    p.add_argument("--url", metavar="URL", help="benchmark this running server instead of starting one")
    p.add_argument("--api-key", metavar="KEY", default="bench", help="bearer key to send (default: %(default)s)")
    p.add_argument("--streams", default="1,4,8", metavar="N,N,...",
                   help="concurrency levels (default: %(default)s)")
    p.add_argument("--repeat", type=positive_int, default=3, metavar="K",
                   help="sweeps over the levels, interleaved; figures are totals over them (default: %(default)s)")
    p.add_argument("--rounds", type=positive_int, default=2, metavar="R",
                   help="requests per stream at each level (default: %(default)s)")
    p.add_argument("--max-tokens", type=positive_int, default=64, metavar="N",
                   help="sampled-token budget of each request (default: %(default)s)")
    p.add_argument("--api", choices=["chat", "responses"], default="chat", help="endpoint (default: %(default)s)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message of every request")
    p.add_argument("--effort", default="low", choices=["low", "medium", "high"],
                   help="reasoning effort of the requests (default: %(default)s)")
    p.add_argument("--max-batch", type=positive_int, default=8, metavar="N",
                   help="--max-batch of the server it starts (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="give up on one request after S seconds (default: %(default)s)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the results to this JSON file")


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--streams must be comma-separated positive integers, got {text!r}") from None
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f"--streams must be comma-separated positive integers, got {text!r}")
    return levels


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``gptoss serve`` as a child process on a free loopback port."""

    def __init__(self, args: argparse.Namespace, store: Path) -> None:
        self.port = _free_port()
        cmd = [sys.executable, "-m", "gptoss.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--db", str(store), "--api-key", args.api_key, "--dtype", args.dtype, "--device", args.device,
               "--ops", args.server_ops, "--max-batch", str(args.max_batch), "--max-queue", str(args.max_batch),
               "--prefix-cache", str(args.prefix_cache), "--log-level", "warning"]
        if args.server_threads:
            cmd += ["--threads", str(args.server_threads)]
        if args.model:
            cmd += ["--model", str(args.model)]
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy())
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 300.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace").strip().splitlines()[-3:]
                raise ValueError("the server did not start: " + (" | ".join(tail) or f"exit {self.proc.returncode}"))
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise ValueError(f"the server did not answer /health within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@dataclass
class _Result:
    tokens: int = 0
    ttft: float | None = None
    decode_seconds: float = 0.0
    error: str | None = None


async def _one(client, api: str, body: dict) -> _Result:
    """One streaming request; tokens from the usage the server reports."""
    res = _Result()
    path = "/v1/chat/completions" if api == "chat" else "/v1/responses"
    start = time.perf_counter()
    first = None
    async with client.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            res.error = f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
            return res
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if first is None and _is_delta(api, data):
                first = time.perf_counter()
            usage = data.get("usage") if api == "chat" else (data.get("response") or {}).get("usage")
            if usage:
                res.tokens = int(usage.get("completion_tokens", usage.get("output_tokens", 0)))
            if api == "chat" and "error" in data:
                res.error = str(data["error"].get("message"))
            if api == "responses" and data.get("type") == "response.failed":
                res.error = str((data["response"].get("error") or {}).get("message"))
    end = time.perf_counter()
    res.ttft = (first or end) - start
    res.decode_seconds = end - (first or start)
    return res


def _is_delta(api: str, data: dict) -> bool:
    if api == "chat":
        choices = data.get("choices") or []
        d = choices[0].get("delta", {}) if choices else {}
        return bool(d.get("content") or d.get("reasoning_content") or d.get("tool_calls"))
    return str(data.get("type", "")).endswith(".delta")


def _body(args: argparse.Namespace, seed: int) -> dict:
    if args.api == "chat":
        return {"model": "gpt-oss", "messages": [{"role": "user", "content": args.prompt}], "stream": True,
                "max_tokens": args.max_tokens, "reasoning_effort": args.effort, "seed": seed,
                "stream_options": {"include_usage": True}}
    return {"model": "gpt-oss", "input": args.prompt, "stream": True, "max_output_tokens": args.max_tokens,
            "reasoning": {"effort": args.effort}, "seed": seed, "store": False}


async def _level(url: str, args: argparse.Namespace, n: int) -> Level:
    import httpx

    headers = {"Authorization": f"Bearer {args.api_key}"}
    limits = httpx.Limits(max_connections=n + 2, max_keepalive_connections=n + 2)
    results: list[_Result] = []
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=args.timeout, limits=limits) as client:
        async def stream(k: int) -> None:
            for j in range(args.rounds):
                try:
                    results.append(await _one(client, args.api, _body(args, 1000 * n + 10 * k + j)))
                except httpx.HTTPError as e:
                    results.append(_Result(error=f"{type(e).__name__}: {e}"))

        start = time.perf_counter()
        await asyncio.gather(*(stream(k) for k in range(n)))
        seconds = time.perf_counter() - start
    ok = [r for r in results if r.error is None]
    tokens = sum(r.tokens for r in ok)
    per = [r.tokens / r.decode_seconds for r in ok if r.decode_seconds > 0 and r.tokens]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    errors = [r.error for r in results if r.error is not None]
    if errors:
        err_console.print(f"[yellow]{len(errors)} of {len(results)} requests at {n} streams failed:[/] {errors[0]}",
                          highlight=False)
    return Level(n, len(results), tokens, round(seconds, 3), round(tokens / seconds, 2) if seconds else 0.0,
                 round(sum(per) / len(per), 2) if per else 0.0,
                 round(1000 * sum(ttft) / len(ttft), 1) if ttft else 0.0, len(errors))


def merge_levels(runs: list[Level]) -> Level:
    """One level's sweeps as one: totals of requests, tokens and seconds; means weighted by requests."""
    requests = sum(r.requests for r in runs)
    tokens = sum(r.tokens for r in runs)
    seconds = sum(r.seconds for r in runs)

    def mean(attr: str) -> float:
        return round(sum(getattr(r, attr) * r.requests for r in runs) / requests, 2) if requests else 0.0

    return Level(runs[0].streams, requests, tokens, round(seconds, 3), round(tokens / seconds, 2) if seconds else 0.0,
                 mean("per_stream_tokens_per_s"), round(mean("ttft_ms"), 1), sum(r.errors for r in runs),
                 [r.tokens_per_s for r in runs])


def _print(report: Report) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gptoss bench serve: {report.model} ({report.api}, max_tokens={report.max_tokens}, "
                        f"{report.repeat} sweep{'s' if report.repeat != 1 else ''})")
    for col in ("streams", "requests", "tokens", "seconds", "aggregate tok/s", "per-stream tok/s", "TTFT ms",
                "speed-up"):
        table.add_column(col, justify="right")
    for lv in report.levels:
        table.add_row(str(lv.streams), str(lv.requests), str(lv.tokens), f"{lv.seconds:.2f}",
                      f"{lv.tokens_per_s:.1f}", f"{lv.per_stream_tokens_per_s:.1f}", f"{lv.ttft_ms:.0f}",
                      f"{report.speedup.get(str(lv.streams), 0):.2f}x")
    out = Console()
    if not out.is_terminal:
        out.width = 120  # the whole table in logs and pipes
    out.print(table)


def run(args: argparse.Namespace) -> int:
    import httpx

    levels = _levels(args.streams)
    server = None
    store_dir = tempfile.TemporaryDirectory(prefix="gptoss-bench-serve-")
    try:
        if args.url:
            url = args.url.rstrip("/").removesuffix("/v1")
        else:
            server = _Server(args, Path(store_dir.name) / "responses.sqlite3")
            err_console.print(f"starting gptoss serve on {server.url} ...", highlight=False)
            server.wait_ready()
            url = server.url
        try:
            card = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {args.api_key}"}, timeout=30)
            card.raise_for_status()
            model = card.json()["data"][0]["id"]
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
            raise ValueError(f"{url}: not a gptoss/OpenAI server ({type(e).__name__}: {e})") from None
        report = Report(url, model, args.api, args.max_tokens, args.rounds, args.repeat)
        warm = argparse.Namespace(**{**vars(args), "rounds": 1})
        asyncio.run(_level(url, warm, 1))  # untimed warm-up
        runs: dict[int, list[Level]] = {n: [] for n in levels}
        for k in range(args.repeat):
            for n in levels:
                err_console.print(f"sweep {k + 1}/{args.repeat}: {n} concurrent stream(s) ...", highlight=False)
                runs[n].append(asyncio.run(_level(url, args, n)))
        report.levels = [merge_levels(runs[n]) for n in levels]
        base = report.levels[0].tokens_per_s
        report.speedup = {str(lv.streams): round(lv.tokens_per_s / base, 2) if base else 0.0
                          for lv in report.levels}
    finally:
        if server is not None:
            server.stop()
        store_dir.cleanup()
    _print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
        err_console.print(f"wrote {args.json}", highlight=False)
    failed = sum(lv.errors for lv in report.levels)
    return 1 if failed else 0
