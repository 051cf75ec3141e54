"""Loading random checkpoints in every layout: equal values, zero-copy mapping, packed experts,
realistic random values (SPEC §2.1-2.4)."""

from __future__ import annotations

import ctypes
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

import gptoss
from gptoss.config import preset
from gptoss.weights.checkpoint import INDEX_NAME, expected_tensors, open_checkpoint, read_native_tensors
from gptoss.weights.loader import load_transformer
from gptoss.weights.mxfp4 import dequantize_mxfp4
from gptoss.weights.random_ckpt import write_random_checkpoint
from gptoss.weights.safetensors_io import SafetensorsFile

CFG = preset("tiny", num_hidden_layers=2, vocab_size=1024)
SEED = 3
SHARD_BYTES = 150_000  # the checkpoint is ~0.8 MB: several shards


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    out = {
        "original": base / "orig",
        "hf": base / "hf",
        "original_sharded": base / "orig_sharded",
        "hf_sharded": base / "hf_sharded",
    }
    write_random_checkpoint(out["original"], CFG, "original", SEED)
    write_random_checkpoint(out["hf"], CFG, "hf", SEED)
    write_random_checkpoint(out["original_sharded"], CFG, "original", SEED, shard_bytes=SHARD_BYTES)
    write_random_checkpoint(out["hf_sharded"], CFG, "hf", SEED, shard_bytes=SHARD_BYTES)
    return out


@pytest.fixture(scope="module")
def native(ckpts) -> dict[str, dict[str, torch.Tensor]]:
    return {k: read_native_tensors(open_checkpoint(p)) for k, p in ckpts.items()}


def tokens(n: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (1, n), generator=torch.Generator().manual_seed(seed))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), name


# -- layouts -------------------------------------------------------------------------------------


def test_layouts_detected(ckpts):
    for kind, root in ckpts.items():
        ckpt = open_checkpoint(root)
        assert ckpt.layout == kind.removesuffix("_sharded")
        assert ckpt.config == CFG
    assert open_checkpoint(ckpts["original"]).config_path == ckpts["original"] / "original" / "config.json"


def test_both_layouts_hold_identical_values(native):
    want = expected_tensors(CFG)
    assert set(native["original"]) == set(want)
    for name, (shape, packed) in want.items():
        t = native["original"][name]
        assert tuple(t.shape) == shape, name
        assert t.dtype == (torch.uint8 if packed else torch.bfloat16), name
    assert_same_tensors(native["original"], native["hf"])


def test_both_layouts_give_identical_logits(ckpts):
    ids = tokens()
    orig = gptoss.load(ckpts["original"], dtype="float32")
    hf = gptoss.load(ckpts["hf"], dtype="float32")
    out = orig.transformer(ids)
    assert out.shape == (1, ids.shape[1], CFG.vocab_size) and torch.isfinite(out).all()
    assert torch.equal(hf.transformer(ids), out)
    # A different seed is a different model (the comparison above can fail).
    other = ckpts["original"].parent / "other_seed"
    write_random_checkpoint(other, CFG, "original", SEED + 1)
    assert not torch.allclose(gptoss.load(other, dtype="float32").transformer(ids), out)


@pytest.mark.parametrize("layout", ["hf", "original"])
def test_sharded_equals_unsharded(ckpts, native, layout):
    wdir = ckpts[layout + "_sharded"] / ("original" if layout == "original" else "")
    shards = sorted(p.name for p in wdir.glob("*.safetensors"))
    n = len(shards)
    assert n >= 3
    sep = "--" if layout == "original" else "-"
    assert shards == [f"model{sep}{k:05d}-of-{n:05d}.safetensors" for k in range(1, n + 1)]
    assert not (wdir / "model.safetensors").exists()
    index = json.loads((wdir / INDEX_NAME).read_text())
    # The index covers every tensor, each in the file that holds it, and counts their bytes.
    headers = {s: SafetensorsFile(wdir / s).tensors for s in shards}
    assert sorted(index["weight_map"]) == sorted(t for h in headers.values() for t in h)
    for tensor, fname in index["weight_map"].items():
        assert tensor in headers[fname]
    assert index["metadata"]["total_size"] == sum(i.end - i.begin for h in headers.values() for i in h.values())
    ckpt = open_checkpoint(ckpts[layout + "_sharded"])
    assert len(ckpt.files) == n
    assert_same_tensors(native[layout + "_sharded"], native[layout])


