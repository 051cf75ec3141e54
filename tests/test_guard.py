"""The egress guard. Audit hooks cannot be removed, so every check that installs it runs in a child
Python process. Only loopback is ever contacted: refused hosts are refused before any lookup or
packet (a non-loopback address is built at run time, from parts, inside the child)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from gptoss import guard

PRELUDE = """
import json, logging, socket, sys
from gptoss import guard

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("gptoss.guard").addHandler(Keep())

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(4)
server.settimeout(2)
port = server.getsockname()[1]
TEST_NET = ".".join(["192", "0", "2", "7"])  # RFC 5737 documentation range, never routed
results = {}

def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except guard.EgressBlockedError as e:
        results[name] = {"blocked": str(e), "permission_error": isinstance(e, PermissionError)}
    except OSError as e:
        results[name] = {"oserror": type(e).__name__}
"""


_BASE_ENV = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}


def run_child(body: str, env: dict[str, str] | None = None) -> dict:
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps({'results': results, 'log': records, " \
                                             "'status': guard.status()}))\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**_BASE_ENV, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_loopback_is_allowed():
    out = run_child("""
        guard.install([])
        def tcp():
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            server.accept()[0].close()
        attempt("tcp", tcp)
        unix_server = socket.socket(socket.AF_UNIX)
        unix_server.bind(chr(0) + "gptoss-guard-test-%d" % port)  # abstract namespace: no file
        unix_server.listen(1)
        attempt("unix", lambda: socket.socket(socket.AF_UNIX).connect(unix_server.getsockname()))
        attempt("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", port)))
    """)
    assert out["results"] == {"tcp": "ok", "unix": "ok", "udp": "ok"}
    assert out["status"]["blocked"] == 0 and out["log"] == []


def test_other_hosts_are_refused_before_any_lookup_or_packet():
    # Non-loopback targets are only ever shown to the hook as audit events (sys.audit runs the hook
    # exactly as the socket module does, without the operation): no lookup or packet, even if the guard
    # were broken. The real-socket path is proven on loopback in test_listed_loopback_ports.
    out = run_child("""
        guard.install([])
        attempt("name", lambda: sys.audit("socket.getaddrinfo", "example.invalid", 443, 0, 0, 0))
        tcp = socket.socket()
        attempt("ip", lambda: sys.audit("socket.connect", tcp, (TEST_NET, 9)))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attempt("udp", lambda: sys.audit("socket.sendto", udp, (TEST_NET, 9)))
        attempt("reverse", lambda: sys.audit("socket.gethostbyaddr", TEST_NET))
        attempt("byname", lambda: sys.audit("socket.gethostbyname", "example.invalid"))
        attempt("nameinfo", lambda: sys.audit("socket.getnameinfo", (TEST_NET, 80), 0))
        results["probe"] = guard.probe_connect((TEST_NET, 443))
        results["probe_loopback"] = guard.probe_connect(("127.0.0.1", 443))
    """)
    r = out["results"]
    for key in ("name", "ip", "udp", "reverse", "byname", "nameinfo"):
        assert "blocked" in r[key], key
        assert r[key]["permission_error"]
    assert "'example.invalid'" in r["name"]["blocked"]
    assert "GPTOSS_ALLOWED_HOSTS=example.invalid" in r["name"]["blocked"]
    assert ".".join(["192", "0", "2", "7"]) + ":9" in r["ip"]["blocked"]
    assert ".".join(["192", "0", "2", "7"]) + ":443" in r["probe"] and r["probe_loopback"] is None
    assert out["status"]["blocked"] == 6 and len(out["log"]) == 6  # probes are neither counted nor logged
    assert "example.invalid" in out["log"][0] and "refused" in out["log"][0]
    assert out["status"]["recent_refusals"][0] == {"host": "example.invalid", "event": "socket.getaddrinfo"}


def test_listed_loopback_ports():
    # Loopback mode "listed": a real connect() to a listening loopback port that is not on the list is
    # refused before it runs (the server never sees it); the listed port connects.
    out = run_child("""
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        other.listen(4)
        other.settimeout(0.5)
        other_port = other.getsockname()[1]
        guard.install([f"127.0.0.1:{port}"], loopback=False)
        def connect(p, srv):
            socket.create_connection(("127.0.0.1", p), timeout=2).close()
            srv.accept()[0].close()
        attempt("listed", lambda: connect(port, server))
        attempt("unlisted", lambda: connect(other_port, other))
        try:
            other.accept()
            results["other_saw_a_connection"] = True
        except (socket.timeout, TimeoutError):
            results["other_saw_a_connection"] = False
        attempt("unlisted_v6", lambda: sys.audit("socket.connect", socket.socket(socket.AF_INET6), ("::1", port)))
        results["ports"] = [port, other_port]
    """)
    r = out["results"]
    port, other_port = r["ports"]
    assert r["listed"] == "ok"
    assert "blocked" in r["unlisted"] and f"127.0.0.1:{other_port}" in r["unlisted"]["blocked"]
    assert r["other_saw_a_connection"] is False
    assert "blocked" in r["unlisted_v6"]  # ::1 is not 127.0.0.1
    assert out["status"]["loopback"] == "listed only"
    assert out["status"]["allowed_hosts"] == [f"127.0.0.1/32:{port}"]
    assert out["status"]["blocked"] == 2 and len(out["log"]) == 2


def test_listed_loopback_from_the_environment_and_patterns():
    out = run_child("""
        guard.install()
        results["status"] = guard.status()
        tcp = socket.socket()
        attempt("port_listed", lambda: sys.audit("socket.connect", tcp, ("127.0.0.1", 1)))
        attempt("port_other", lambda: sys.audit("socket.connect", tcp, ("127.0.0.1", 2)))
        guard.allow(["*.docs.internal", "wiki.internal:443"])
        attempt("sub", lambda: guard.check_host("a.b.docs.internal"))
        attempt("apex", lambda: guard.check_host("docs.internal"))
        attempt("lookalike", lambda: guard.check_host("evildocs.internal"))
        attempt("wiki_443", lambda: guard.check_host("wiki.internal", port=443))
        attempt("wiki_80", lambda: guard.check_host("wiki.internal", port=80))
        for bad in ("http://x.org/", "x.org:0", "a*b.org", "[::1"):
            try:
                guard.allow([bad])
                results[bad] = "accepted"
            except ValueError as e:
                results[bad] = str(e)
        results["after"] = guard.status()["allowed_hosts"]
    """, env={"GPTOSS_GUARD_LOOPBACK": "listed", "GPTOSS_ALLOWED_HOSTS": "127.0.0.1:1"})
    r = out["results"]
    assert r["status"]["loopback"] == "listed only"
    assert "localhost" not in r["status"]["allowed_hosts"]  # "localhost" would allow every loopback port
    assert r["port_listed"] == "ok" and "blocked" in r["port_other"]
    assert r["sub"] == "ok" and r["apex"] == "ok" and "blocked" in r["lookalike"]
    assert r["wiki_443"] == "ok" and "blocked" in r["wiki_80"]
    for bad in ("http://x.org/", "x.org:0", "a*b.org", "[::1"):
        assert "invalid allowed host" in r[bad], bad
    assert r["after"] == ["wiki.internal:443", "*.docs.internal", "127.0.0.1/32:1"]


def test_allowlist_lets_a_name_through():
    out = run_child("""
        guard.install([])
        attempt("refused", lambda: socket.create_connection(("localhost", port), timeout=2))
        guard.install(["localhost"])
        guard.install(["localhost"])  # idempotent: still one hook, one policy
        def connect():
            socket.create_connection(("localhost", port), timeout=2).close()
            server.accept()[0].close()
        attempt("allowed", connect)
        attempt("others_still_refused", lambda: socket.getaddrinfo("example.invalid", 443))
        results["policy_only"] = [guard.install(["example.invalid", TEST_NET + "/30"]),
                                  guard.check_host("example.invalid"), guard.check_host(TEST_NET)]
        attempt("outside_network", lambda: guard.check_host(".".join(["192", "0", "2", "9"])))
    """)
    r = out["results"]
    assert "blocked" in r["refused"] and r["allowed"] == "ok"
    assert "blocked" in r["others_still_refused"] and "blocked" in r["outside_network"]
    assert r["policy_only"] == [None, None, None]
    assert out["status"]["allowed_hosts"][0] == "example.invalid"
    assert out["status"]["blocked"] == 3  # counted across reinstalls


def test_default_allowlist_reads_the_environment_and_disable_turns_checks_off():
    out = run_child("""
        results["before"] = [guard.status()["installed"], guard.self_test()]
        guard.install()
        results["hosts"] = guard.status()["allowed_hosts"]
        results["self_test"] = guard.self_test()
        guard.disable()
        results["disabled"] = [guard.status()["enabled"], guard.check_host("example.invalid"), guard.self_test()]
        try:
            guard.install(["bad/host/name"])
        except ValueError as e:
            results["invalid"] = str(e)
    """, env={"GPTOSS_ALLOWED_HOSTS": "models.internal, mirror.internal"})
    r = out["results"]
    assert r["before"] == [False, False]
    assert r["hosts"] == ["localhost", "mirror.internal", "models.internal"]
    assert r["self_test"] is True
    assert r["disabled"] == [False, None, False]
    assert "bad/host/name" in r["invalid"]
    assert out["status"]["blocked"] == 0 and out["log"] == []  # the self-test is neither counted nor logged


def test_set_offline_env_sets_the_variables():
    env: dict[str, str] = {"HF_HUB_OFFLINE": "0"}
    guard.set_offline_env(env)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DO_NOT_TRACK"):
        assert env[key] == "1"
    assert env["WANDB_MODE"] == "offline" and set(guard.OFFLINE_ENV) <= set(env)


def test_every_cli_command_runs_guarded():
    out = run_child("""
        from gptoss.cli.main import main
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            results["rc"] = main(["doctor", "--skip-sandbox", "--json"])
        attempt("after", lambda: sys.audit("socket.getaddrinfo", "example.invalid", 443, 0, 0, 0))
        import os
        results["env"] = os.environ.get("HF_HUB_OFFLINE")
    """)
    assert out["status"]["enabled"] is True and "blocked" in out["results"]["after"]
    assert out["results"]["env"] == "1"
