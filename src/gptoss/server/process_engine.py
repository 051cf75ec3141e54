"""The model in its own process: :class:`ProcessEngine`, what ``gptoss serve`` generates with by default.

In one process the engine's decode loop and the HTTP side (request parsing, the harmony parser, SSE framing,
socket writes) share one interpreter lock: every small tensor op the engine runs releases it, an HTTP thread
takes it, and the engine waits for it back. With many concurrent streams the model then spends a third of
each step waiting. Here the model, its continuous batch and the requests' logits processors live in a child
process with an interpreter of its own (started with ``spawn``, so the child holds no copy of the server's
threads or locks); the server keeps only what the :class:`~gptoss.server.engine.Engine` protocol needs.

One pipe carries everything. The server sends ``add`` (prompt, sampling parameters, the request's
constraint spec), ``cancel`` and ``close``; after every step the child sends one message with the token each
sequence sampled and the sequences that left the batch (with their error, cached-prompt count and constraint
notes). A reader thread in the server hands tokens to the waiting requests and, at each step, tells the
child about requests whose clients went away, so a cancelled request frees its row one step later. If the
child dies, every open request fails with an error and later requests are refused.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gptoss.engine.prefix import DEFAULT_MAX_BYTES as DEFAULT_PREFIX_BYTES
from gptoss.engine.sampling import LogitsProcessor, SamplingParams
from gptoss.server.engine import (
    _END,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUE,
    EngineBusy,
    GenerationError,
    _Job,
    _Stream,
    default_threads,
)

log = logging.getLogger("gptoss.server")


class ProcessEngine:
    """A continuous-batching engine in a child process (see the module docstring).

    ``model`` is a checkpoint path; the child loads it (``dtype``, ``device``, ``ops`` as in ``gptoss.load`` and
    ``--ops``) and runs up to ``max_batch`` requests per forward, ``max_queue`` more waiting; beyond that
    :meth:`generate` raises :class:`EngineBusy`. ``threads`` is the child's torch thread count (None: one for a
    small model, every core otherwise). Logits processors must be
    :class:`~gptoss.server.constrain.HarmonyConstraint` objects: the child rebuilds each from its spec.
    """

    def __init__(self, model: str | Path, model_id: str, *, dtype: str = "bfloat16", device: str = "cpu",
                 ops: str = "auto", max_queue: int = DEFAULT_MAX_QUEUE, max_batch: int = DEFAULT_MAX_BATCH,
                 prefill_chunk: int = 512, prefix_cache_bytes: int = DEFAULT_PREFIX_BYTES,
                 threads: int | None = None, start_timeout: float = 600.0) -> None:
        from gptoss.weights.checkpoint import open_checkpoint

        open_checkpoint(model)  # a bad path fails here, in one line, before a process is started
        self.model_id = model_id
        self.max_queue = max(0, max_queue)
        self.max_batch = max(1, max_batch)
        spec = {"model": str(model), "dtype": dtype, "device": device, "ops": ops, "max_batch": self.max_batch,
                "prefill_chunk": prefill_chunk, "prefix_cache_bytes": prefix_cache_bytes, "threads": threads}
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child_main, args=(child, spec), name="gptoss-engine", daemon=True)
        self._proc.start()
        child.close()
        try:
            if not self._conn.poll(start_timeout):
                raise RuntimeError(f"the engine process did not load the model within {start_timeout:.0f} s")
            kind, info = self._conn.recv()
        except (EOFError, OSError):
            kind, info = "failed", f"the engine process exited (status {self._proc.exitcode}) while loading the model"
        except BaseException:
            self._proc.kill()
            raise
        if kind != "ready":
            self._proc.join(10)
            raise ValueError(info)
        self.max_context: int = info["max_context"]
        self.threads: int = info["threads"]
        self._jobs: dict[int, _Job] = {}
        self._next = 0
        self._inflight = 0
        self._lock = threading.Lock()  # jobs, counters
        self._send_lock = threading.Lock()
        self._closed = False
        self._dead: str | None = None
        self._reader = threading.Thread(target=self._read, name="gptoss-engine-reader", daemon=True)
        self._reader.start()

    # -- the Engine protocol -----------------------------------------------------------------------------
    def generate(self, prompt: list[int], params: SamplingParams, logits_processor: LogitsProcessor | None = None,
                 cancel: threading.Event | None = None) -> Iterator[int]:
        from gptoss.server.constrain import HarmonyConstraint

        if self._closed or self._dead:
            raise RuntimeError(self._dead or "the engine is closed")
        if logits_processor is not None and not isinstance(logits_processor, HarmonyConstraint):
            raise TypeError("ProcessEngine runs HarmonyConstraint logits processors only")
        job = _Job(list(prompt), params, logits_processor, cancel)
        with self._lock:
            if self._inflight >= self.max_batch + self.max_queue:
                raise EngineBusy(f"the generation queue is full ({self.max_queue} waiting)")
            self._inflight += 1
            jid = self._next
            self._next += 1
            self._jobs[jid] = job
        spec = None if logits_processor is None else logits_processor.spec
        self._send(("add", jid, job.prompt, params, spec))
        return _Stream(job, self._proc)

    def close(self) -> None:
        """Finish the requests already sent, then stop the child (killed if it does not stop in time)."""
        if self._closed:
            return
        self._closed = True
        self._send(("close",))
        self._reader.join(60)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(10)

    # -- plumbing ------------------------------------------------------------------------------------------
    def _send(self, msg: tuple) -> None:
        try:
            with self._send_lock:
                self._conn.send(msg)
        except (OSError, ValueError):  # the child is gone: the reader fails the open requests
            pass

    def _finish(self, jid: int, error: str | None, cached: int = 0, notes: Sequence[str] = ()) -> None:
        with self._lock:
            job = self._jobs.pop(jid, None)
            if job is None:
                return
            self._inflight -= 1
        job.seq = SimpleNamespace(cached_tokens=cached)
        if notes and job.processor is not None:
            job.processor.notes.extend(notes)  # type: ignore[attr-defined]
        if error is not None:
            job.out.put(GenerationError(error))
        job.out.put(_END)

    def _read(self) -> None:
        cancelled: set[int] = set()
        try:
            while True:
                kind, tokens, finished = self._conn.recv()
                if kind == "closed":
                    return
                for jid, token in tokens:
                    job = self._jobs.get(jid)
                    if job is not None:
                        job.out.put(token)
                for jid, error, cached, notes in finished:
                    self._finish(jid, error, cached, notes)
                    cancelled.discard(jid)
                with self._lock:
                    gone = [jid for jid, job in self._jobs.items() if job.stopped() and jid not in cancelled]
                for jid in gone:  # clients that went away since the last step: their rows free now
                    cancelled.add(jid)
                    self._send(("cancel", jid))
        except (EOFError, OSError):
            pass
        finally:
            if not self._closed:
                self._proc.join(5)  # reaped, so its exit status is known
                self._dead = f"the engine process stopped (exit status {self._proc.exitcode})"
            for jid in list(self._jobs):
                self._finish(jid, self._dead or "the engine is closed")


# -- the child ---------------------------------------------------------------------------------------------
def _child_main(conn: Any, spec: dict) -> None:
    """Load the model, say ``ready`` (or ``failed`` with the reason), then serve the pipe until ``close``."""
    try:
        _child(conn, spec)
    except (EOFError, OSError, KeyboardInterrupt):  # the server went away, or Ctrl-C reached the whole group
        pass


def _child(conn: Any, spec: dict) -> None:
    from gptoss import guard

    guard.set_offline_env()
    guard.install()
    try:
        import torch

        from gptoss import ops
        from gptoss.api import Model
        from gptoss.engine.continuous import ContinuousBatch

        ops.select_backend(spec["ops"], device=spec["device"])
        model = Model.load(spec["model"], dtype=spec["dtype"], device=spec["device"])
        threads = spec["threads"] or default_threads(model.transformer)
        torch.set_num_threads(threads)
        batch = ContinuousBatch(model.transformer, spec["prefill_chunk"], spec["prefix_cache_bytes"])
        cfg = model.config
        conn.send(("ready", {"max_context": int(cfg.initial_context_length * cfg.rope_scaling_factor),
                             "threads": threads}))
    except Exception as e:
        conn.send(("failed", str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"))
        return
    _serve(conn, batch, spec["max_batch"])


def _serve(conn: Any, batch: Any, max_batch: int) -> None:
    from gptoss.server.constrain import HarmonyConstraint

    waiting: deque[tuple[int, list[int], SamplingParams, Any]] = deque()
    procs: dict[int, Any] = {}
    errors: dict[int, str] = {}
    closing = False
    while True:
        finished: list[tuple[int, str | None, int, list[str]]] = []
        idle = batch.idle and not waiting
        if idle and closing:
            conn.send(("closed", [], []))
            return
        msgs = [conn.recv()] if idle else []  # nothing to run: wait for the server
        while conn.poll():
            msgs.append(conn.recv())
        for msg in msgs:
            if msg[0] == "add":
                waiting.append(msg[1:])
            elif msg[0] == "cancel":
                jid = msg[1]
                for seq in batch.all_sequences():
                    if seq.tag == jid:
                        batch.drop(seq)  # leaves at the next step, which reports it finished
                if any(w[0] == jid for w in waiting):
                    waiting = deque(w for w in waiting if w[0] != jid)
                    finished.append((jid, None, 0, []))
            elif msg[0] == "close":
                closing = True
        while waiting and len(batch) < max_batch:
            jid, prompt, params, cspec = waiting.popleft()
            try:
                proc = _guarded(jid, HarmonyConstraint(cspec), errors, batch) if cspec is not None else None
                procs[jid] = proc
                batch.add(prompt, params, proc, jid)
            except Exception as e:  # a bad prompt or constraint fails only its request
                procs.pop(jid, None)
                finished.append((jid, f"generation failed: {type(e).__name__}: {e}", 0, []))
        tokens: list[tuple[int, int]] = []
        if not batch.idle:
            before = batch.all_sequences()
            try:
                events = batch.advance()
            except Exception as e:  # reported to the requests in the batch; the child goes on
                log.exception("generation failed")
                events = []
                for seq in batch.reset():
                    errors.setdefault(seq.tag, f"generation failed: {type(e).__name__}: {e}")
            tokens = [(ev.seq.tag, ev.token) for ev in events]
            still = {id(s) for s in batch.all_sequences()}
            for seq in before:
                if id(seq) not in still:
                    proc = procs.pop(seq.tag, None)
                    notes = list(proc.constraint.notes) if proc is not None else []
                    finished.append((seq.tag, errors.pop(seq.tag, None), seq.cached_tokens, notes))
        if tokens or finished:
            conn.send(("step", tokens, finished))


class _guarded:
    """A request's constraint; if it raises, only that row stops (with the error), the batch goes on."""

    def __init__(self, jid: int, constraint: Any, errors: dict[int, str], batch: Any) -> None:
        self.jid, self.constraint, self.errors, self.batch = jid, constraint, errors, batch

    def __call__(self, tokens: Sequence[int], logits: Any) -> Any:
        if self.jid not in self.errors:
            try:
                return self.constraint(tokens, logits)
            except Exception as e:
                log.exception("logits processor failed")
                self.errors[self.jid] = f"generation failed: {type(e).__name__}: {e}"
                for seq in self.batch.all_sequences():
                    if seq.tag == self.jid:
                        seq.dropped = True  # no token is sampled from the unprocessed logits
        return logits
