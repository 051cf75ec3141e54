"""Broken checkpoints are rejected with a CheckpointError naming the file and the tensor (SPEC §2.1-2.3)."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import gptoss
from gptoss.config import preset
from gptoss.weights.checkpoint import INDEX_NAME, open_checkpoint, validate
from gptoss.weights.random_ckpt import write_random_checkpoint
from gptoss.weights.safetensors_io import CheckpointError, SafetensorsFile, SafetensorsWriter

CFG = preset("tiny", num_hidden_layers=2, vocab_size=512)
E, H, INTER = CFG.num_experts, CFG.hidden_size, CFG.intermediate_size


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pristine")
    write_random_checkpoint(base / "orig", CFG, "original", seed=1)
    write_random_checkpoint(base / "hf", CFG, "hf", seed=1)
    write_random_checkpoint(base / "hf_sharded", CFG, "hf", seed=1, shard_bytes=200_000)
    return {"original": base / "orig", "hf": base / "hf", "hf_sharded": base / "hf_sharded"}


@pytest.fixture
def ckpt_copy(pristine, tmp_path) -> Callable[[str], tuple[Path, Path]]:
    """``copy(kind) -> (root, weights dir)``: a private, modifiable copy of a pristine checkpoint."""

    def copy(kind: str) -> tuple[Path, Path]:
        root = tmp_path / kind
        shutil.copytree(pristine[kind], root)
        return root, (root / "original" if kind == "original" else root)

    return copy


def rewrite(path: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Re-save a safetensors file after ``edit`` changed its (ordered) name -> tensor dict."""
    f = SafetensorsFile(path)
    tensors = {name: f.get(name).clone() for name in f.tensors}
    edit(tensors)
    tmp = path.with_suffix(".tmp")
    w = SafetensorsWriter(tmp, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()])
    for n, t in tensors.items():
        w.write(n, t)
    w.close()
    os.replace(tmp, path)  # the old inode stays valid for the still-mapped file


def check(root: Path) -> None:
    validate(open_checkpoint(root))


def raises(root: Path, *fragments: str | Path) -> str:
    """Assert that opening+validating ``root`` fails and the message holds every fragment."""
    with pytest.raises(CheckpointError) as info:
        check(root)
    msg = str(info.value)
    for frag in fragments:
        assert str(frag) in msg, f"{frag!r} not in:\n{msg}"
    return msg


def test_pristine_checkpoints_validate(pristine):
    for root in pristine.values():
        check(root)
    assert len(list(pristine["hf_sharded"].glob("*.safetensors"))) > 1


# -- tensor set ----------------------------------------------------------------------------------


def test_missing_tensor(ckpt_copy):
    root, wdir = ckpt_copy("original")
    rewrite(wdir / "model.safetensors", lambda t: t.pop("block.1.attn.sinks"))
    msg = raises(root, "block.1.attn.sinks", "missing", root)
    assert "1 missing" in msg
    with pytest.raises(CheckpointError, match=re.escape("block.1.attn.sinks")):
        gptoss.load(root)  # the public API reports the same error


def test_all_missing_tensors_in_one_error(ckpt_copy):
    root, wdir = ckpt_copy("original")

    def drop(t):
        del t["block.0.mlp.mlp2_bias"]
        del t["unembedding.weight"]

    rewrite(wdir / "model.safetensors", drop)
    msg = raises(root, "block.0.mlp.mlp2_bias", "unembedding.weight", "2 missing")
    assert msg.count("missing tensor") == 1


