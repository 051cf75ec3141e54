"""The narrow compute interface the model calls: ``rms_norm``, ``linear``, ``rotary``,
``attention``, ``moe``, and ``kv_write`` (the KV caches append through it).

A backend is a module exposing those functions. The reference backend always exists;
faster ones register here and are chosen once with :func:`select_backend`, never per call.

Backends: ``reference`` (plain PyTorch, any device; the default for library users) and ``cpu``
(packed MXFP4 experts multiplied by a C kernel compiled on first use; see :mod:`gptoss.ops.cpu`).
``select_backend("auto", device)`` picks ``cpu`` for a CPU device when that kernel builds and
``reference`` otherwise. The CLI applies ``--ops`` (default ``auto``) before running a command.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType
from typing import Any

from gptoss.ops import reference

BACKENDS: dict[str, str] = {"reference": "gptoss.ops.reference", "cpu": "gptoss.ops.cpu"}
CHOICES = ("auto", *BACKENDS)
_active: ModuleType = reference

log = logging.getLogger(__name__)


def _cpu_unavailable() -> str | None:
    """Why the cpu backend's kernel cannot be used here, or None if it can."""
    from gptoss.ops import cpu

    try:
        cpu.load_kernel()
    except cpu.KernelUnavailable as e:
        return str(e)
    return None


def resolve_backend(name: str = "auto", device: Any = "cpu") -> str:
    """The backend ``name`` stands for: ``auto`` becomes ``cpu`` on a CPU device when the kernel
    builds (one warning line when it does not) and ``reference`` otherwise."""
    if name == "auto":
        if str(device).split(":")[0] != "cpu":
            return "reference"
        why = _cpu_unavailable()
        if why is not None:
            log.warning("gptoss: CPU MXFP4 kernel unavailable (%s); using the reference ops backend", why)
            return "reference"
        return "cpu"
    if name not in BACKENDS:
        raise ValueError(f"unknown ops backend {name!r}; available: {', '.join(CHOICES)}")
    if name == "cpu":
        why = _cpu_unavailable()
        if why is not None:
            raise ValueError(f"ops backend 'cpu' is unavailable: {why}")
    return name


def select_backend(name: str = "reference", device: Any = "cpu") -> ModuleType:
    """Make ``name`` the backend used by every subsequent op call.

    ``name`` is a key of :data:`BACKENDS` or ``"auto"`` (see :func:`resolve_backend`; ``device`` only
    matters for ``auto``). Choosing ``cpu`` where its kernel cannot be built raises ValueError.
    """
    global _active
    _active = importlib.import_module(BACKENDS[resolve_backend(name, device)])
    return _active


def backend_name() -> str:
    return next(k for k, v in BACKENDS.items() if v == _active.__name__)


def rms_norm(*args: Any, **kwargs: Any) -> Any:
    return _active.rms_norm(*args, **kwargs)


def linear(*args: Any, **kwargs: Any) -> Any:
    return _active.linear(*args, **kwargs)


def rotary(*args: Any, **kwargs: Any) -> Any:
    return _active.rotary(*args, **kwargs)


def attention(*args: Any, **kwargs: Any) -> Any:
    return _active.attention(*args, **kwargs)


def moe(*args: Any, **kwargs: Any) -> Any:
    return _active.moe(*args, **kwargs)


def kv_write(*args: Any, **kwargs: Any) -> Any:
    return _active.kv_write(*args, **kwargs)
