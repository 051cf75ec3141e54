"""The ``python`` built-in tool (SPEC §5.2): a persistent interpreter per conversation, sandboxed.

One :class:`PythonTool` is one conversation's notebook kernel: variables, imports and files persist
between calls; a final expression's value is shown as a notebook shows it (``repr``). The kernel
(``sandbox/worker.py``, started by ``sandbox/host.py``) runs inside bubblewrap (``bwrap``):

- its own network, pid, ipc and uts namespaces: no interface but the sandbox's own loopback, no
  other process visible;
- a read-only view of /usr, /lib*, /bin, the Python installation (plus its site-packages) and the
  worker script; nothing of the user's home; a private writable scratch directory at ``/mnt/data``
  that lives as long as the tool (and survives session restarts); a small tmpfs at ``/tmp``;
- limits set with ``setrlimit`` in the kernel process: address space, CPU seconds per session,
  processes (and threads), file size, no core files. Root is exempt from RLIMIT_NPROC, so when
  gptoss runs as root bwrap keeps only CAP_SETUID/CAP_SETGID and the worker switches to an
  unprivileged uid of its own before running anything (and the data directory is handed to that
  uid); otherwise bwrap runs the sandbox in a user namespace (where the kernel counts processes
  per namespace);
- ``--die-with-parent``: the sandbox cannot outlive gptoss.

Each call has a wall-time limit: the call is interrupted (KeyboardInterrupt, then every other
process of the sandbox is killed) and the tool answers ``[ERROR] Timed out after N seconds.``; if
the interpreter does not stop, the session is replaced by a fresh one (files are kept). Output is
stdout, then stderr, then the value or traceback, cut to ``output_limit`` characters with a note,
with harmony control-token literals neutralised.

Without bwrap, or when the sandbox cannot start, the tool refuses (as its output) unless built
with ``unsafe=True`` (``--unsafe-python``), which runs the same worker directly on the host.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from gptoss.tools.base import Tool, ToolCall, neutralize
from gptoss.tools.base import bound as _bound
from gptoss.tools.sandbox.host import (
    SANDBOX_DATA_DIR,
    SandboxError,
    SandboxLimits,
    Session,
    SessionDied,
    find_bwrap,
    seconds,
    site_dirs,
    start_session,
)

__all__ = ["DEFAULT_TIMEOUT", "EMPTY_OUTPUT", "PythonTool", "SandboxLimits", "find_bwrap", "neutralize",
           "sandbox_report"]

DEFAULT_TIMEOUT = 120.0
DEFAULT_OUTPUT_LIMIT = 10_000  # characters the model sees per call
EMPTY_OUTPUT = "[WARN] No output available. Use print() to output anything to stdout to receive the output"
SANDBOX_UID_BASE = 1_900_000_000  # root mode: each tool gets its own uid above this, so limits are per tool
_STOPPED: dict = {"op": "stopped"}  # _result's answer when the user interrupted the call
UNSAFE_HINT = "start gptoss with --unsafe-python to run code without a sandbox"


@dataclass
class _State:
    """What must be cleaned up when the tool goes away (held apart from the tool for weakref.finalize)."""

    data_dir: Path | None = None
    owns_data_dir: bool = False
    session: Session | None = None

    def close(self) -> None:
        if self.session is not None:
            self.session.kill()
            self.session = None
        if self.owns_data_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class PythonTool(Tool):
    """Stateful, sandboxed Python for the model (namespace ``python``; code arrives as raw text).

    Args:
        timeout: wall-time limit of one call in seconds (the contract's 120 by default).
        output_limit: characters of output the model receives per call.
        limits: resource limits of the interpreter.
        data_dir: host directory shown as ``/mnt/data``; a private temporary one (deleted on close)
            when None.
        unsafe: run without bwrap (no isolation: only the resource limits apply).
        bwrap: path of the bwrap binary; found on PATH when None.
        site_packages: also mount the host interpreter's site-packages (read-only), so installed
            libraries such as numpy can be imported.
        interrupt_grace: seconds an interrupted call has to stop before the session is replaced.
        start_timeout: seconds the interpreter has to start.
    """

    namespace = "python"

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT, output_limit: int = DEFAULT_OUTPUT_LIMIT,
                 limits: SandboxLimits | None = None, data_dir: str | os.PathLike | None = None,
                 unsafe: bool = False, bwrap: str | None = None, site_packages: bool = True,
                 interrupt_grace: float = 5.0, start_timeout: float = 30.0) -> None:
        if not timeout > 0:
            raise ValueError(f"python tool timeout must be > 0 seconds, got {timeout}")
        if output_limit < 200:
            raise ValueError(f"python tool output_limit must be >= 200 characters, got {output_limit}")
        self.timeout = float(timeout)
        self.output_limit = int(output_limit)
        self.limits = limits or SandboxLimits()
        self.unsafe = unsafe
        self.bwrap = find_bwrap() if bwrap is None else (bwrap if os.access(bwrap, os.X_OK) else None)
        self.site_packages = site_packages
        self.interrupt_grace = float(interrupt_grace)
        self.start_timeout = float(start_timeout)
        self._root = os.geteuid() == 0
        self._uid = SANDBOX_UID_BASE + secrets.randbelow(100_000_000) if self._root and not unsafe else None
        self._token = secrets.token_hex(8)  # names this tool's processes (tests look for leaks with it)
        self._lock = threading.Lock()
        self._calls = 0
        self._stop = threading.Event()  # interrupt(): the user stopped the running call
        self._state = _State()
        if data_dir is not None:
            self._state.data_dir = Path(data_dir).resolve()
        self._finalizer = weakref.finalize(self, _State.close, self._state)

    # -- what the model is told -------------------------------------------------------------------------

    @property
    def data_path(self) -> str:
        """Where the model finds its files: /mnt/data in the sandbox, the host directory when unsafe."""
        if not self.unsafe:
            return SANDBOX_DATA_DIR
        return str(self._data_dir())

    def instruction(self) -> str:
        """The system message's python description (the trained text, with this tool's real contract)."""
        internet = ("not restricted: this session runs without a sandbox" if self.unsafe else "disabled")
        return ("Use this tool to execute Python code in your chain of thought. The code will not be shown to the "
                "user. This tool should be used for internal reasoning, but not for code that is intended to be "
                "visible to the user (e.g. when creating plots, tables, or files).\n\n"
                "When you send a message containing Python code to python, it will be executed in a stateful "
                "Jupyter notebook environment. python will respond with the output of the execution or time out "
                f"after {self.timeout:.1f} seconds. The drive at '{self.data_path}' can be used to save and persist "
                f"user files. Internet access for this session is {internet}.")

    def unavailable_reason(self) -> str | None:
        """Why calls are refused (no bwrap and not unsafe), or None."""
        if self.unsafe or self.bwrap:
            return None
        return ("The python tool is unavailable: bubblewrap (bwrap) is not installed, and gptoss never runs "
                "model-written code without a sandbox. Install it (Debian/Ubuntu: apt-get install bubblewrap, "
                f"or scripts/setup.sh), or {UNSAFE_HINT}.")

    # -- calls ----------------------------------------------------------------------------------------------

    def _process(self, call: ToolCall) -> str:
        with self._lock:
            if not self._finalizer.alive:
                return "[ERROR] The python tool has been closed."
            problem = self.unavailable_reason()
            if problem:
                return f"[ERROR] {problem}"
            try:
                text = self._run(call.arguments)
            except SandboxError as e:
                hint = "" if self.unsafe else f" If this machine cannot run bwrap sandboxes, {UNSAFE_HINT}."
                text = f"[ERROR] The Python sandbox could not be started: {e}.{hint}"
            return neutralize(_bound(text, self.output_limit))

    def _run(self, code: str) -> str:
        session = self._session()
        self._calls += 1
        call_id = self._calls
        lost = f"variables and imports are lost; files in {self.data_path} are kept"
        self._stop.clear()
        try:
            session.send({"op": "exec", "id": call_id, "code": code})
            msg = self._result(session, call_id, self.timeout, watch_stop=True)
            stopped = msg is _STOPPED
            if msg is None or stopped:
                session.send({"op": "interrupt", "id": call_id})
                msg = self._result(session, call_id, self.interrupt_grace)
                if msg is None:
                    self._drop_session()
                    why = "Interrupted by the user" if stopped else f"Timed out after {seconds(self.timeout)}"
                    return (f"[ERROR] {why}. The Python session did not stop when interrupted and was restarted: "
                            f"{lost}.")
        except SessionDied as e:
            self._drop_session()
            return (f"[ERROR] The Python session ended unexpectedly ({e}); a new one starts with the next call: "
                    f"{lost}.")
        assert isinstance(msg, dict)
        return _format(msg, self.timeout, stopped)

    def _result(self, session: Session, call_id: int, seconds: float, watch_stop: bool = False) -> dict | None:
        """The call's result; None at the deadline; ``_STOPPED`` as soon as :meth:`interrupt` is called."""
        deadline = time.monotonic() + seconds
        while True:
            if watch_stop and self._stop.is_set():
                return _STOPPED
            step = min(deadline, time.monotonic() + 0.1) if watch_stop else deadline
            msg = session.recv(step)
            if msg is None:
                if time.monotonic() >= deadline:
                    return None
                continue
            if msg.get("op") == "result" and msg.get("id") == call_id:
                return msg

    def interrupt(self) -> None:
        """Stop the running call (Ctrl-C in chat), as a timeout would; safe from any thread or a signal
        handler. The model reads ``[ERROR] Interrupted by the user...``; variables and files are kept."""
        self._stop.set()

    def _session(self) -> Session:
        state = self._state
        if state.session is not None and state.session.alive():
            return state.session
        self._drop_session()
        data = self._data_dir()
        config = {
            "session": self._token,
            "capture_chars": self.output_limit,
            "limits": self.limits.rlimits(sandboxed=not self.unsafe),
            "uid": self._uid, "gid": self._uid,
            "site_dirs": site_dirs() if self.site_packages else [],
            "kill_strays": not self.unsafe,
            "cwd": str(data) if self.unsafe else SANDBOX_DATA_DIR,
        }
        state.session = start_session(bwrap=None if self.unsafe else self.bwrap, data=data, limits=self.limits,
                                      config=config, start_timeout=self.start_timeout)
        return state.session

    def _drop_session(self) -> None:
        if self._state.session is not None:
            self._state.session.kill()
            self._state.session = None

    def _data_dir(self) -> Path:
        state = self._state
        if state.data_dir is None:
            state.data_dir = Path(tempfile.mkdtemp(prefix="gptoss-python-"))
            state.owns_data_dir = True
        state.data_dir.mkdir(parents=True, exist_ok=True)
        return state.data_dir

    def restart(self) -> None:
        """End the interpreter; the next call starts a fresh one (files in the data dir are kept)."""
        with self._lock:
            self._drop_session()

    def close(self) -> None:
        """Kill the interpreter and every process it started; delete a temporary data dir."""
        session = self._state.session
        if session is not None:
            session.kill()  # at once, even while a call is running in another thread
        with self._lock:
            self._finalizer()

    def __enter__(self) -> PythonTool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _format(msg: dict, timeout: float, stopped: bool = False) -> str:
    """stdout, then stderr, then the value or the traceback (SPEC §5.2)."""

    def text(key: str) -> str:
        value = msg.get(key)
        return value if isinstance(value, str) else ""

    if msg.get("interrupted") and stopped:
        tail = ["[ERROR] Interrupted by the user; the call was stopped (variables and files are kept)."]
    elif msg.get("interrupted"):
        tail = [f"[ERROR] Timed out after {seconds(timeout)}; the call was interrupted "
                "(variables and files are kept)."]
    else:
        tail = [text("value"), text("error")]
    out = ""
    for part in (text("stdout"), text("stderr"), *tail):
        if part:
            out += ("\n" if out and not out.endswith("\n") else "") + part
    out = out.rstrip("\n")
    return out if out.strip() else EMPTY_OUTPUT


