"""Reading and writing setting values: durations, sizes, integers, switches, uids, paths.

Each parser takes what a TOML file or an environment variable holds (a string, a number, a
list) and returns the setting's value, or raises ``ValueError`` saying what was expected. The
formatters write a value back the way the configuration file spells it (``hookd config``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_FOREVER = ("forever", "infinity", "never", "none")


def parse_duration(value: Any, *, forever: bool = False) -> float | None:
    """``"30d"``, ``"12h"``, ``"15m"``, ``"30s"``, ``"50ms"`` or a number of seconds; with
    ``forever``, also ``"forever"`` (None: no limit)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 12h or 30d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        if forever and value.strip().lower() in _FOREVER:
            return None
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    hint = ' or "forever"' if forever else ""
    raise ValueError(f"expected a duration such as 30s, 12h or 30d{hint}, got {value!r}")


def parse_size(value: Any, *, unlimited: bool = False) -> int | None:
    """``"500MiB"``, ``"2GB"``, ``"64k"`` or a number of bytes (powers of 1024 either way)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 64KiB, 500MiB or 2GiB")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        if unlimited and value.strip().lower() in _FOREVER + ("unlimited",):
            return None
        m = _SIZE.match(value)
        if m:
            unit = (m.group(2) or "b").lower()[0]
            return int(float(m.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit])
    hint = ' or "unlimited"' if unlimited else ""
    raise ValueError(f"expected a size such as 64KiB, 500MiB or 2GiB{hint}, got {value!r}")


def age_limit(value: Any) -> float | None:
    """A duration, or ``"forever"`` (None)."""
    return parse_duration(value, forever=True)


def size_limit(value: Any) -> int | None:
    """A size, or ``"unlimited"`` (None)."""
    return parse_size(value, unlimited=True)


#: What the clients read in ``HOOKD_SPOOL_MAX``, and so all ``spool_limit`` takes: whole bytes,
#: optionally with K, M or G (KiB, MiB, GiB), no spaces. A shell has no decimals.
_CLIENT_SIZE = re.compile(r"(\d+)(?:([kmg])(?:i?b)?|b)?", re.IGNORECASE)


def spool_limit(value: Any) -> int | None:
    """The spool's cap: a size as the clients read it (``64KiB``, ``256MiB``, ``1G``, bytes),
    or ``"unlimited"`` (None). Stricter than ``parse_size``: a value the clients would not
    understand (``1.5GiB``, ``2 GiB``) is refused here, rather than silently read as the
    default by every hook."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        if value.lower() == "unlimited":
            return None
        m = _CLIENT_SIZE.fullmatch(value)
        if m:
            return int(m.group(1)) << {None: 0, "k": 10, "m": 20, "g": 30}[m.group(2) and m.group(2).lower()]
    raise ValueError(f'expected a size such as 64KiB, 256MiB or 1GiB (whole numbers) or "unlimited", got {value!r}')


def parse_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise ValueError(f"expected true or false, got {value!r}")


def parse_uids(value: Any) -> tuple[int, ...]:
    """A list in the file, comma- or space-separated in a variable, one int per flag."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of uids, got {value!r}")
    try:
        out = tuple(parse_int(v) for v in value)
    except ValueError:
        raise ValueError(
            f"expected user ids (comma-separated in a variable, a list in the file), got {value!r}"
        ) from None
    if any(u < 0 for u in out):
        raise ValueError("a uid cannot be negative")
    return out


def choice(*choices: str) -> Callable[[Any], str]:
    """A parser accepting one of ``choices`` (any case)."""

    def parse(value: Any) -> str:
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")

    return parse


def parse_path(value: Any) -> Path:
    if isinstance(value, str | Path) and str(value):
        return Path(value).expanduser().absolute()
    raise ValueError(f"expected a path, got {value!r}")


def optional_path(value: Any) -> Path | None:
    """A path, or ``""`` for none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_path(value)


_OFF = ("off", "none", "no", "false", "0")
_HOSTPORT = re.compile(r"^\s*(?:\[([0-9A-Fa-f:.]+)\]|([^:\s\[\]]+)):(\d{1,5})\s*$")


def parse_listen(value: Any) -> str | None:
    """``HOST:PORT`` for the HTTP listener, or ``"off"`` (None). HOST is an IP address
    (IPv6 in brackets: ``[::1]:8787``) or ``localhost`` (127.0.0.1: one address, so that the
    URL in a hook's settings and the listening socket cannot disagree). Port 0 takes a free
    port (tests; ``hookd status`` shows which). Returned as ``127.0.0.1:8787`` / ``[::1]:8787``."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in _OFF + ("",)):
        return None
    m = _HOSTPORT.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:8787 or [::1]:8787, or off, got {value!r}")
    host, port = m.group(1) or m.group(2), int(m.group(3))
    if port > 65535:
        raise ValueError(f"port {port} is out of range (0..65535)")
    if host.lower() == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (or localhost): write the address to listen on") from None
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def split_listen(listen: str) -> tuple[str, int]:
    """``"[::1]:8787"`` -> ``("::1", 8787)``; the value as ``parse_listen`` returns it."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8 and ::1 (IPv4-mapped loopback too)."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def parse_ms(value: Any) -> float:
    """Milliseconds (``HOOKD_BATCH_DELAY_MS``, ``--batch-delay``) -> seconds."""
    try:
        return float(value) / 1000.0
    except (TypeError, ValueError):
        raise ValueError(f"expected milliseconds, got {value!r}") from None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "forever"
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def format_size(size: int | None) -> str:
    if size is None:
        return "unlimited"
    for unit, n in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= n and size % n == 0:
            return f"{size // n}{unit}"
    return str(size)
