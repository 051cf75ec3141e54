"""What the server generates with: a small :class:`Engine` protocol and two implementations.

- :class:`ModelEngine` owns a loaded model and one worker thread running a continuous batch
  (:mod:`gptoss.engine.continuous`): requests join the running decode steps as they arrive and leave
  when done; a cancelled request (client gone, stop string hit) leaves at the next step and frees its
  row. Past ``max_batch`` running plus ``max_queue`` waiting, requests are refused (:class:`EngineBusy`,
  HTTP 429).
- :class:`StubEngine` replays scripted harmony completions, for tests. Given a logits processor it
  behaves like a model that *proposes* the scripted token: the token is kept when the processor
  allows it, otherwise a seeded random allowed token is taken, so grammar enforcement is testable.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from gptoss.engine.continuous import ContinuousBatch
from gptoss.engine.prefix import DEFAULT_MAX_BYTES as DEFAULT_PREFIX_BYTES
from gptoss.engine.sampling import LogitsProcessor, SamplingParams
from gptoss.tokenizer import SPECIAL_TOKENS, VOCAB_SIZE

log = logging.getLogger("gptoss.server")

DEFAULT_MAX_QUEUE = 8
DEFAULT_MAX_BATCH = 8


class EngineBusy(RuntimeError):
    """The request queue is full."""


class GenerationError(RuntimeError):
    """A generation failed; the message already says how (raised as it is by the token stream)."""


SMALL_MODEL_BYTES = 64 * 2**20


def default_threads(model: torch.nn.Module) -> int:
    """1 for a small model (thread start-up and sync cost more than its matrix products), else every core."""
    import os

    size = sum(t.nbytes for t in model.parameters()) + sum(t.nbytes for t in model.buffers())
    return 1 if size < SMALL_MODEL_BYTES else (os.cpu_count() or 1)


class Engine(Protocol):
    model_id: str
    max_context: int  # prompt + completion tokens one sequence may hold

    def generate(self, prompt: list[int], params: SamplingParams, logits_processor: LogitsProcessor | None = None,
                 cancel: threading.Event | None = None) -> Iterator[int]:
        """Sampled token ids, ending with the stop token if one was sampled. Raises :class:`EngineBusy` at
        call time when the queue is full."""
        ...

    def close(self) -> None: ...


_END = object()


@dataclass
class _Job:
    prompt: list[int]
    params: SamplingParams
    processor: LogitsProcessor | None
    cancel: threading.Event | None
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    stop: threading.Event = field(default_factory=threading.Event)  # the consumer went away
    error: Exception | None = None  # its logits processor failed
    seq: Any = None  # its row in the batch, once admitted

    def stopped(self) -> bool:
        return self.stop.is_set() or (self.cancel is not None and self.cancel.is_set())


class _Stream:
    """The token iterator :meth:`ModelEngine.generate` returns; ``cached_tokens`` (prompt tokens the batch
    took from its prefix cache) is known once the request has been admitted."""

    def __init__(self, job: _Job, worker: threading.Thread) -> None:
        self.job = job
        self._it = _drain(job, worker)

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> int:
        return next(self._it)

    def close(self) -> None:
        self._it.close()
        self.job.stop.set()  # also when it was never started: the worker drops the job

    @property
    def cached_tokens(self) -> int:
        seq = self.job.seq
        return seq.cached_tokens if seq is not None else 0


def _drain(job: _Job, worker: threading.Thread) -> Iterator[int]:
    try:
        while True:
            try:
                item = job.out.get(timeout=1.0)
            except queue.Empty:
                if worker.is_alive():
                    continue
                raise RuntimeError("the engine worker has stopped") from None
            if item is _END:
                return
            if isinstance(item, GenerationError):
                raise item
            if isinstance(item, BaseException):
                raise RuntimeError(f"generation failed: {type(item).__name__}: {item}") from item
            yield item
    finally:
        job.stop.set()  # early close (GeneratorExit) stops the worker at its next token


class ModelEngine:
    """A transformer behind one worker thread running a continuous batch, and a bounded admission count.

    Requests join the running batch between decode steps (their prompts prefilled in chunks between
    steps) and leave it when they finish or are cancelled, so up to ``max_batch`` requests share each
    forward pass -- rows of different lengths, each with its own sampling and logits processor. Requests
    beyond ``max_batch`` wait; beyond ``max_batch + max_queue`` they are refused (:class:`EngineBusy`).
    """

    def __init__(self, model, model_id: str, max_queue: int = DEFAULT_MAX_QUEUE,
                 max_batch: int = DEFAULT_MAX_BATCH, prefill_chunk: int = 512,
                 prefix_cache_bytes: int = DEFAULT_PREFIX_BYTES, threads: int | None = None) -> None:
        self.model = model  # gptoss.model.transformer.Transformer
        self.model_id = model_id
        cfg = model.config
        self.max_context = int(cfg.initial_context_length * cfg.rope_scaling_factor)
        self.max_queue = max(0, max_queue)
        self.max_batch = max(1, max_batch)
        self.batch = ContinuousBatch(model, prefill_chunk, prefix_cache_bytes)
        self.threads = threads  # torch intra-op threads of the worker (None: the process default)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._inflight = 0  # waiting + running
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = False  # the worker saw close()
        self._thread = threading.Thread(target=self._work, name="gptoss-engine", daemon=True)
        self._thread.start()

    @property
    def step_sizes(self) -> list[int]:
        """Rows in each decode forward so far (observability, tests)."""
        return self.batch.step_sizes

    def generate(self, prompt: list[int], params: SamplingParams, logits_processor: LogitsProcessor | None = None,
                 cancel: threading.Event | None = None) -> Iterator[int]:
        if self._closed:
            raise RuntimeError("the engine is closed")
        job = _Job(list(prompt), params, logits_processor, cancel)
        with self._lock:
            if self._inflight >= self.max_batch + self.max_queue:
                raise EngineBusy(f"the generation queue is full ({self.max_queue} waiting)")
            self._inflight += 1
        self._jobs.put(job)
        return _Stream(job, self._thread)

    def _finish(self, job: _Job, error: BaseException | None = None) -> None:
        with self._lock:
            self._inflight -= 1
        if error is None:
            error = job.error
        if error is not None:
            job.out.put(error)
        job.out.put(_END)

    def _admit(self, block: bool) -> None:
        """Move waiting jobs into the batch while it has room (waiting up to 0.5 s for one if ``block``)."""
        while len(self.batch) < self.max_batch:
            try:
                job = self._jobs.get(timeout=0.5) if block else self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is None:
                self._stopping = True
                return
            block = False
            if job.stopped():
                self._finish(job)
                continue
            try:
                job.seq = self.batch.add(job.prompt, job.params, _guarded(job), job)
            except Exception as e:  # a bad prompt fails only its request
                self._finish(job, e)

    def _work(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # set in the thread that runs the model
        while True:
            self._admit(block=self.batch.idle and not self._stopping)
            if self.batch.idle:
                if self._stopping and self._jobs.empty():
                    return
                continue
            before = self.batch.all_sequences()
            for seq in before:
                if seq.tag.stopped():
                    self.batch.drop(seq)  # client gone or stop string hit: its slot frees now
            try:
                events = self.batch.advance()
            except Exception as e:  # reported to the requests in the batch, never kills the worker
                log.exception("generation failed")
                for seq in self.batch.reset():
                    self._finish(seq.tag, e)
                continue
            for ev in events:
                ev.seq.tag.out.put(ev.token)
            still = {id(s) for s in self.batch.all_sequences()}
            for seq in before:
                if id(seq) not in still:  # finished, cancelled or failed: it left the batch
                    self._finish(seq.tag)

    def close(self) -> None:
        """Stop the worker after the jobs already admitted or queued."""
        if not self._closed:
            self._closed = True
            self._jobs.put(None)


def _guarded(job: _Job) -> LogitsProcessor | None:
    """The job's processor; if it raises, only that row stops (with the error), the batch goes on."""
    proc = job.processor
    if proc is None:
        return None

    def run(tokens: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if job.error is None:
            try:
                return proc(tokens, logits)
            except Exception as e:
                log.exception("logits processor failed")
                job.error = e
                job.stop.set()
                if job.seq is not None:
                    job.seq.dropped = True  # no token is sampled from the unprocessed logits
        return logits

    return run


def _encode(completion: str | Sequence[int]) -> list[int]:
    if isinstance(completion, str):
        from gptoss.harmony.render import harmony_encoding

        return harmony_encoding().encode(completion, allowed_special="all")
    return [int(t) for t in completion]


_FINISH_BIAS = [SPECIAL_TOKENS[t] for t in ("<|end|>", "<|call|>", "<|return|>")]


class StubEngine:
    """Replays scripted completions (harmony text with control tokens, or token ids), one per call; the
    last one repeats. ``delay`` sleeps before each token; ``gate`` (if given) must be set before any
    token comes out. Records ``prompts``, ``params`` and how many generations were ``cancelled``."""

    def __init__(self, completions: Sequence[str | Sequence[int]] = (), *, model_id: str = "m",
                 max_context: int = 131072, delay: float = 0.0, gate: threading.Event | None = None,
                 seed: int = 0) -> None:
        self.scripts = [_encode(c) for c in completions] or [_encode("<|channel|>final<|message|>Hi.<|return|>")]
        self.model_id = model_id
        self.max_context = max_context
        self.delay = delay
        self.gate = gate
        self.seed = seed
        self.prompts: list[list[int]] = []
        self.params: list[SamplingParams] = []
        self.processors: list[LogitsProcessor | None] = []
        self.cancelled = 0
        self._lock = threading.Lock()

    def generate(self, prompt: list[int], params: SamplingParams, logits_processor: LogitsProcessor | None = None,
                 cancel: threading.Event | None = None) -> Iterator[int]:
        with self._lock:
            n = len(self.prompts)
            self.prompts.append(list(prompt))
            self.params.append(params)
            self.processors.append(logits_processor)
        script = self.scripts[min(n, len(self.scripts) - 1)]
        return self._run(script, params, logits_processor, cancel, self.seed + n)

    def _run(self, script: list[int], params: SamplingParams, proc: LogitsProcessor | None,
             cancel: threading.Event | None, seed: int) -> Iterator[int]:
        gen = torch.Generator().manual_seed(seed)
        out: list[int] = []
        finished = False
        try:
            while len(out) < params.max_tokens:
                if self.gate is not None:
                    while not self.gate.wait(0.05):
                        if cancel is not None and cancel.is_set():
                            break
                if cancel is not None and cancel.is_set():
                    break
                if self.delay:
                    time.sleep(self.delay)
                i = len(out)
                if proc is None:
                    if i >= len(script):
                        finished = True
                        return
                    tok = script[i]
                else:  # a "model" that prefers the script, then prefers to finish
                    logits = torch.randn(VOCAB_SIZE, generator=gen)
                    if i < len(script):
                        logits[script[i]] += 30.0
                    else:
                        logits[_FINISH_BIAS] += 30.0
                    tok = int(torch.argmax(proc(out, logits)))
                out.append(tok)
                yield tok
                if tok in params.stop:
                    finished = True
                    return
            finished = True
        finally:
            if not finished:
                with self._lock:
                    self.cancelled += 1

    def close(self) -> None:
        pass
