"""``gptoss doctor``: is this installation private and working?

Checks the egress guard of this process, the offline environment variables, the python tool's
sandbox (it really starts one), the shipped tokenizer vocabulary and torch; lists where models,
indexes and caches live. Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptoss import guard


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--skip-sandbox", action="store_true", help="do not start a trial sandbox")
    p.add_argument("--sandbox-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long the trial sandbox may take (default: %(default)s)")


def _check(ok: bool | None, summary: str, **details: Any) -> dict[str, Any]:
    """``ok``: True passes, False is a problem, None is information only."""
    return {**details, "ok": ok, "summary": summary}


PROBE_ADDRESS = (guard.PROBE_HOST, 443)  # an RFC 6761 .invalid name, only shown to the guard as an audit event


def check_guard() -> dict[str, Any]:
    st = guard.status()
    if not st["enabled"]:
        return _check(False, "not installed in this process: gptoss could reach any host "
                      "(the CLI entry point must call gptoss.guard.install())", **st)
    if not guard.self_test():
        return _check(False, "installed, but its self-test lookup was not refused", **st)
    refusal = guard.probe_connect(PROBE_ADDRESS)
    target = f"{PROBE_ADDRESS[0]}:{PROBE_ADDRESS[1]}"
    st["probe"] = {"address": target, "refused": refusal is not None, "message": refusal}
    allowed = ", ".join(st["allowed_hosts"]) or "none"
    loopback = "every loopback port" if st["loopback"] == "all" else "listed loopback ports only"
    if refusal is None:
        return _check(False, f"installed, but a connection to {target} would be allowed (allowed: {allowed})", **st)
    return _check(True, f"on: {loopback}, allowed hosts: {allowed}; a connection to {target} is refused; "
                  f"{st['blocked']} refused so far", **st)


def check_offline_env() -> dict[str, Any]:
    values = {k: os.environ.get(k) for k in guard.OFFLINE_ENV}
    missing = [k for k, v in guard.OFFLINE_ENV.items() if values[k] != v]
    if missing:
        return _check(False, f"not set: {', '.join(missing)} (gptoss.guard.set_offline_env() sets them)",
                      values=values, missing=missing)
    return _check(True, f"{len(values)} variables keep Hugging Face and telemetry libraries offline", values=values)


def check_sandbox(skip: bool, timeout: float) -> dict[str, Any]:
    from gptoss.tools.python_tool import find_bwrap, sandbox_report

    if skip:
        return _check(None, f"trial skipped (bwrap: {find_bwrap() or 'not found'})", bwrap=find_bwrap())
    report = sandbox_report(timeout=timeout)
    where = f"{report['bwrap_version'] or 'bwrap'} at {report['bwrap']}; " if report["bwrap"] else ""
    ok = report.pop("ok")
    return _check(ok, where + report.pop("detail"), **report)


def _optional(fn: Callable[[], Any]) -> str | None:
    try:
        return str(fn())
    except Exception:  # another module's layout changed: report what can be found
        return None


def check_paths() -> dict[str, Any]:
    from gptoss.weights.fingerprint import cache_dir

    def index_path() -> Path:
        from gptoss.tools.browser.local import default_index_path
        return default_index_path()

    def responses_path() -> Path:
        from gptoss.server.store import default_db_path
        return default_db_path()

    def kernel_dir() -> Path:
        from gptoss.ops.cpu import cache_dir as kernel_cache
        return kernel_cache()

    def bundled_model() -> Path:
        from gptoss.models import BUNDLED_DIR
        return BUNDLED_DIR

    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    paths = {
        "cache_dir": str(cache_dir()),
        "cache_dir_source": ("$GPTOSS_CACHE_DIR" if os.environ.get("GPTOSS_CACHE_DIR") else
                             "$XDG_CACHE_HOME/gptoss" if os.environ.get("XDG_CACHE_HOME") else "~/.cache/gptoss"),
        "fingerprints": str(cache_dir() / "fingerprints.json"),
        "search_index": _optional(index_path),
        "stored_responses": _optional(responses_path),
        "cpu_kernels": _optional(kernel_dir),
        "bundled_model": _optional(bundled_model),
        "huggingface_cache": os.environ.get("HF_HUB_CACHE") or os.path.join(hf_home, "hub"),
    }
    exists = {k: Path(v).exists() for k, v in paths.items() if v and k != "cache_dir_source"}
    return _check(None, f"cache {paths['cache_dir']} (from {paths['cache_dir_source']})", paths=paths,
                  exists=exists)


def check_index() -> dict[str, Any]:
    """The local search index ``--browser local`` uses by default: where, how many documents, which folders."""
    from gptoss.tools.browser.local import LocalIndex, default_index_path

    path = default_index_path()
    if not path.exists():
        return _check(None, f"none yet at {path} (`gptoss index add DIR` builds it)", path=str(path))
    try:
        with LocalIndex(path, create=False) as index:
            roots = [r.path for r in index.roots()]
            count = index.count()
    except Exception as e:  # a broken index is a problem worth showing, not a crash
        return _check(False, f"{path}: {e}", path=str(path))
    return _check(None, f"{count} documents from {len(roots)} folder(s) at {path}", path=str(path), folders=roots,
                  documents=count)


def check_tokenizer() -> dict[str, Any]:
    from gptoss.tokenizer import VOCAB_SHA256, verify_vocab

    try:
        path = verify_vocab()
    except Exception as e:
        return _check(False, str(e))
    return _check(True, f"vocabulary verified (sha256 {VOCAB_SHA256[:12]}…) at {path}", path=str(path),
                  sha256=VOCAB_SHA256)


def check_torch() -> dict[str, Any]:
    try:
        import torch
    except Exception as e:
        return _check(False, f"torch cannot be imported: {e}")
    cuda = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    info = {"version": torch.__version__, "threads": torch.get_num_threads(), "cuda": cuda,
            "cuda_version": torch.version.cuda, "devices": devices}
    gpu = f"CUDA {torch.version.cuda}: {', '.join(devices)}" if cuda else "CUDA not available (CPU only)"
    return _check(None, f"torch {torch.__version__}, {info['threads']} CPU threads, {gpu}", **info)


def collect(skip_sandbox: bool = False, sandbox_timeout: float = 30.0) -> dict[str, Any]:
    """Every check as a dict: ``{"healthy": bool, "problems": [...], "checks": {name: {...}}}``."""
    checks = {
        "egress_guard": check_guard(),
        "offline_env": check_offline_env(),
        "python_sandbox": check_sandbox(skip_sandbox, sandbox_timeout),
        "paths": check_paths(),
        "search_index": check_index(),
        "tokenizer": check_tokenizer(),
        "torch": check_torch(),
    }
    problems = [f"{name}: {c['summary']}" for name, c in checks.items() if c["ok"] is False]
    return {"healthy": not problems, "problems": problems, "checks": checks}


_LABELS = {True: "ok  ", False: "FAIL", None: "info"}


def _print_text(report: dict[str, Any]) -> None:
    print("gptoss doctor")
    for name, c in report["checks"].items():
        print(f"  {_LABELS[c['ok']]}  {name.replace('_', ' '):<15} {c['summary']}")
        if name == "egress_guard" and c.get("probe"):
            print(f"{'':23}probe: {c['probe']['message'] or 'NOT refused'}")
        if name == "paths":
            for key, value in c["paths"].items():
                if key != "cache_dir_source":
                    mark = "" if c["exists"].get(key) else "  (not present)"
                    print(f"{'':23}{key.replace('_', ' ')}: {value}{mark}")
    if report["healthy"]:
        print("healthy: every check passed")
    else:
        print(f"{len(report['problems'])} problem(s):")
        for p in report["problems"]:
            print(f"  - {p}")


def run(args: argparse.Namespace) -> int:
    report = collect(skip_sandbox=args.skip_sandbox, sandbox_timeout=args.sandbox_timeout)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_text(report)
    return 0 if report["healthy"] else 1