def test_missing_hf_qkv_part(ckpt_copy):
    root, wdir = ckpt_copy("hf")
    rewrite(wdir / "model.safetensors", lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"))
    raises(root, "block.1.attn.qkv.bias", "k_proj")


def test_unexpected_tensor(ckpt_copy):
    root, wdir = ckpt_copy("original")
    rogue = torch.zeros(3, dtype=torch.bfloat16)
    rewrite(wdir / "model.safetensors", lambda t: t.update({"block.0.attn.rogue": rogue}))
    raises(root, "block.0.attn.rogue", "model.safetensors", "unexpected")


def test_tensor_for_a_layer_that_does_not_exist(ckpt_copy):
    root, wdir = ckpt_copy("hf")
    rewrite(wdir / "model.safetensors",
            lambda t: t.update({"model.layers.2.self_attn.sinks": torch.zeros(8, dtype=torch.bfloat16)}))
    raises(root, "model.layers.2.self_attn.sinks", "model.safetensors", "unexpected")


def test_duplicate_tensor_across_files(ckpt_copy):
    root, wdir = ckpt_copy("original")
    w = SafetensorsWriter(wdir / "extra.safetensors", [("norm.scale", torch.bfloat16, (H,))])
    w.write("norm.scale", torch.ones(H, dtype=torch.bfloat16))
    w.close()
    raises(root, "norm.scale", "extra.safetensors", "model.safetensors")


# -- shapes and dtypes ---------------------------------------------------------------------------


def test_wrong_shape(ckpt_copy):
    root, wdir = ckpt_copy("original")
    rewrite(wdir / "model.safetensors",
            lambda t: t.update({"block.1.attn.sinks": torch.zeros(7, dtype=torch.bfloat16)}))
    raises(root, wdir / "model.safetensors", "'block.1.attn.sinks'", "[7]", f"[{CFG.num_attention_heads}]")


def test_transposed_mlp2_is_a_shape_error(ckpt_copy):
    # H != I in the tiny preset: a transposed mlp2 (packed along the wrong axis) is caught by shape.
    root, wdir = ckpt_copy("original")

    def transpose(t):
        t["block.0.mlp.mlp2_weight.blocks"] = torch.zeros(E, INTER, H // 32, 16, dtype=torch.uint8)

    rewrite(wdir / "model.safetensors", transpose)
    raises(root, "'block.0.mlp.mlp2_weight.blocks'", f"[{E}, {INTER}, {H // 32}, 16]", f"[{E}, {H}, {INTER // 32}, 16]")


def test_wrong_hf_part_shape(ckpt_copy):
    root, wdir = ckpt_copy("hf")
    rewrite(wdir / "model.safetensors", lambda t: t.update(
        {"model.layers.0.self_attn.v_proj.weight": torch.zeros(64, H, dtype=torch.bfloat16)}))
    kv = CFG.num_key_value_heads * CFG.head_dim
    raises(root, "'model.layers.0.self_attn.v_proj.weight'", "[64, 64]", f"[{kv}, {H}]")


def test_floats_under_blocks_name(ckpt_copy):
    root, wdir = ckpt_copy("hf")
    name = "model.layers.1.mlp.experts.gate_up_proj_blocks"
    rewrite(wdir / "model.safetensors", lambda t: t.update({name: t[name].to(torch.bfloat16)}))
    raises(root, wdir / "model.safetensors", repr(name), "BF16", "expected U8", "dequantised re-save")


def test_dequantized_transformers_resave(ckpt_copy):
    """A transformers re-save stores float gate_up_proj/down_proj instead of *_blocks/*_scales."""
    root, wdir = ckpt_copy("hf")
    stem = "model.layers.0.mlp.experts."

    def dequantize(t):
        for part, shape in (("gate_up_proj", (E, H, 2 * INTER)), ("down_proj", (E, INTER, H))):
            del t[stem + part + "_blocks"], t[stem + part + "_scales"]
            t[stem + part] = torch.zeros(shape, dtype=torch.bfloat16)

    rewrite(wdir / "model.safetensors", dequantize)
    raises(root, stem + "gate_up_proj in model.safetensors", stem + "down_proj in model.safetensors",
           "dequantised", "block.0.mlp.mlp1_weight.blocks", "block.0.mlp.mlp2_weight.scales")


def test_u8_dense_weight(ckpt_copy):
    root, wdir = ckpt_copy("original")
    name = "block.0.attn.qkv.weight"
    rewrite(wdir / "model.safetensors",
            lambda t: t.update({name: torch.zeros(t[name].shape, dtype=torch.uint8)}))
    raises(root, wdir / "model.safetensors", repr(name), "dtype U8", "expected BF16")


def test_several_problems_reported_together(ckpt_copy):
    root, wdir = ckpt_copy("original")

    def mess(t):
        del t["norm.scale"]
        t["block.0.attn.sinks"] = torch.zeros(3, dtype=torch.bfloat16)
        t["block.1.mlp.gate.bias"] = torch.zeros(E, dtype=torch.uint8)
        t["bogus"] = torch.zeros(1, dtype=torch.bfloat16)

    rewrite(wdir / "model.safetensors", mess)
    raises(root, "norm.scale", "block.0.attn.sinks", "block.1.mlp.gate.bias", "bogus")


# -- damaged files -------------------------------------------------------------------------------


def test_truncated_file(ckpt_copy):
    root, wdir = ckpt_copy("original")
    path = wdir / "model.safetensors"
    last = max(SafetensorsFile(path).tensors.values(), key=lambda i: i.end).name
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 100)
    raises(root, path, repr(last), "truncated")


def test_truncated_to_a_few_bytes(ckpt_copy):
    root, wdir = ckpt_copy("original")
    path = wdir / "model.safetensors"
    with open(path, "r+b") as f:
        f.truncate(5)
    raises(root, path, "truncated")


def test_truncated_inside_header(ckpt_copy):
    root, wdir = ckpt_copy("hf")
    path = wdir / "model.safetensors"
    with open(path, "r+b") as f:
        f.truncate(100)
    raises(root, path, "header length")


def test_header_length_too_big(ckpt_copy):
    root, wdir = ckpt_copy("original")
    path = wdir / "model.safetensors"
    with open(path, "r+b") as f:
        f.write(struct.pack("<Q", 1 << 40))
    raises(root, path, "header length")


def test_garbage_header_json(ckpt_copy):
    root, wdir = ckpt_copy("original")
    path = wdir / "model.safetensors"
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"{not json")
    raises(root, path, "corrupt header")


