"""Process-wide egress guard: gptoss reaches loopback and explicitly allowed hosts, nothing else.

``install()`` adds a ``sys.addaudithook`` hook that sees every Python-level socket operation that
can send a packet or resolve a name (``socket.connect``/``connect_ex``, ``sendto``, ``sendmsg``,
``getaddrinfo``, ``gethostbyname(_ex)``, ``gethostbyaddr``, ``getnameinfo``) and raises
:class:`EgressBlockedError` *before* the operation runs, so a refused host never receives a packet
and a refused name is never looked up. Each refusal is logged on the ``gptoss.guard`` logger.

Audit hooks cannot be removed, so the hook is added once and reads a module-level policy:
``install()`` may be called again to replace the allowlist (tests reconfigure it this way) and
``disable()`` turns checking off. What the guard does not cover: child processes (``curl``) and
native code that opens sockets without going through Python's ``socket`` module. The python tool's
sandbox needs no guard: it runs in a network namespace of its own, with no interface but loopback.
This guard protects gptoss's own process (model downloads, third-party telemetry, a mistyped URL).

Allowed without configuration: loopback addresses (127.0.0.0/8, ::1, IPv4-mapped loopback), the
unspecified address (which reaches this machine), Unix and netlink sockets; ``localhost`` is in
the default allowlist (``DEFAULT_ALLOWED_HOSTS``). Allowlist entries are host names (exact,
case-insensitive), IP addresses or networks in CIDR notation. Addresses an allowed name resolves
to are learned when the name is looked up, so a later ``connect`` to them passes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "ALLOW_ENV", "DEFAULT_ALLOWED_HOSTS", "OFFLINE_ENV", "EgressBlockedError", "check_host", "disable", "install",
    "self_test", "set_offline_env", "status",
]

log = logging.getLogger("gptoss.guard")

ALLOW_ENV = "GPTOSS_ALLOWED_HOSTS"  # comma-separated extra hosts, read by install() when no list is given
DEFAULT_ALLOWED_HOSTS: tuple[str, ...] = ("localhost",)

# Libraries that phone home or download on first use, told to stay offline.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
    "DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "WANDB_MODE": "offline",
    "WANDB_DISABLED": "true",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
}

_NAME_EVENTS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"}
_ADDRESS_EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg"}
_LOCAL_FAMILIES = {getattr(socket, n) for n in ("AF_UNIX", "AF_NETLINK") if hasattr(socket, n)}
_IP_FAMILIES = {socket.AF_INET, socket.AF_INET6}
_RECENT = 20  # refusals kept for status()
PROBE_HOST = "gptoss-guard-probe.invalid"  # RFC 6761: never resolves


class EgressBlockedError(PermissionError):
    """A network operation to a host outside the allowlist was refused before it ran."""

    def __init__(self, host: str, event: str) -> None:
        self.host = host
        self.event = event
        super().__init__(
            f"network access to {host!r} is blocked by gptoss's egress guard ({event}): only loopback and "
            f"allowed hosts may be reached. To allow it, set {ALLOW_ENV}={host} (comma-separated list) "
            f"or call gptoss.guard.install(allowed_hosts=[{host!r}, ...])")


@dataclass
class _Policy:
    enabled: bool = False
    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    learned: set[str] = field(default_factory=set)  # addresses allowed names resolved to
    blocked: int = 0
    recent: list[dict[str, str]] = field(default_factory=list)


_policy = _Policy()
_hook_added = False
_install_lock = threading.Lock()
_local = threading.local()  # .learning: resolving an allowed name; .logging: inside a refusal's log call


def install(allowed_hosts: Iterable[str] | None = None) -> None:
    """Turn the guard on (idempotent). ``allowed_hosts`` replaces the allowlist; None means
    ``DEFAULT_ALLOWED_HOSTS`` plus the comma-separated ``$GPTOSS_ALLOWED_HOSTS``. Loopback addresses
    are always allowed. Raises ValueError for an entry that is neither a host name nor an address."""
    global _hook_added, _policy
    if allowed_hosts is None:
        extra = [h for h in os.environ.get(ALLOW_ENV, "").split(",") if h.strip()]
        allowed_hosts = [*DEFAULT_ALLOWED_HOSTS, *extra]
    names: set[str] = set()
    networks = []
    for entry in allowed_hosts:
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if any(c in entry for c in "/: ") or entry.startswith("."):
                raise ValueError(f"invalid allowed host {entry!r}: expected a host name, an IP address or "
                                 "a network in CIDR notation") from None
            names.add(entry.lower().rstrip("."))
    with _install_lock:
        _policy = _Policy(enabled=True, names=frozenset(names), networks=tuple(networks),
                          blocked=_policy.blocked, recent=_policy.recent)
        if not _hook_added:
            sys.addaudithook(_audit)
            _hook_added = True


def disable() -> None:
    """Stop checking (the hook stays installed but lets everything through)."""
    _policy.enabled = False


def status() -> dict:
    """What ``gptoss doctor`` reports: whether the guard is on and what it allows."""
    p = _policy
    return {
        "installed": _hook_added,
        "enabled": _hook_added and p.enabled,
        "allowed_hosts": sorted(p.names) + [str(n) for n in p.networks],
        "always_allowed": ["loopback (127.0.0.0/8, ::1)", "unix sockets"],
        "blocked": p.blocked,
        "recent_refusals": list(p.recent),
    }


def self_test() -> bool:
    """True when the installed hook refuses a name lookup. The probe is numeric-only
    (``AI_NUMERICHOST``): even without the guard no resolver is asked. It is not logged or counted."""
    if not (_hook_added and _policy.enabled):
        return False
    _local.probing = True
    try:
        socket.getaddrinfo(PROBE_HOST, 443, flags=socket.AI_NUMERICHOST)
    except EgressBlockedError:
        return True
    except OSError:
        return False
    finally:
        _local.probing = False
    return False


def set_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the variables that keep Hugging Face, telemetry and tracking libraries offline
    (``OFFLINE_ENV``) in ``environ`` (default ``os.environ``); returns what was set."""
    env = os.environ if environ is None else environ
    env.update(OFFLINE_ENV)
    return dict(OFFLINE_ENV)


