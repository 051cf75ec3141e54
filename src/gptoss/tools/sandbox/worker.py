"""The python tool's persistent interpreter, run inside the sandbox (stdlib only, never imports gptoss).

Started as ``python -I -S -B worker.py CONFIG_JSON``. It talks to the host over the stdin/stdout it
was started with, in frames of a 4-byte big-endian length and UTF-8 JSON:

- host -> worker: ``{"op": "exec", "id": N, "code": "..."}``, ``{"op": "interrupt", "id": N}``;
- worker -> host: ``{"op": "ready", ...}`` once, then one ``{"op": "result", "id": N, "stdout": ...,
  "stderr": ..., "value": ..., "error": ..., "interrupted": ...}`` per ``exec``.

Code runs in one namespace that lives as long as the process, like a notebook kernel. Output is
captured at the file-descriptor level (subprocess output too) by reader threads that keep only the
head and tail of each stream, so memory stays bounded however much is printed. End of stdin means
the host is gone: the worker exits at once.
"""

import ast
import builtins
import codecs
import io
import json
import linecache
import os
import queue
import resource
import signal
import site
import struct
import sys
import threading
import time
import traceback

HEADER = struct.Struct(">I")
MAX_FRAME = 64 << 20
MARK_WAIT = 2.0  # seconds to wait for the reader threads to drain a call's output


class Channel:
    """Length-prefixed JSON frames over two file descriptors."""

    def __init__(self, rfd, wfd):
        self.rfd, self.wfd = rfd, wfd
        self.lock = threading.Lock()

    def _read_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(self.rfd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def recv(self):
        head = self._read_exact(HEADER.size)
        if head is None:
            return None
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            return None
        body = self._read_exact(size)
        return None if body is None else json.loads(body)

    def send(self, obj):
        body = json.dumps(obj).encode("utf-8")
        with self.lock:
            data = HEADER.pack(len(body)) + body
            while data:
                data = data[os.write(self.wfd, data):]


class Capture:
    """Redirects file descriptor ``fd`` into a pipe drained by a thread that keeps the first and last
    ``half`` characters of each call's output. A per-call random marker written after the call ends
    tells the thread where that call's output stops."""

    def __init__(self, fd, half):
        self.half = half
        r, w = os.pipe()
        os.dup2(w, fd)  # inheritable: subprocesses write here too
        self.w = os.dup(w)  # our own end, still ours if user code redirects fd
        os.close(w)
        self.r = r
        self.cond = threading.Condition()
        self.marker = None
        self.done = False
        self.carry = b""
        self._reset()
        threading.Thread(target=self._drain, name=f"capture-{fd}", daemon=True).start()

    def _reset(self):
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.head, self.tail, self.total = "", "", 0

    def _text(self, text):
        self.total += len(text)
        room = self.half - len(self.head)
        if room > 0:
            self.head += text[:room]
            text = text[room:]
        if text:
            self.tail = (self.tail + text)[-self.half:]

    def _drain(self):
        while True:
            data = os.read(self.r, 1 << 16)
            if not data:
                return
            with self.cond:
                buf = self.carry + data
                marker = self.marker
                at = buf.find(marker) if marker else -1
                if at >= 0:
                    self._text(self.decoder.decode(buf[:at], final=True))
                    self.carry = buf[at + len(marker):]
                    self.marker, self.done = None, True
                    self.cond.notify_all()
                else:
                    cut = max(0, len(buf) - len(marker) + 1) if marker else len(buf)
                    self._text(self.decoder.decode(buf[:cut]))
                    self.carry = buf[cut:]

    def start(self):
        with self.cond:
            self._reset()
            carry, self.carry = self.carry, b""
            self._text(self.decoder.decode(carry))

    def finish(self):
        """This call's output: head, a note with the count of characters left out, tail."""
        marker = b"\x00gptoss-end-" + os.urandom(12).hex().encode() + b"\x00"
        with self.cond:
            self.marker, self.done = marker, False
        os.write(self.w, marker)
        with self.cond:
            self.cond.wait_for(lambda: self.done, MARK_WAIT)
            self.marker = None
            omitted = self.total - len(self.head) - len(self.tail)
            note = f"\n[... {omitted} characters of output omitted ...]\n" if omitted > 0 else ""
            return self.head + note + self.tail


def text_stream(fd):
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="backslashreplace", line_buffering=True,
                            write_through=True)


def apply_limits(limits):
    """``{"RLIMIT_AS": [soft, hard], ...}``, never above the limits already in force."""
    for name, (soft, hard) in limits.items():
        which = getattr(resource, name)
        _, current = resource.getrlimit(which)
        if current != resource.RLIM_INFINITY:
            soft, hard = min(soft, current), min(hard, current)
        resource.setrlimit(which, (soft, hard))


