"""Find, validate and memory-map a gpt-oss checkpoint in either layout (SPEC §2).

Layouts, detected automatically from a directory:
- ``original``: ``config.json`` with OpenAI's keys (optionally inside ``original/``), safetensors
  files, optional ``dtypes.json``;
- ``hf``: ``config.json`` with ``model_type: gpt_oss`` and one ``model.safetensors`` or shards
  listed by ``model.safetensors.index.json``.

Every problem raises :class:`CheckpointError` naming the file and the tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptoss.config import ConfigError, ModelConfig
from gptoss.weights.remap import QKV_PARTS, looks_dequantized, remap_hf_to_native
from gptoss.weights.safetensors_io import CheckpointError, SafetensorsFile, TensorInfo

INDEX_NAME = "model.safetensors.index.json"
MAX_LISTED = 12


@dataclass
class Checkpoint:
    """A located checkpoint: its layout, config and safetensors files (headers read, not data)."""

    root: Path
    layout: str  # "original" | "hf"
    config_path: Path
    config: ModelConfig
    files: list[SafetensorsFile]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)  # as named in the files

    @property
    def bytes_on_disk(self) -> int:
        return sum(f.path.stat().st_size for f in self.files)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _detect(path: Path) -> tuple[str, Path]:
    """Return (layout, directory holding config.json and the weights)."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file():
        raise CheckpointError(f"{path}: expected a checkpoint directory, got a file "
                              "(pass the folder holding config.json)")
    cfg = path / "config.json"
    if cfg.is_file():
        data = _read_json(cfg)
        if data.get("model_type") == "gpt_oss" or "num_local_experts" in data:
            has_weights = any(path.glob("*.safetensors")) or (path / INDEX_NAME).is_file()
            if not has_weights and (path / "original" / "config.json").is_file():
                return "original", path / "original"  # HF config shipped without HF weights
            return "hf", path
        if (path / "original" / "config.json").is_file():
            return "original", path / "original"
        if "num_experts" in data:
            return "original", path
        raise CheckpointError(f"{cfg}: not a gpt-oss config (no model_type 'gpt_oss' and no "
                              "'num_experts' key)")
    if (path / "original" / "config.json").is_file():
        return "original", path / "original"
    raise CheckpointError(
        f"{path}: no checkpoint found. Expected config.json with *.safetensors (Hugging Face "
        "layout) or original/config.json (OpenAI layout); create a test one with "
        "`gptoss checkpoint random DIR --preset tiny`")


def open_checkpoint(path: str | Path, strict_config: bool = True) -> Checkpoint:
    """Locate and validate the headers of a checkpoint (reads no tensor data)."""
    root = Path(path).expanduser()
    layout, wdir = _detect(root)
    cfg_path = wdir / "config.json"
    try:
        config = ModelConfig.from_dict(_read_json(cfg_path))
    except ConfigError as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    if strict_config and config.unknown_keys:
        raise CheckpointError(f"{cfg_path}: unknown config key(s) {', '.join(config.unknown_keys)}; "
                              "they are not part of the gpt-oss architecture")
    index_path = wdir / INDEX_NAME
    if index_path.is_file():
        index = _read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path}: missing or empty 'weight_map'")
        bad = [t for t, v in weight_map.items() if not (isinstance(v, str) and v)]
        if bad:
            raise CheckpointError(f"{index_path}: weight_map entry for tensor {bad[0]!r} is "
                                  f"{weight_map[bad[0]]!r}, expected a file name")
        names = sorted(set(weight_map.values()))
        for n in names:
            if not (wdir / n).is_file():
                raise CheckpointError(f"{wdir / n}: shard listed in {INDEX_NAME} is missing")
        files = [SafetensorsFile(wdir / n) for n in names]
        by_name = dict(zip(names, files, strict=True))
        for tensor, fname in weight_map.items():
            if tensor not in by_name[fname].tensors:
                raise CheckpointError(f"{wdir / fname}: tensor {tensor!r} listed in {INDEX_NAME} "
                                      "is not in this file")
    else:
        paths = sorted(wdir.glob("*.safetensors"))
        if not paths:
            raise CheckpointError(f"{wdir}: config.json found but no *.safetensors weight files")
        files = [SafetensorsFile(p) for p in paths]
    ckpt = Checkpoint(root, layout, cfg_path, config, files)
    for f in files:
        for name, info in f.tensors.items():
            if name in ckpt.tensors:
                raise CheckpointError(f"{f.path}: tensor {name!r} also appears in "
                                      f"{ckpt.tensors[name].path}")
            ckpt.tensors[name] = info
    return ckpt