def test_header_not_an_object(ckpt_copy):
    root, wdir = ckpt_copy("original")
    path = wdir / "model.safetensors"
    raw = b"[1, 2, 3]"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    raises(root, path, "corrupt header")


def test_offsets_disagree_with_shape(ckpt_copy):
    root, wdir = ckpt_copy("original")
    path = wdir / "model.safetensors"
    header = {"norm.scale": {"dtype": "BF16", "shape": [H], "data_offsets": [0, 2 * H - 2]}}
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(2 * H))
    raises(root, path, "'norm.scale'", "corrupt header")


# -- configs and directories ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["original", "hf"])
def test_unknown_config_key(ckpt_copy, kind):
    root, wdir = ckpt_copy(kind)
    cfg_path = wdir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_dragons"] = 3
    cfg_path.write_text(json.dumps(cfg))
    raises(root, cfg_path, "num_dragons")
    # Not strict: the key is kept aside and the checkpoint still validates.
    ckpt = open_checkpoint(root, strict_config=False)
    assert ckpt.config.unknown_keys == ("num_dragons",)
    validate(ckpt)


@pytest.mark.parametrize("kind", ["original", "hf"])
def test_invalid_config_json(ckpt_copy, kind):
    root, wdir = ckpt_copy(kind)
    cfg_path = wdir / "config.json"
    cfg_path.write_text(cfg_path.read_text()[:-10])
    raises(root, cfg_path, "invalid JSON")


def test_config_with_impossible_values(ckpt_copy):
    root, wdir = ckpt_copy("original")
    cfg_path = wdir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_size"] = 65  # not a multiple of the MXFP4 block
    cfg_path.write_text(json.dumps(cfg))
    raises(root, cfg_path, "hidden_size")


