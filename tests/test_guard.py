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
    out = run_child("""
        guard.install([])
        attempt("name", lambda: socket.getaddrinfo("example.invalid", 443))
        attempt("url", lambda: socket.create_connection(("example.invalid", 80), timeout=2))
        tcp = socket.socket()
        attempt("ip", lambda: tcp.connect((TEST_NET, 9)))
        try:
            tcp.getpeername()
            results["ip_connected"] = True
        except OSError:
            results["ip_connected"] = False
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attempt("udp", lambda: udp.sendto(b"x", (TEST_NET, 9)))
        results["udp_bound_port"] = udp.getsockname()[1]  # a sent datagram would have bound a port
        attempt("reverse", lambda: socket.gethostbyaddr(TEST_NET))
        attempt("byname", lambda: socket.gethostbyname("example.invalid"))
    """)
    r = out["results"]
    for key in ("name", "url", "ip", "udp", "reverse", "byname"):
        assert "blocked" in r[key], key
        assert r[key]["permission_error"]
    assert "'example.invalid'" in r["name"]["blocked"]
    assert "GPTOSS_ALLOWED_HOSTS=example.invalid" in r["name"]["blocked"]
    assert r["ip_connected"] is False and r["udp_bound_port"] == 0
    assert out["status"]["blocked"] == 6 and len(out["log"]) == 6
    assert "example.invalid" in out["log"][0] and "refused" in out["log"][0]
    assert out["status"]["recent_refusals"][0] == {"host": "example.invalid", "event": "socket.getaddrinfo"}


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
    assert not guard.status()["installed"]  # nothing here installed the hook in the test process
