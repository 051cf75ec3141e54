"""The host side of the python tool's sandbox: start the worker (in bwrap, or bare when unsafe),
exchange frames with it, end it with everything it started.

The bwrap command line is built here: new network, pid, ipc, uts (and cgroup) namespaces;
read-only binds of /usr, /lib*, /bin, a few /etc files for the dynamic linker, the Python
installation and its site-packages, and the worker script; the data directory read-write at
/mnt/data; size-limited tmpfs on /tmp and /dev/shm; the root remounted read-only; an empty
environment. As root, bwrap keeps only CAP_SETUID/CAP_SETGID so the worker can switch to its
unprivileged uid (root is exempt from RLIMIT_NPROC); otherwise the sandbox is a user namespace
that may not create further ones.
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import site
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from gptoss.guard import OFFLINE_ENV
from gptoss.tools.sandbox import WORKER

__all__ = ["SANDBOX_DATA_DIR", "SandboxError", "SandboxLimits", "Session", "SessionDied", "find_bwrap",
           "seconds", "site_dirs", "start_session"]

SANDBOX_DATA_DIR = "/mnt/data"
SANDBOX_WORKER = "/opt/gptoss/worker.py"
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_FRAME = 64 << 20
_HEADER = struct.Struct(">I")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of the sandboxed interpreter (``setrlimit`` in the worker process)."""

    memory_bytes: int = 4 << 30  # RLIMIT_AS of each process
    cpu_seconds: int = 3600  # RLIMIT_CPU: CPU time of the whole session (then it is restarted)
    max_processes: int = 128  # RLIMIT_NPROC: processes and threads of the sandbox user
    file_bytes: int = 1 << 30  # RLIMIT_FSIZE: largest file that can be written
    tmp_bytes: int = 256 << 20  # size of the /tmp and /dev/shm tmpfs
    threads: int = 4  # OMP/BLAS thread count suggested through the environment

    def rlimits(self, sandboxed: bool) -> dict[str, list[int]]:
        out = {
            "RLIMIT_AS": [self.memory_bytes, self.memory_bytes],
            # soft < hard: the kernel sends SIGXCPU at the soft limit, so a crash names its cause
            "RLIMIT_CPU": [self.cpu_seconds, self.cpu_seconds + 1],
            "RLIMIT_FSIZE": [self.file_bytes, self.file_bytes],
            "RLIMIT_CORE": [0, 0],
        }
        if sandboxed:  # unsandboxed, RLIMIT_NPROC would count every process of the user
            out["RLIMIT_NPROC"] = [self.max_processes, self.max_processes]
        return out


def find_bwrap() -> str | None:
    """Path of the bubblewrap binary, or None."""
    return shutil.which("bwrap")


class SandboxError(RuntimeError):
    """The sandbox could not be created."""


class SessionDied(Exception):
    """The interpreter process ended or broke the protocol."""


