"""Shared fixtures: random tiny checkpoints written by the project itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from gptoss.config import ModelConfig, preset
from gptoss.weights.random_ckpt import write_random_checkpoint

# Two expert configurations for parity: the tiny preset (8 experts, top-4, GQA 4:1, window 8)
# and a second shape (6 experts, top-2, 4 query heads on 1 kv head, window 16, H > I).
CONFIGS: dict[str, ModelConfig] = {
    "tiny": preset("tiny"),
    "alt": dataclasses.replace(
        preset("tiny"), num_hidden_layers=3, num_experts=6, experts_per_token=2, hidden_size=96,
        intermediate_size=64, head_dim=32, num_attention_heads=4, num_key_value_heads=1,
        sliding_window=16, initial_context_length=512),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory: pytest.TempPathFactory):
    """``make(name, layout, seed=0) -> Path``: a cached random checkpoint of CONFIGS[name]."""
    made: dict[tuple[str, str, int], Path] = {}

    def make(name: str, layout: str = "original", seed: int = 0) -> Path:
        key = (name, layout, seed)
        if key not in made:
            out = tmp_path_factory.mktemp(f"{name}-{layout}-{seed}")
            write_random_checkpoint(out, CONFIGS[name], layout, seed)
            made[key] = out
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(checkpoint_factory) -> Path:
    return checkpoint_factory("tiny", "original", 0)