def test_sharded_found_without_index_by_scanning(ckpts, native, tmp_path):
    """Without the index json the loader scans every *.safetensors (original layout)."""
    root = tmp_path / "c"
    shutil.copytree(ckpts["original_sharded"], root)
    (root / "original" / INDEX_NAME).unlink()
    assert_same_tensors(read_native_tensors(open_checkpoint(root)), native["original"])


def test_root_with_hf_checkpoint_and_original_folder(ckpts, native, tmp_path):
    """The published repo layout: HF files at the root and OpenAI's files under original/."""
    root = tmp_path / "repo"
    shutil.copytree(ckpts["hf_sharded"], root)
    shutil.copytree(ckpts["original"] / "original", root / "original")
    ckpt = open_checkpoint(root)
    assert ckpt.layout == "hf" and ckpt.config_path == root / "config.json"
    assert all(f.path.parent == root for f in ckpt.files)
    assert_same_tensors(read_native_tensors(ckpt), native["original"])
    model, _ = load_transformer(root, "float32")
    ref, _ = load_transformer(ckpts["original"], "float32")
    ids = tokens(12, 1)
    assert torch.equal(model(ids), ref(ids))
    # The original/ folder itself is a checkpoint too.
    sub = open_checkpoint(root / "original")
    assert sub.layout == "original"
    assert_same_tensors(read_native_tensors(sub), native["original"])


def test_original_config_at_root(ckpts, native, tmp_path):
    """OpenAI's files copied flat (config.json with num_experts next to the weights)."""
    root = tmp_path / "flat"
    shutil.copytree(ckpts["original"] / "original", root)
    ckpt = open_checkpoint(root)
    assert ckpt.layout == "original"
    assert_same_tensors(read_native_tensors(ckpt), native["original"])


def test_dtypes_json_matches_spec(ckpts):
    dtypes = json.loads((ckpts["original"] / "original" / "dtypes.json").read_text())
    want = expected_tensors(CFG)
    assert set(dtypes) == set(want)
    n = CFG.num_hidden_layers
    assert sum(v == "FP4" for v in dtypes.values()) == 2 * n
    assert sum(v == "UE8" for v in dtypes.values()) == 2 * n
    for name, kind in dtypes.items():
        assert kind == ("FP4" if name.endswith(".blocks") else "UE8" if name.endswith(".scales") else "BF16")


