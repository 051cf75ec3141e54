"""Write a model as a checkpoint in OpenAI's ``original/`` layout (BF16 + MXFP4 experts)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gptoss.model.transformer import Transformer
from gptoss.weights.checkpoint import expected_tensors
from gptoss.weights.safetensors_io import SafetensorsWriter


def save_checkpoint(model: Transformer, out: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save to ``OUT/original/``; experts must be packed (see train.experts.quantize_experts).

    Returns the directory holding config.json. Writes to temporary names first so an
    interrupted save never leaves a half-written checkpoint under the final names.
    """
    wdir = Path(out) / "original"
    wdir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    expected = expected_tensors(model.config)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"cannot save: tensors {missing[:4]} are not in the model (dense experts? "
                         "call quantize_experts first)")
    tensors = {}
    for name, (shape, packed) in expected.items():
        t = state[name].detach().cpu()
        tensors[name] = t if packed else t.to(torch.bfloat16)
        assert tuple(t.shape) == shape, f"{name=} {tuple(t.shape)=} {shape=}"
    tmp = wdir / "model.safetensors.tmp"
    writer = SafetensorsWriter(tmp, [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()],
                               {"format": "pt", **(metadata or {})})
    for name, t in tensors.items():
        writer.write(name, t)
    writer.close()
    tmp.replace(wdir / "model.safetensors")
    (wdir / "config.json").write_text(json.dumps(model.config.to_original_dict(), indent=2) + "\n")
    dtypes = {n: ("FP4" if n.endswith(".blocks") else "UE8" if n.endswith(".scales") else "BF16")
              for n in tensors}
    (wdir / "dtypes.json").write_text(json.dumps(dtypes, indent=2) + "\n")
    return wdir
