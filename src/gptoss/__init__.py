"""gptoss: a local, private runtime for gpt-oss models.

Public API::

    import gptoss
    model = gptoss.load("path/to/checkpoint", dtype="bfloat16", device="cpu")
    model.logits([1, 2, 3])            # float32 [T, vocab]
    model.generate([1, 2, 3], max_tokens=16, temperature=0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Model", "load"]

if TYPE_CHECKING:
    from gptoss.api import Model


def load(path: str, dtype: Any = "bfloat16", device: Any = "cpu") -> Model:
    """Load a checkpoint directory (OpenAI ``original/`` or Hugging Face layout)."""
    from gptoss.api import Model

    return Model.load(path, dtype=dtype, device=device)


def __getattr__(name: str) -> Any:
    if name == "Model":
        from gptoss.api import Model

        return Model
    raise AttributeError(name)
