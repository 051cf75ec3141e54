"""``gptoss serve`` picks torch threads by model size: one for a tiny model, every core otherwise."""

from __future__ import annotations

import os

import torch

from gptoss.engine.sampling import SamplingParams
from gptoss.server import ModelEngine
from gptoss.server.engine import SMALL_MODEL_BYTES, default_threads


def test_default_threads_by_model_size():
    assert default_threads(torch.nn.Linear(64, 64)) == 1
    big = torch.nn.Module()
    big.register_buffer("w", torch.empty(SMALL_MODEL_BYTES, dtype=torch.uint8))  # buffers count (MXFP4 experts)
    assert default_threads(big) == (os.cpu_count() or 1)


def test_engine_worker_runs_with_its_threads(tiny_checkpoint):
    from gptoss.api import Model

    seen: list[int] = []

    def probe(tokens, logits):
        seen.append(torch.get_num_threads())
        return logits

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # other tests may have changed this process's setting
    engine = ModelEngine(Model.load(tiny_checkpoint, dtype="float32").transformer, "t", threads=1)
    try:
        list(engine.generate([200006, 1428, 200008], SamplingParams(max_tokens=2, temperature=0), probe))
    finally:
        engine.close()
        after = torch.get_num_threads()
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}
    assert after == 2  # the worker's setting stays in the worker
