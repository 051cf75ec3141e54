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
case-insensitive), ``*.example.com`` (the domain and its subdomains), ``*`` (any host: nothing is
refused), IP addresses or networks in CIDR notation, each optionally with ``:PORT`` (``[::1]:PORT``)
to allow that port only. :func:`allow` adds entries to the list in force (the browser's
``--web-allow`` hosts arrive this way). Addresses an allowed name resolves to are learned when the
name is looked up, so a later ``connect`` to them passes (on the name's ports).

Loopback mode ``listed`` (``install(loopback=False)`` or ``$GPTOSS_GUARD_LOOPBACK=listed``) stops
allowing every loopback port: only listed ones (``127.0.0.1:8888``) may be reached, for machines
where other local services must stay out of reach of gptoss (and of what it reads).
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
    "ALLOW_ENV", "DEFAULT_ALLOWED_HOSTS", "LOOPBACK_ENV", "OFFLINE_ENV", "EgressBlockedError", "allow", "check_host",
    "disable", "install", "probe_connect",
    "self_test", "set_offline_env", "status",
]

log = logging.getLogger("gptoss.guard")

ALLOW_ENV = "GPTOSS_ALLOWED_HOSTS"  # comma-separated extra hosts, read by install() when no list is given
LOOPBACK_ENV = "GPTOSS_GUARD_LOOPBACK"  # "all" (default) or "listed": only loopback entries of the list
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


Ports = frozenset[int] | None  # None: any port
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _merge(a: Ports, b: Ports) -> Ports:
    return None if a is None or b is None else a | b


def _add(table: dict, key: object, ports: Ports) -> None:
    table[key] = _merge(table[key], ports) if key in table else ports


@dataclass
class _Policy:
    enabled: bool = False
    loopback: bool = True  # every loopback address and port allowed (False: only listed ones)
    names: dict[str, Ports] = field(default_factory=dict)  # exact host names
    suffixes: dict[str, Ports] = field(default_factory=dict)  # ".example.com": domain and subdomains; "": any
    networks: dict[Network, Ports] = field(default_factory=dict)
    learned: dict[str, Ports] = field(default_factory=dict)  # addresses allowed names resolved to
    blocked: int = 0
    recent: list[dict[str, str]] = field(default_factory=list)


_policy = _Policy()
_hook_added = False
_install_lock = threading.Lock()
_local = threading.local()  # .learning: resolving an allowed name; .logging: inside a refusal's log call


def install(allowed_hosts: Iterable[str] | None = None, *, loopback: bool | None = None) -> None:
    """Turn the guard on (idempotent). ``allowed_hosts`` replaces the allowlist; None means
    ``DEFAULT_ALLOWED_HOSTS`` plus the comma-separated ``$GPTOSS_ALLOWED_HOSTS``. An entry may end in
    ``:PORT`` (``[::1]:PORT`` for IPv6) to allow that port only. ``loopback`` (default: True unless
    ``$GPTOSS_GUARD_LOOPBACK`` is ``listed``) allows every loopback address and port; False allows only
    the loopback entries of the list. Raises ValueError for an entry that is neither a host nor an address."""
    global _hook_added, _policy
    if loopback is None:
        mode = os.environ.get(LOOPBACK_ENV, "all").strip().lower() or "all"
        if mode not in ("all", "listed"):
            raise ValueError(f"${LOOPBACK_ENV} must be 'all' or 'listed', got {mode!r}")
        loopback = mode == "all"
    if allowed_hosts is None:
        extra = [h for h in os.environ.get(ALLOW_ENV, "").split(",") if h.strip()]
        # listed loopback: "localhost" (any port) would undo it, so only the listed entries count
        allowed_hosts = [*(DEFAULT_ALLOWED_HOSTS if loopback else ()), *extra]
    fresh = _Policy()
    _parse_into(fresh, allowed_hosts)
    with _install_lock:
        _policy = _Policy(enabled=True, loopback=loopback, names=fresh.names, suffixes=fresh.suffixes,
                          networks=fresh.networks, blocked=_policy.blocked, recent=_policy.recent)
        if not _hook_added:
            sys.addaudithook(_audit)
            _hook_added = True


def allow(hosts: Iterable[str]) -> None:
    """Add ``hosts`` to the allowlist in force (whether or not the guard is on); same entry forms as
    :func:`install`. The browser's ``--web-allow`` hosts reach the guard this way."""
    hosts = list(hosts)
    with _install_lock:
        probe = _Policy()
        _parse_into(probe, hosts)  # validate everything before changing anything
        _parse_into(_policy, hosts)


def _split_port(entry: str) -> tuple[str, Ports]:
    """``host:443`` / ``[::1]:443`` / ``127.0.0.1:80`` -> (host, {port}); anything else -> (entry, None)."""
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep:
            raise ValueError(f"invalid allowed host {entry!r}: unclosed '['")
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"invalid allowed host {entry!r}")
        port_text = rest[1:]
    elif entry.count(":") == 1:  # more than one colon: a bare IPv6 address or network, no port
        host, port_text = entry.split(":")
    else:
        return entry, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"invalid allowed host {entry!r}: the port must be a number from 1 to 65535")
    return host, frozenset({int(port_text)})