def _is_loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback or addr.is_unspecified  # connecting to 0.0.0.0 / :: reaches this machine


def _allowed(host: str) -> bool:
    if _is_loopback(host):
        return True
    p = _policy
    name = host.lower().rstrip(".")
    if name in p.names or host in p.learned:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return any(addr in net for net in p.networks)


def check_host(host: str | bytes | None, event: str = "check") -> None:
    """Raise :class:`EgressBlockedError` (and log it) unless the policy allows ``host``.
    ``None`` and the empty host (a passive/local lookup) are allowed."""
    if isinstance(host, bytes):
        host = host.decode("idna", "replace")
    if host is None or host == "" or not _policy.enabled or _allowed(str(host)):
        return
    _refuse(str(host), event)


def _refuse(host: str, event: str) -> None:
    if getattr(_local, "probing", False):
        raise EgressBlockedError(host, event)
    p = _policy
    p.blocked += 1
    p.recent = [*p.recent, {"host": host, "event": event}][-_RECENT:]
    if not getattr(_local, "logging", False):
        _local.logging = True  # a logging handler that itself uses sockets is refused, not recursed into
        try:
            log.warning("egress guard: refused %s to %r (not loopback, not in the allowlist; set %s to allow)",
                        event, host, ALLOW_ENV)
        finally:
            _local.logging = False
    raise EgressBlockedError(host, event)


def _learn(host: str) -> None:
    """Resolve an allowed name once more so that connect() to its addresses passes."""
    _local.learning = True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return
    finally:
        _local.learning = False
    _policy.learned.update(str(info[4][0]) for info in infos)


def _audit(event: str, args: tuple) -> None:
    if not event.startswith("socket.") or not _policy.enabled or getattr(_local, "learning", False):
        return
    if getattr(_local, "logging", False) and (event in _NAME_EVENTS or event in _ADDRESS_EVENTS
                                              or event == "socket.getnameinfo"):
        raise EgressBlockedError("(from a logging handler)", event)
    if event in _NAME_EVENTS:
        host = args[0]
        check_host(host, event)
        if event == "socket.getaddrinfo" and isinstance(host, str | bytes) and host:
            name = host.decode("idna", "replace") if isinstance(host, bytes) else host
            if not _is_loopback(name) and name.lower().rstrip(".") in _policy.names:
                _learn(name)
    elif event == "socket.getnameinfo":
        sockaddr = args[0]
        if isinstance(sockaddr, tuple) and sockaddr:
            check_host(sockaddr[0], event)
    elif event in _ADDRESS_EVENTS:
        sock, address = args[0], args[1]
        if address is None:  # sendmsg on a connected socket: connect() was checked
            return
        family = getattr(sock, "family", None)
        if family in _LOCAL_FAMILIES:
            return
        if family in _IP_FAMILIES and isinstance(address, tuple) and address:
            check_host(address[0], event)
            return
        _refuse(f"{address!r} (address family {family!r})", event)