def test_config_disagrees_with_tensors(ckpt_copy):
    root, wdir = ckpt_copy("original")
    cfg_path = wdir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_hidden_layers"] = 3
    cfg_path.write_text(json.dumps(cfg))
    raises(root, "block.2.attn.qkv.weight", "missing", cfg_path)


def test_directory_without_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    raises(tmp_path, tmp_path, "no checkpoint found")


def test_config_without_weights(tmp_path, pristine):
    shutil.copy(pristine["hf"] / "config.json", tmp_path / "config.json")
    raises(tmp_path, tmp_path, "no *.safetensors")


def test_nonexistent_path(tmp_path):
    raises(tmp_path / "nope", tmp_path / "nope", "no such file")


def test_path_is_a_file(ckpt_copy):
    _, wdir = ckpt_copy("hf")
    raises(wdir / "model.safetensors", wdir / "model.safetensors", "expected a checkpoint directory")
    raises(wdir / "config.json", wdir / "config.json", "expected a checkpoint directory")


def test_not_a_gpt_oss_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    raises(tmp_path, tmp_path / "config.json", "not a gpt-oss config")


# -- sharded checkpoints -------------------------------------------------------------------------


def test_missing_shard(ckpt_copy):
    root, wdir = ckpt_copy("hf_sharded")
    shards = sorted(wdir.glob("model-*.safetensors"))
    shards[1].unlink()
    raises(root, shards[1], "missing", INDEX_NAME)


def test_index_maps_tensor_to_file_that_lacks_it(ckpt_copy):
    root, wdir = ckpt_copy("hf_sharded")
    index_path = wdir / INDEX_NAME
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = "model.norm.weight"
    wrong = next(s for s in shards if s != index["weight_map"][name])
    index["weight_map"][name] = wrong
    index_path.write_text(json.dumps(index))
    raises(root, wdir / wrong, repr(name), INDEX_NAME)


def test_index_lists_tensor_missing_from_every_shard(ckpt_copy):
    root, wdir = ckpt_copy("hf_sharded")
    index = json.loads((wdir / INDEX_NAME).read_text())
    name = "model.layers.0.mlp.router.bias"
    rewrite(wdir / index["weight_map"][name], lambda t: t.pop(name))
    raises(root, wdir / index["weight_map"][name], repr(name))


def test_index_without_weight_map(ckpt_copy):
    root, wdir = ckpt_copy("hf_sharded")
    (wdir / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": 1}}))
    raises(root, wdir / INDEX_NAME, "weight_map")


def test_corrupt_index_json(ckpt_copy):
    root, wdir = ckpt_copy("hf_sharded")
    (wdir / INDEX_NAME).write_text("{")
    raises(root, wdir / INDEX_NAME, "invalid JSON")


# -- index and config values of the wrong type ------------------------------------------------


def test_index_with_non_string_file_name(ckpt_copy):
    root, wdir = ckpt_copy("hf_sharded")
    index = json.loads((wdir / INDEX_NAME).read_text())
    index["weight_map"]["model.norm.weight"] = 3
    (wdir / INDEX_NAME).write_text(json.dumps(index))
    raises(root, wdir / INDEX_NAME, "model.norm.weight")


def test_index_with_shard_in_subfolder(ckpt_copy):
    root, wdir = ckpt_copy("hf_sharded")
    index = json.loads((wdir / INDEX_NAME).read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (wdir / "sub").mkdir()
    (wdir / first).rename(wdir / "sub" / first)
    index["weight_map"] = {t: f"sub/{f}" if f == first else f for t, f in index["weight_map"].items()}
    (wdir / INDEX_NAME).write_text(json.dumps(index))
    check(root)  # a consistent index: every tensor is where it says


@pytest.mark.parametrize("value", ["abc", None])
def test_config_with_non_numeric_float(ckpt_copy, value):
    root, wdir = ckpt_copy("original")
    cfg_path = wdir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rope_theta"] = value
    cfg_path.write_text(json.dumps(cfg))
    raises(root, cfg_path, "rope_theta")