def _parse_into(policy: _Policy, entries: Iterable[str]) -> None:
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        host, ports = _split_port(entry)
        try:
            _add(policy.networks, ipaddress.ip_network(host, strict=False), ports)
            continue
        except ValueError:
            pass
        name = host.lower().rstrip(".")
        if name == "*":
            _add(policy.suffixes, "", ports)
            continue
        if name.startswith("*."):
            name = name[1:]
        domain = name.startswith(".")
        bare = name[1:] if domain else name
        if not bare or any(c in bare for c in "/:*[] ") or bare.startswith("."):
            raise ValueError(f"invalid allowed host {entry!r}: expected a host name, '*.domain', '*', an IP "
                             "address or a network in CIDR notation, optionally with ':PORT'")
        _add(policy.suffixes if domain else policy.names, name, ports)


def disable() -> None:
    """Stop checking (the hook stays installed but lets everything through)."""
    _policy.enabled = False


def _show(entry: object, ports: Ports) -> str:
    text = str(entry)
    if ports is None:
        return text
    if ":" in text:
        text = f"[{text}]"
    return ",".join(f"{text}:{p}" for p in sorted(ports))


def status() -> dict:
    """What ``gptoss doctor`` reports: whether the guard is on and what it allows."""
    p = _policy
    allowed = ([_show(n, v) for n, v in sorted(p.names.items())]
               + [_show("*" if s == "" else "*" + s, v) for s, v in sorted(p.suffixes.items())]
               + [_show(n, v) for n, v in p.networks.items()])
    return {
        "installed": _hook_added,
        "enabled": _hook_added and p.enabled,
        "allowed_hosts": allowed,
        "loopback": "all" if p.loopback else "listed only",
        "always_allowed": (["loopback (127.0.0.0/8, ::1)"] if p.loopback else []) + ["unix sockets"],
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


def probe_connect(address: tuple[str, int]) -> str | None:
    """Would a TCP connect to ``address`` be refused? Raises the ``socket.connect`` audit event with a
    real socket but never calls ``connect()``, so no packet can leave even when the guard is off.
    Returns the refusal message, or None when the connection would be allowed. Not logged or counted."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    _local.probing = True
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sys.audit("socket.connect", sock, address)
    except EgressBlockedError as e:
        return str(e)
    finally:
        _local.probing = False
    return None


def set_offline_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the variables that keep Hugging Face, telemetry and tracking libraries offline
    (``OFFLINE_ENV``) in ``environ`` (default ``os.environ``); returns what was set."""
    env = os.environ if environ is None else environ
    env.update(OFFLINE_ENV)
    return dict(OFFLINE_ENV)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr


def _is_loopback(host: str) -> bool:
    addr = _ip(host)
    return addr is not None and (addr.is_loopback or addr.is_unspecified)  # 0.0.0.0 / :: reach this machine


def _port_ok(ports: Ports, port: int | None) -> bool:
    return ports is None or port is None or port in ports


def _suffix_allowed(name: str, port: int | None = None) -> bool:
    return any(_port_ok(ports, port) and (s == "" or name == s[1:] or name.endswith(s))
               for s, ports in _policy.suffixes.items())


def _name_allowed(name: str, port: int | None = None) -> bool:
    p = _policy
    name = name.lower().rstrip(".")
    return (name in p.names and _port_ok(p.names[name], port)) or _suffix_allowed(name, port)


def _allowed(host: str, port: int | None = None) -> bool:
    """``port`` None: a name lookup (any entry for the host will do; the port is checked at connect)."""
    p = _policy
    if p.loopback and _is_loopback(host):
        return True
    if _name_allowed(host, port):
        return True
    if host in p.learned and _port_ok(p.learned[host], port):
        return True
    addr = _ip(host)
    if addr is None:
        return False
    if "" in p.suffixes and _port_ok(p.suffixes[""], port):  # "*": any host
        return True
    return any(addr in net and _port_ok(ports, port) for net, ports in p.networks.items())


def check_host(host: str | bytes | None, event: str = "check", port: int | None = None) -> None:
    """Raise :class:`EgressBlockedError` (and log it) unless the policy allows ``host`` (and ``port``).
    ``None`` and the empty host (a passive/local lookup) are allowed."""
    if isinstance(host, bytes):
        host = host.decode("idna", "replace")
    if host is None or host == "" or not _policy.enabled or _allowed(str(host), port):
        return
    shown = str(host) if port is None else _show(host, frozenset({port}))
    _refuse(shown, event)


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
    """Resolve an allowed name once more so that connect() to its addresses passes (on its ports)."""
    p = _policy
    name = host.lower().rstrip(".")
    ports: Ports = frozenset()
    if name in p.names:
        ports = _merge(ports, p.names[name])
    for s, allowed in p.suffixes.items():
        if s == "" or name == s[1:] or name.endswith(s):
            ports = _merge(ports, allowed)
    _local.learning = True
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return
    finally:
        _local.learning = False
    for info in infos:
        _add(p.learned, str(info[4][0]), ports)


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
            if not _is_loopback(name) and _name_allowed(name):
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
            port = address[1] if len(address) > 1 and isinstance(address[1], int) else None
            check_host(address[0], event, port)
            return
        _refuse(f"{address!r} (address family {family!r})", event)