def expected_tensors(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Native name -> (shape, is_packed_mxfp4) for a config."""
    from gptoss.model.transformer import Transformer

    with torch.device("meta"):
        model = Transformer(cfg)
    return {k: (tuple(v.shape), v.dtype == torch.uint8) for k, v in model.state_dict().items()}


def _listing(items: list[str]) -> str:
    head = items[:MAX_LISTED]
    more = f"\n  ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return "\n  " + "\n  ".join(head) + more


def validate(ckpt: Checkpoint) -> dict[str, list[TensorInfo]]:
    """Check names, shapes and dtypes against the config; return native name -> source tensors
    (three for an HF qkv, in q, k, v order). All problems are reported in one error."""
    expected = expected_tensors(ckpt.config)
    cfg = ckpt.config
    sources: dict[str, dict[str | None, TensorInfo]] = {}
    unexpected: list[str] = []
    for name, info in ckpt.tensors.items():
        if ckpt.layout == "hf":
            mapped = remap_hf_to_native(name)
            if mapped is None:
                hint = (" (a dequantised transformers re-save; use the original MXFP4 checkpoint)"
                        if looks_dequantized(name) else "")
                unexpected.append(f"{name} in {info.path.name}{hint}")
                continue
            native, part = mapped
        else:
            native, part = name, None
        if native not in expected:
            unexpected.append(f"{name} in {info.path.name}")
            continue
        sources.setdefault(native, {})[part] = info
    problems: list[str] = []
    missing = []
    q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    part_rows = {"q": q, "k": kv, "v": kv}
    for native, (shape, packed) in expected.items():
        parts = sources.get(native)
        if not parts:
            missing.append(native)
            continue
        if ckpt.layout == "hf" and native.endswith((".qkv.weight", ".qkv.bias")):
            lost = [p for p in QKV_PARTS if p not in parts]
            if lost:
                missing.extend(f"{native} part {p}_proj" for p in lost)
                continue
            want = {p: (part_rows[p], *shape[1:]) for p in QKV_PARTS}
        else:
            want = {None: shape}
        for part, info in parts.items():
            where = f"{info.path}: tensor {info.name!r}"
            if tuple(info.shape) != want[part]:
                problems.append(f"{where} has shape {list(info.shape)}, expected {list(want[part])}")
            if packed and info.dtype != "U8":
                problems.append(f"{where} has dtype {info.dtype}, expected U8 (MXFP4)"
                                + (" -- floats under a *_blocks name: a dequantised re-save"
                                   if info.dtype in ("BF16", "F16", "F32") else ""))
            if not packed and info.dtype not in ("BF16", "F16", "F32"):
                problems.append(f"{where} has dtype {info.dtype}, expected BF16")
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) in {ckpt.root}:" + _listing(missing))
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s):" + _listing(unexpected))
    if problems:
        raise CheckpointError(f"checkpoint {ckpt.root} ({ckpt.layout} layout) does not match "
                              f"{ckpt.config_path}:\n- " + "\n- ".join(problems))
    return {n: [p[k] for k in ((None,) if None in p else QKV_PARTS)] for n, p in sources.items()}


def read_native_tensors(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """Validated native-named tensors viewing the mapped files (HF q/k/v are concatenated)."""
    plan = validate(ckpt)
    files = {f.path: f for f in ckpt.files}
    out = {}
    for native, infos in plan.items():
        parts = [files[i.path].get(i.name) for i in infos]
        out[native] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return out