def seconds(value: float) -> str:
    return f"{value:g} second{'' if value == 1 else 's'}"


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class _Spawner:
    """Starts processes from one long-lived thread. bwrap's ``--die-with-parent`` is a parent-death
    signal, and Linux sends it when the *thread* that forked bwrap ends: a sandbox started from a
    short-lived request thread (a server's worker pool) would be killed with it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="gptoss-sandbox-spawner", daemon=True)
                self._thread.start()
        reply: queue.SimpleQueue = queue.SimpleQueue()
        self._requests.put((args, kwargs, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            args, kwargs, reply = self._requests.get()
            try:
                reply.put((True, subprocess.Popen(*args, **kwargs)))
            except BaseException as e:  # handed to the caller's thread
                reply.put((False, e))


_spawner = _Spawner()


class Session:
    """One running interpreter (bwrap + worker, or the bare worker) and its frame protocol."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, cpu_seconds: int, start_timeout: float,
                 info_fd: tuple[int, int] | None = None) -> None:
        self.cpu_seconds = cpu_seconds
        self.log = tempfile.TemporaryFile(prefix="gptoss-sandbox-")  # bwrap's own messages
        self._buf = bytearray()
        try:
            self.proc = _spawner.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                       env=env, cwd=cwd, start_new_session=True, bufsize=0,
                                       pass_fds=(info_fd[1],) if info_fd else ())
        except OSError as e:
            self.log.close()
            if info_fd:
                os.close(info_fd[0])
            raise SandboxError(f"could not run {argv[0]}: {e.strerror or e}") from None
        finally:
            if info_fd:
                os.close(info_fd[1])
        deadline = time.monotonic() + start_timeout
        # the sandbox's pid 1 as the host sees it: bwrap reports it before starting the worker
        self.child_pid = self._read_info(info_fd[0], deadline) if info_fd else None
        self._finalizer = weakref.finalize(self, Session._kill, self.proc, self.log, self.child_pid)
        try:
            ready = self.recv(deadline)
            reason = f"no answer within {seconds(start_timeout)}"
        except SessionDied as e:
            ready, reason = None, str(e)
        if ready is None or ready.get("op") != "ready":
            detail = self.stderr_tail()
            self.kill()
            raise SandboxError(f"{reason}{': ' + detail if detail else ''}")
        self.ready = ready

    @staticmethod
    def _read_info(fd: int, deadline: float) -> int | None:
        data = b""
        try:
            while select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                data += chunk
                if data.rstrip().endswith(b"}"):
                    break
            pid = json.loads(data or b"{}").get("child-pid")
            return pid if isinstance(pid, int) and pid > 1 else None
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            self.log.seek(0)
            return self.log.read()[-limit:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            return ""

    def send(self, obj: dict) -> None:
        body = json.dumps(obj).encode("utf-8")
        data = _HEADER.pack(len(body)) + body
        try:
            fd = self.proc.stdin.fileno()
            while data:
                data = data[os.write(fd, data):]
        except (OSError, ValueError):
            raise SessionDied(self.exit_reason()) from None

    def recv(self, deadline: float) -> dict | None:
        """The next frame, or None at the deadline."""
        fd = self.proc.stdout.fileno()
        while True:
            if len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if size > MAX_FRAME:
                    raise SessionDied("protocol error: oversized message")
                if len(self._buf) >= _HEADER.size + size:
                    body = bytes(self._buf[_HEADER.size:_HEADER.size + size])
                    del self._buf[:_HEADER.size + size]
                    try:
                        msg = json.loads(body)
                    except ValueError:
                        raise SessionDied("protocol error: malformed message") from None
                    if not isinstance(msg, dict):
                        raise SessionDied("protocol error: malformed message")
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([fd], [], [], left)[0]:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise SessionDied(self.exit_reason())
            self._buf += chunk

    def exit_reason(self) -> str:
        try:
            rc = self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            return "it stopped answering"
        sig = -rc if rc < 0 else rc - 128 if rc > 128 else 0
        if sig == signal.SIGXCPU:
            return f"it used up its CPU time limit of {seconds(self.cpu_seconds)}"
        if sig == signal.SIGKILL:
            return "it was killed (SIGKILL: out of memory or a limit)"
        if sig:
            return f"it was killed by {_signal_name(sig)}"
        return f"it exited with status {rc}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self._finalizer()

    @staticmethod
    def _kill(proc: subprocess.Popen, log, child_pid: int | None) -> None:
        # Killing the sandbox's pid 1 takes its whole pid namespace with it, and bwrap exits (having
        # reaped it) right after; the process group catches the unsandboxed worker and its children.
        if proc.poll() is None and child_pid:
            try:
                os.kill(child_pid, signal.SIGKILL)
                proc.wait(timeout=5)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (proc.stdin, proc.stdout, log):
            try:
                f.close()
            except (OSError, AttributeError):
                pass


def _base_env(limits: SandboxLimits) -> dict[str, str]:
    threads = str(max(1, limits.threads))
    return {
        "LANG": "C.UTF-8", "USER": "sandbox", "LOGNAME": "sandbox", "TERM": "dumb", "MPLBACKEND": "Agg",
        **{k: threads for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")},
        **OFFLINE_ENV,
    }


def site_dirs() -> list[str]:
    return [os.path.realpath(p) for p in site.getsitepackages() if os.path.isdir(p)]


def _python_roots(python: str) -> list[str]:
    """Directories that hold the interpreter: its prefix, and where the binary and libpython live."""
    roots = [os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix),
             os.path.dirname(python)]
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        roots.append(os.path.realpath(libdir))
    return roots


class _Mounts:
    """bwrap mount arguments; parent directories are created world-readable (bwrap would copy the
    host's modes, and a 0700 home on the way to the Python installation locks the sandbox user out)."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.bound: list[str] = []
        self.dirs: set[str] = set()

    def covered(self, path: str) -> bool:
        return any(path == b or path.startswith(b.rstrip("/") + "/") for b in self.bound)

    def dir(self, path: str, perms: str = "0755") -> None:
        parts = Path(path).parts
        for i in range(2, len(parts) + 1):
            d = str(Path(*parts[:i]))
            if d not in self.dirs and not self.covered(d):
                self.args += ["--perms", perms, "--dir", d]
                self.dirs.add(d)

    def bind(self, src: str, dest: str | None = None, kind: str = "--ro-bind") -> None:
        dest = dest or src
        if self.covered(dest):
            return
        self.dir(str(Path(dest).parent))
        self.args += [kind, src, dest]
        self.bound.append(dest)


def _bwrap_argv(bwrap: str, python: str, data: Path, limits: SandboxLimits, root: bool, info_fd: int,
                config: str) -> list[str]:
    args = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox", "--info-fd", str(info_fd)]
    if root:  # keep only what the worker needs to switch to its unprivileged uid
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns"]
    m = _Mounts()
    m.bind("/usr")
    for name in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(name):
            m.args += ["--symlink", os.readlink(name), name]
        elif os.path.isdir(name):
            m.bind(name)
    for path in _ETC_FILES:
        if os.path.exists(path):
            m.bind(path)
    for path in _python_roots(python):
        if os.path.isdir(path):
            m.bind(path)
    for path in site_dirs():
        m.bind(path)
    m.bind(str(WORKER), SANDBOX_WORKER)
    m.bind(str(data), SANDBOX_DATA_DIR, kind="--bind")
    args += m.args
    args += ["--proc", "/proc", "--dev", "/dev"]
    for tmp in ("/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--size", str(limits.tmp_bytes), "--tmpfs", tmp]
    # the worker enters /mnt/data itself: as root, bwrap has dropped the capability to enter a
    # directory owned by the sandbox user
    args += ["--remount-ro", "/", "--chdir", "/", "--clearenv"]
    env = {**_base_env(limits), "PATH": SANDBOX_PATH, "HOME": "/tmp", "TMPDIR": "/tmp"}
    for key, value in env.items():
        args += ["--setenv", key, value]
    return [*args, "--", python, "-I", "-S", "-B", SANDBOX_WORKER, config]


def _chown_tree(path: Path, uid: int) -> None:
    """Root mode: the sandbox user must own its data dir (and what an earlier session wrote there)."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)):
            try:
                os.lchown(name, uid, uid)
            except OSError:
                pass


def start_session(*, bwrap: str | None, data: Path, limits: SandboxLimits, config: dict,
                  start_timeout: float) -> Session:
    """Start the worker: in bwrap, or (``bwrap=None``: unsafe) directly on the host, in ``data``.
    ``config`` is the worker's configuration; its ``uid`` (root mode) becomes the owner of ``data``."""
    python = os.path.realpath(sys.executable)
    if config.get("uid") is not None:
        _chown_tree(data, config["uid"])
    if bwrap is None:
        env = {**_base_env(limits), "PATH": os.environ.get("PATH", SANDBOX_PATH),
               "HOME": os.path.expanduser("~"), "TMPDIR": tempfile.gettempdir()}
        argv = [python, "-I", "-S", "-B", str(WORKER), json.dumps(config)]
        return Session(argv, env, str(data), limits.cpu_seconds, start_timeout)
    info = os.pipe()
    argv = _bwrap_argv(bwrap, python, data, limits, os.geteuid() == 0, info[1], json.dumps(config))
    return Session(argv, {"PATH": os.environ.get("PATH", SANDBOX_PATH)}, "/", limits.cpu_seconds, start_timeout,
                   info_fd=info)
