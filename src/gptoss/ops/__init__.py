"""The narrow compute interface the model calls: ``rms_norm``, ``attention``, ``moe``.

A backend is a module exposing those three functions. The reference backend always exists;
faster ones register here and are chosen once with :func:`select_backend`, never per call.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from gptoss.ops import reference

BACKENDS: dict[str, str] = {"reference": "gptoss.ops.reference"}
_active: ModuleType = reference


def select_backend(name: str = "reference") -> ModuleType:
    """Make ``name`` the backend used by every subsequent op call."""
    global _active
    if name not in BACKENDS:
        raise ValueError(f"unknown ops backend {name!r}; available: {', '.join(BACKENDS)}")
    _active = importlib.import_module(BACKENDS[name])
    return _active


def backend_name() -> str:
    return next(k for k, v in BACKENDS.items() if v == _active.__name__)


def rms_norm(*args: Any, **kwargs: Any) -> Any:
    return _active.rms_norm(*args, **kwargs)


def attention(*args: Any, **kwargs: Any) -> Any:
    return _active.attention(*args, **kwargs)


def moe(*args: Any, **kwargs: Any) -> Any:
    return _active.moe(*args, **kwargs)
