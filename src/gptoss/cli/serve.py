"""``gptoss serve``: the OpenAI-compatible Responses and Chat Completions server."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from gptoss.cli.common import add_model_arguments, err_console, positive_int
from gptoss.tools.builtin import add_builtin_arguments, options_from_args

EPILOG = """examples:
  gptoss serve --model /path/to/gpt-oss-20b                       # http://127.0.0.1:8000/v1
  gptoss serve --model M --port 8080 --api-key secret --db ./responses.sqlite3
  gptoss serve --model M --host 0.0.0.0 --api-key KEY             # reachable from the network: use a key
  gptoss serve --model M --browser local --python                  # built-in tools (Responses: web_search,
                                                                   # code_interpreter; Chat: run inside)

clients: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY or anything without --api-key")
endpoints: POST /v1/responses, GET|DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items,
           POST /v1/chat/completions, GET /v1/models, GET /health
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help="require 'Authorization: Bearer KEY' (repeat for several keys; default: no check)")
    p.add_argument("--db", type=Path, metavar="PATH",
                   help="SQLite file for stored responses (default: $GPTOSS_CACHE_DIR/server/responses.sqlite3)")
    p.add_argument("--served-model-name", metavar="NAME",
                   help="model id reported by /v1/models (default: the checkpoint directory name)")
    p.add_argument("--max-queue", type=int, default=8, metavar="N",
                   help="requests that may wait while --max-batch are decoding; more get HTTP 429 "
                        "(default: %(default)s)")
    p.add_argument("--max-batch", type=positive_int, default=8, metavar="N",
                   help="requests decoded together: each joins the running forward passes as it arrives and "
                        "leaves when done (continuous batching; default: %(default)s)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="torch threads for the model (default: 1 for a model under 64 MiB of weights, such as the "
                        "bundled one, whose tiny matrix products gain nothing from more and would take the cores "
                        "the HTTP side needs; otherwise every core)")
    p.add_argument("--engine", choices=["process", "thread"], default="process",
                   help="where the model runs: process = a child process with its own interpreter, so the HTTP side "
                        "and the decode loop do not take turns on one lock (faster with many streams); thread = a "
                        "thread of the server process (default: %(default)s)")
    p.add_argument("--prefix-cache", type=int, default=256, metavar="MB",
                   help="memory for cached KV states of shared prompt preambles (system/developer messages, "
                        "earlier turns), reused by later requests; 0 turns it off (default: %(default)s)")
    p.add_argument("--max-tool-calls", type=positive_int, default=8, metavar="N",
                   help="built-in tool calls the server runs within one response (default: %(default)s)")
    p.add_argument("--max-body", type=positive_int, default=16, metavar="MB",
                   help="largest request body accepted, in MiB; larger ones get HTTP 413 (default: %(default)s)")
    p.add_argument("--max-tokens", type=positive_int, default=4096, metavar="N",
                   help="default sampled-token budget when a request sets none (default: %(default)s)")
    add_builtin_arguments(p)
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default: %(default)s)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False




def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from gptoss.api import Model
    from gptoss.server import ModelEngine, create_app
    from gptoss.server.engine import default_threads
    from gptoss.server.process_engine import ProcessEngine

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.max_queue < 0:
        raise ValueError(f"--max-queue must be >= 0, got {args.max_queue}")
    builtin = options_from_args(args)
    if not _is_loopback(args.host) and not args.api_key:
        err_console.print(f"[yellow]warning:[/] listening on {args.host} without --api-key: anyone who can reach "
                          "this port can use the model", highlight=False)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    name = args.served_model_name or Path(args.model).resolve().name
    prefix_bytes = max(0, args.prefix_cache) * 2**20
    if args.engine == "process":
        engine = ProcessEngine(args.model, name, dtype=args.dtype, device=args.device, ops=args.ops,
                               max_queue=args.max_queue, max_batch=args.max_batch,
                               prefix_cache_bytes=prefix_bytes, threads=args.threads)
    else:
        model = Model.load(args.model, dtype=args.dtype, device=args.device)
        threads = args.threads or default_threads(model.transformer)
        engine = ModelEngine(model.transformer, name, max_queue=args.max_queue, max_batch=args.max_batch,
                             prefix_cache_bytes=prefix_bytes, threads=threads)
    app = create_app(engine, db_path=args.db, api_keys=args.api_key, max_queue=args.max_queue,
                     default_max_tokens=args.max_tokens, max_tool_rounds=args.max_tool_calls,
                     builtin=builtin if builtin.any else None, max_body_bytes=args.max_body * 1024 * 1024)
    tools = [t for t, on in (("browser " + str(builtin.browser), builtin.browser), ("python", builtin.python)) if on]
    err_console.print(f"serving {name} on http://{args.host}:{args.port}/v1"
                      + (f" (built-in tools: {', '.join(tools)})" if tools else ""), highlight=False)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        engine.close()
    return 0
