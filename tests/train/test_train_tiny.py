"""`gptoss train-tiny` with a toy budget: corpus -> training -> bundle layout, reproducible under the seed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gptoss
from gptoss.models import MANIFEST, default_model_path

TOY = ["--conversations", "24", "--steps", "3", "--batch-size", "4", "--threads", "1", "--layers", "2",
       "--hidden", "64", "--heads", "2", "--kv-heads", "1", "--head-dim", "32", "--experts", "4", "--top-k", "2",
       "--intermediate", "64", "--window", "16", "--context", "512", "--curriculum", "1",
       "--copy-warmup", "2", "--shared-codes", "--paired-codes"]


def train_tiny(out, work, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "gptoss.cli.main", "train-tiny", "--out", str(out),
                           "--work", str(work), *TOY, *extra], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tt")
    proc = train_tiny(root / "a", root / "wa")
    return root, proc


def test_writes_the_bundle_layout(built):
    root, proc = built
    out = root / "a"
    assert sorted(f.name for f in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "dtypes.json", "lineage.json", "README.md", MANIFEST])
    assert default_model_path(out) == out  # manifest verifies
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["steps"] == 3 and lineage["seed"] == 0 and "--steps 3" in lineage["command"]
    assert lineage["shape"]["layers"] == 2 and lineage["final"]["loss"] > 0
    assert "rebuild: `gptoss train-tiny" in (out / "README.md").read_text()
    assert "exported" in proc.stdout and "copy warm-up 2/2" in proc.stdout and "shared code vectors" in proc.stdout
    assert "--copy-warmup 2" in lineage["command"]
    assert "--shared-codes --lowercase-codes --paired-codes" in lineage["command"]
    model = gptoss.load(str(out), dtype="float32")
    cfg = model.config
    assert cfg.num_hidden_layers == 2 and cfg.num_experts == 4 and cfg.kept_token_ids is not None
    assert all(199998 <= t <= 200018 or t < 199998 for t in cfg.kept_token_ids)
    assert set(range(199998, 200019)) <= set(cfg.kept_token_ids)  # every harmony special has a row
    assert model.transformer.block[0].mlp.mlp1_weight.blocks.dtype.is_floating_point is False  # MXFP4-packed


def test_same_seed_same_bytes_other_seed_differs(built):
    root, _ = built
    train_tiny(root / "b", root / "wb")
    weights = [(root / d / "model.safetensors").read_bytes() for d in ("a", "b")]
    assert weights[0] == weights[1]
    train_tiny(root / "c", root / "wc", "--seed", "1")
    assert (root / "c" / "model.safetensors").read_bytes() != weights[0]


def test_resume_continues_to_more_steps(built):
    root, _ = built
    proc = train_tiny(root / "a2", root / "wa", "--resume", "--steps", "5")  # reuses run a's work dir
    assert "resumed at step 3" in proc.stdout and "corpus: cached" in proc.stdout
    assert "copy warm-up" not in proc.stdout  # the resumed weights already had it
    assert json.loads((root / "a2" / "lineage.json").read_text())["steps"] == 5


def test_bad_budget_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gptoss.cli.main", "train-tiny", "--out", str(tmp_path / "o"),
                           "--weights", "python=x"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "bad weight" in proc.stderr and "Traceback" not in proc.stderr


def test_a_curriculum_longer_than_the_run_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "gptoss.cli.main", "train-tiny", "--out", str(tmp_path / "o"),
                           "--work", str(tmp_path / "w"), *TOY, "--curriculum", "3"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "--curriculum 3 leaves no steps" in proc.stderr
    assert "Traceback" not in proc.stderr