def test_hf_names_and_config(ckpts):
    ckpt = open_checkpoint(ckpts["hf"])
    names = set(ckpt.tensors)
    assert "model.layers.1.self_attn.q_proj.weight" in names
    assert "model.layers.1.mlp.experts.down_proj_blocks" in names
    assert not any(n.startswith("block.") for n in names)
    e, h, i = CFG.num_experts, CFG.hidden_size, CFG.intermediate_size
    assert ckpt.tensors["model.layers.0.mlp.experts.gate_up_proj_blocks"].shape == (e, 2 * i, h // 32, 16)
    assert ckpt.tensors["model.layers.0.mlp.experts.down_proj_blocks"].shape == (e, h, i // 32, 16)
    cfg = json.loads((ckpts["hf"] / "config.json").read_text())
    assert cfg["model_type"] == "gpt_oss"
    assert cfg["rope_scaling"]["truncate"] is False
    assert cfg["max_position_embeddings"] == CFG.initial_context_length * CFG.rope_scaling_factor
    assert cfg["layer_types"] == ["sliding_attention", "full_attention"]


# -- memory --------------------------------------------------------------------------------------


def mapped_range(f: SafetensorsFile) -> tuple[int, int]:
    assert f._mmap is not None, f"{f.path} was never mapped"
    start = ctypes.addressof(ctypes.c_char.from_buffer(f._mmap))
    return start, start + len(f._mmap)


def file_of(ckpt, name: str) -> SafetensorsFile:
    return next(f for f in ckpt.files if name in f.tensors)


@pytest.mark.parametrize("kind", ["original", "hf_sharded"])
def test_bf16_cpu_load_is_zero_copy(ckpts, kind):
    model, ckpt = load_transformer(ckpts[kind], "bfloat16", "cpu")
    hf = kind.startswith("hf")
    params = {
        "embedding.weight": ("model.embed_tokens.weight" if hf else "embedding.weight"),
        "unembedding.weight": ("lm_head.weight" if hf else "unembedding.weight"),
        "block.1.attn.out.weight": ("model.layers.1.self_attn.o_proj.weight" if hf else "block.1.attn.out.weight"),
        "block.0.mlp.mlp1_weight.blocks": ("model.layers.0.mlp.experts.gate_up_proj_blocks" if hf
                                           else "block.0.mlp.mlp1_weight.blocks"),
        "block.1.mlp.mlp2_weight.scales": ("model.layers.1.mlp.experts.down_proj_scales" if hf
                                           else "block.1.mlp.mlp2_weight.scales"),
    }
    state = model.state_dict(keep_vars=True)
    for native_name, file_name in params.items():
        f = file_of(ckpt, file_name)
        lo, hi = mapped_range(f)
        t = state[native_name]
        ptr = t.untyped_storage().data_ptr()
        assert lo <= ptr and ptr + t.untyped_storage().nbytes() <= hi, native_name
        # Exactly where the tensor's bytes lie in the file.
        assert t.data_ptr() == lo + f.tensors[file_name].begin, native_name
    assert model.embedding.weight.dtype == torch.bfloat16
    # The mapping is private: the model's view of the file is the file's content.
    f = file_of(ckpt, params["embedding.weight"])
    assert torch.equal(model.embedding.weight, SafetensorsFile(f.path).get(params["embedding.weight"]))


def test_fp32_load_copies_dense_but_maps_experts(ckpts):
    model, ckpt = load_transformer(ckpts["original"], "float32", "cpu")
    f = ckpt.files[0]
    lo, hi = mapped_range(f)
    emb = model.embedding.weight
    assert emb.dtype == torch.float32
    assert not lo <= emb.data_ptr() < hi
    blocks = model.block[0].mlp.mlp1_weight.blocks
    assert blocks.data_ptr() == lo + f.tensors["block.0.mlp.mlp1_weight.blocks"].begin


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("kind", ["original", "hf"])
def test_experts_stay_packed(ckpts, native, kind, dtype):
    model, _ = load_transformer(ckpts[kind], dtype, "cpu")
    e, h, i = CFG.num_experts, CFG.hidden_size, CFG.intermediate_size
    shapes = {"mlp1_weight": (e, 2 * i, h // 32), "mlp2_weight": (e, h, i // 32)}
    for n, block in enumerate(model.block):
        for stem, (ee, rows, g) in shapes.items():
            w = getattr(block.mlp, stem)
            assert w.blocks.dtype == w.scales.dtype == torch.uint8
            assert tuple(w.blocks.shape) == (ee, rows, g, 16)
            assert tuple(w.scales.shape) == (ee, rows, g)
            assert torch.equal(w.blocks, native["original"][f"block.{n}.mlp.{stem}.blocks"])
            assert torch.equal(w.scales, native["original"][f"block.{n}.mlp.{stem}.scales"])
        assert block.mlp.mlp1_bias.dtype == dtype
        assert block.attn.qkv.weight.dtype == dtype
        # Norm scales and sinks stay in float32 whatever the compute dtype.
        assert block.attn.sinks.dtype == block.attn.norm.scale.dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training


def test_hf_qkv_concatenated_in_q_k_v_order(ckpts):
    model, _ = load_transformer(ckpts["hf"], "bfloat16", "cpu")
    ckpt = open_checkpoint(ckpts["hf"])
    f = ckpt.files[0]
    q, kv = CFG.num_attention_heads * CFG.head_dim, CFG.num_key_value_heads * CFG.head_dim
    qkv = model.block[1].attn.qkv
    pre = "model.layers.1.self_attn."
    assert torch.equal(qkv.weight[:q], f.get(pre + "q_proj.weight"))
    assert torch.equal(qkv.weight[q:q + kv], f.get(pre + "k_proj.weight"))
    assert torch.equal(qkv.weight[q + kv:], f.get(pre + "v_proj.weight"))
    assert torch.equal(qkv.bias[q + kv:], f.get(pre + "v_proj.bias"))


def test_loaded_model_does_not_write_to_file(ckpts, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(ckpts["original"], root)
    path = root / "original" / "model.safetensors"
    before = path.read_bytes()
    model, _ = load_transformer(root, "bfloat16", "cpu")
    with torch.no_grad():
        model.embedding.weight.add_(1.0)  # copy-on-write: the file is never modified
    assert path.read_bytes() == before


# -- realistic random values ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlp_inputs(ckpts):
    """The fp32 model and the normalised inputs of each MoE layer for random tokens."""
    model = gptoss.load(ckpts["original"], dtype="float32").transformer
    seen: dict[int, torch.Tensor] = {}

    def keep(n: int):
        return lambda module, args, out: seen.__setitem__(n, out.reshape(-1, out.shape[-1]))

    hooks = [blk.mlp.norm.register_forward_hook(keep(n)) for n, blk in enumerate(model.block)]
    with torch.no_grad():
        model(tokens(64, 7))
    for hk in hooks:
        hk.remove()
    return model, seen


def test_router_logits_realistic(mlp_inputs):
    model, seen = mlp_inputs
    for n, h in seen.items():
        gate = model.block[n].mlp.gate
        logits = h @ gate.weight.T + gate.bias
        std = float(logits.std())
        assert 1.0 <= std <= 4.0, (n, std)
        # Top-k selection is decisive: the k-th and (k+1)-th logits are rarely tied.
        top = logits.topk(CFG.experts_per_token + 1, dim=-1).values
        assert float((top[:, -2] - top[:, -1]).median()) > 1e-2


def test_mlp1_preactivations_exercise_the_clamp(mlp_inputs):
    model, seen = mlp_inputs
    limit = CFG.swiglu_limit
    fractions = []
    for n, h in seen.items():
        mlp = model.block[n].mlp
        w1 = dequantize_mxfp4(mlp.mlp1_weight.blocks, mlp.mlp1_weight.scales, torch.float32)
        assert w1.shape == (CFG.num_experts, 2 * CFG.intermediate_size, CFG.hidden_size)
        u = torch.einsum("th,eoh->teo", h, w1) + mlp.mlp1_bias  # every expert, every token
        gate, lin = u[..., 0::2], u[..., 1::2]
        assert float(u.std()) > 1.0
        assert bool((gate > limit).any()), n  # the upper gate clamp bites
        assert bool((lin.abs() > limit).any()), n  # the linear clamp bites
        fractions.append(float((u.abs() > limit).float().mean()))
    assert all(f < 0.25 for f in fractions), fractions  # ... but the clamp is not everything


def test_sinks_and_norms_realistic(mlp_inputs):
    model, _ = mlp_inputs
    sinks = torch.cat([b.attn.sinks for b in model.block])
    assert float(sinks.abs().mean()) > 0.3
    assert float(sinks.std()) > 0.3
    scales = torch.cat([b.attn.norm.scale for b in model.block])
    assert 0.5 < float(scales.mean()) < 1.5 and float(scales.std()) > 0.01


def test_expert_scales_vary_per_block(native):
    s = native["original"]["block.0.mlp.mlp1_weight.scales"]
    assert len(s.unique()) >= 2
    w = dequantize_mxfp4(native["original"]["block.0.mlp.mlp1_weight.blocks"], s, torch.float32)
    # Decoded std close to the intended 3 / sqrt(fan_in).
    assert 0.5 < float(w.std()) * math.sqrt(CFG.hidden_size) / 3.0 < 2.0


def test_random_checkpoint_is_deterministic(native, tmp_path):
    write_random_checkpoint(tmp_path / "again", CFG, "original", SEED)
    assert_same_tensors(read_native_tensors(open_checkpoint(tmp_path / "again")), native["original"])


def test_shard_names_only_from_index(ckpts, tmp_path):
    """Shards are located through the index: a stray *.safetensors not in it is ignored."""
    root = tmp_path / "c"
    shutil.copytree(ckpts["hf_sharded"], root)
    shutil.copy(ckpts["hf"] / "model.safetensors", root / "model.safetensors")  # duplicates every tensor
    ckpt = open_checkpoint(root)
    assert all(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f.path.name) for f in ckpt.files)