def sandbox_report(timeout: float = 30.0) -> dict:
    """For ``gptoss doctor``: is bwrap there, and does a real sandbox start and isolate the network?"""
    bwrap = find_bwrap()
    report: dict = {"bwrap": bwrap, "bwrap_version": None, "ok": False, "detail": "",
                    "privileges": "root: drops to an unprivileged uid" if os.geteuid() == 0 else "user namespace",
                    "limits": SandboxLimits().__dict__}
    if bwrap is None:
        report["detail"] = ("bubblewrap (bwrap) is not installed: the python tool refuses to run "
                            f"(install bubblewrap, or {UNSAFE_HINT})")
        return report
    try:
        version = subprocess.run([bwrap, "--version"], capture_output=True, text=True, timeout=10)
        report["bwrap_version"] = version.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    probe = "import os, socket\nprint(sorted(n for _, n in socket.if_nameindex()), os.getuid() != 0)"
    with PythonTool(timeout=timeout, bwrap=bwrap, site_packages=False) as tool:
        out = tool.process(ToolCall("python", probe, "analysis"))
    report["ok"] = out == "['lo'] True"
    report["detail"] = ("a sandbox started: network interfaces ['lo'] only, unprivileged user" if report["ok"]
                        else f"a trial sandbox did not behave as expected: {out}")
    return report