def drop_privileges(uid, gid):
    """Run as an unprivileged user: root is exempt from RLIMIT_NPROC and may write anything."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise SystemExit("sandbox: could not drop privileges")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SystemExit("sandbox: privileges were not dropped")


class Kernel:
    def __init__(self, cfg, channel):
        self.cfg = cfg
        self.channel = channel
        self.pid = os.getpid()
        self.main_thread = threading.get_ident()
        self.ns = {"__name__": "__main__", "__builtins__": builtins}
        self.count = 0
        self.running = None  # id of the call being run
        self.interrupt_for = None
        self.requests = queue.SimpleQueue()
        half = max(64, int(cfg["capture_chars"]) // 3)  # head + tail of one stream fit in the limit
        self.out = Capture(1, half)
        self.err = Capture(2, half)
        self.stdout = sys.stdout = sys.__stdout__ = text_stream(1)
        self.stderr = sys.stderr = sys.__stderr__ = text_stream(2)
        signal.signal(signal.SIGINT, self.on_sigint)

    def on_sigint(self, signum, frame):
        if self.running is not None:  # an interrupt that arrives between calls is dropped
            raise KeyboardInterrupt

    def listen(self):
        """Reader thread: queue calls, deliver interrupts, exit when the host goes away."""
        while True:
            try:
                msg = self.channel.recv()
            except (OSError, ValueError):
                msg = None
            if msg is None:
                os._exit(0)
            if msg.get("op") == "exec":
                self.requests.put(msg)
            elif msg.get("op") == "interrupt" and msg.get("id") is not None and msg.get("id") == self.running:
                self.interrupt_for = msg["id"]
                signal.pthread_kill(self.main_thread, signal.SIGINT)

    def serve(self):
        while True:
            msg = self.requests.get()
            self.channel.send(self.execute(msg.get("id"), str(msg.get("code", ""))))

    def run(self, code, filename):
        """Run a cell; return the repr of a final expression's value (None when there is none)."""
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, filename, "exec"), self.ns)
        if last is None:
            return None
        value = eval(compile(last, filename, "eval"), self.ns)
        if value is None:
            return None
        self.ns["_"] = value
        try:
            text = repr(value)
        except Exception as e:
            text = f"<repr() failed: {type(e).__name__}: {e}>"
        return clip(text, int(self.cfg["capture_chars"]))

    def execute(self, call_id, code):
        self.count += 1
        filename = f"<cell-{self.count}>"
        self.out.start()
        self.err.start()
        value = error = None
        self.interrupt_for = None
        signal.signal(signal.SIGINT, self.on_sigint)  # the previous cell may have replaced it
        self.running = call_id
        try:
            try:
                value = self.run(code, filename)
            finally:
                self.running = None
        except BaseException as e:  # the cell's exception, KeyboardInterrupt and SystemExit included
            error = e
        if os.getpid() != self.pid:  # a process the cell forked fell through to here: it ends now
            self.flush()
            os._exit(1 if error is not None else 0)
        interrupted = isinstance(error, KeyboardInterrupt) and self.interrupt_for == call_id
        if interrupted:
            self.kill_strays()
        if error is not None:
            self.reap(wait=interrupted)
        self.flush()
        return {
            "op": "result", "id": call_id,
            "stdout": self.out.finish(), "stderr": self.err.finish(),
            "value": value,
            "error": None if error is None else clip(format_error(error), int(self.cfg["capture_chars"])),
            "interrupted": interrupted,
        }

    def flush(self):
        for stream in {id(s): s for s in (sys.stdout, sys.stderr, self.stdout, self.stderr)}.values():
            try:
                stream.flush()
            except Exception:
                pass

    def kill_strays(self):
        """After an interrupt, end every other process of the sandbox (a fork bomb's children, a
        hung subprocess). Only inside the sandbox's own pid namespace, where this process is pid
        1 or 2: kill(-1) anywhere else would hit the user's processes."""
        if not self.cfg.get("kill_strays") or os.getpid() > 2:
            return
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass

    def reap(self, wait):
        """Collect exited children (a fork bomb's) so zombies do not count against the process
        limit; with ``wait``, give the processes just killed up to a second to become zombies."""
        deadline = time.monotonic() + (1.0 if wait else 0.0)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.01)


def clip(text, cap):
    """The first and last thirds of ``cap`` characters, with a note of what was left out."""
    if len(text) <= cap:
        return text
    keep = cap // 3
    return f"{text[:keep]}\n[... {len(text) - 2 * keep} characters omitted ...]\n{text[-keep:]}"


def format_error(error):
    """The traceback from the first frame of the cell on, as a notebook shows it (a syntax error in
    the cell itself has no frames of its own: only the error is shown)."""
    tb = error.__traceback__
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(error), error, tb))


def main():
    cfg = json.loads(sys.argv[1])
    channel = Channel(os.dup(0), os.dup(1))  # dup() is non-inheritable: user subprocesses never see them
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)  # nothing may write into the protocol before the capture pipes take fd 1
    os.close(null)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # too-large writes fail with EFBIG instead of killing us
    apply_limits(cfg.get("limits", {}))
    if cfg.get("uid") is not None and os.getuid() == 0:
        drop_privileges(int(cfg["uid"]), int(cfg["gid"]))
    os.chdir(cfg.get("cwd") or ".")
    for path in cfg.get("site_dirs", []):
        site.addsitedir(path)
    kernel = Kernel(cfg, channel)
    threading.Thread(target=kernel.listen, name="listen", daemon=True).start()
    channel.send({"op": "ready", "pid": os.getpid(), "uid": os.getuid(), "python": sys.version.split()[0]})
    kernel.serve()


if __name__ == "__main__":
    main()
