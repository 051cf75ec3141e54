"""``gptoss doctor``: run in child processes (the egress guard's audit hook must not stay in pytest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gptoss.cli import doctor
from gptoss.tools import python_tool

PROBE = "{}:{}".format(*doctor.PROBE_ADDRESS)  # the address doctor shows the guard (never contacted)
GUARDED = "import sys\nfrom gptoss.cli.main import main\nsys.exit(main({argv!r}))"  # main installs the guard
# doctor's own run() without the CLI entry point: nothing installed the guard or set the environment
UNGUARDED = ("import sys, argparse\nfrom gptoss.cli import doctor\nargv = {argv!r}\n"
             "sys.exit(doctor.run(argparse.Namespace(json='--json' in argv, skip_sandbox=True, "
             "sandbox_timeout=30.0)))")


def doctor_child(template: str, argv: list[str], tmp_path,
                 extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH")}
    env.update(GPTOSS_CACHE_DIR=str(tmp_path / "cache"), HOME=str(tmp_path), **(extra_env or {}))
    return subprocess.run([sys.executable, "-c", template.format(argv=["doctor", *argv])], capture_output=True,
                          text=True, timeout=120, env=env)


def test_healthy_json_report(tmp_path):
    proc = doctor_child(GUARDED, ["--json", "--skip-sandbox"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["healthy"] is True and report["problems"] == []
    checks = report["checks"]
    assert checks["egress_guard"]["ok"] is True and "localhost" in checks["egress_guard"]["allowed_hosts"]
    probe = checks["egress_guard"]["probe"]
    assert probe["refused"] is True and PROBE in probe["message"] and "blocked" in probe["message"]
    assert checks["offline_env"]["values"]["HF_HUB_OFFLINE"] == "1"
    assert checks["paths"]["paths"]["cache_dir"] == str(tmp_path / "cache")
    assert checks["paths"]["paths"]["cache_dir_source"] == "$GPTOSS_CACHE_DIR"
    assert checks["tokenizer"]["ok"] is True
    assert checks["torch"]["version"] and checks["torch"]["threads"] >= 1
    assert checks["python_sandbox"]["ok"] is None  # skipped: information only


def test_unguarded_process_is_unhealthy(tmp_path):
    proc = doctor_child(UNGUARDED, ["--skip-sandbox"], tmp_path)
    assert proc.returncode == 1
    assert "FAIL  egress guard" in proc.stdout and "FAIL  offline env" in proc.stdout
    assert "2 problem(s):" in proc.stdout and "HF_HUB_OFFLINE" in proc.stdout
    assert "ok    tokenizer" in proc.stdout


def test_text_report_shows_the_refused_connection_and_configured_hosts(tmp_path):
    env_hosts = {"GPTOSS_ALLOWED_HOSTS": "mirror.internal"}
    proc = doctor_child(GUARDED, ["--skip-sandbox"], tmp_path, env_hosts)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok    egress guard" in proc.stdout
    assert "allowed hosts: localhost, mirror.internal" in proc.stdout
    assert f"a connection to {PROBE} is refused" in proc.stdout
    assert f"probe: network access to '{PROBE}' is blocked" in proc.stdout
    assert "search index:" in proc.stdout and "bundled model:" in proc.stdout


def test_sandbox_check_starts_a_real_sandbox():
    if python_tool.find_bwrap() is None:
        pytest.skip("bwrap is not installed")
    check = doctor.check_sandbox(skip=False, timeout=30)
    assert check["ok"] is True, check["summary"]
    assert "network interfaces ['lo'] only" in check["summary"] and check["bwrap"]


def test_sandbox_check_fails_without_bwrap(monkeypatch):
    monkeypatch.setattr(python_tool, "find_bwrap", lambda: None)
    check = doctor.check_sandbox(skip=False, timeout=5)
    assert check["ok"] is False and "bubblewrap (bwrap) is not installed" in check["summary"]
    assert "--unsafe-python" in check["summary"]
