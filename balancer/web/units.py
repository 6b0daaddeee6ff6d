"""How the WebUI writes sizes, rates and moments: short, and the same on every page."""

from __future__ import annotations

import time

_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_DECIMAL = ("bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s")


def size(count: float) -> str:
    """Bytes in binary units, as memory is counted: 1536 -> 1.5 KiB."""
    return _scaled(count, 1024, _BINARY)


def bitrate(bytes_per_second: float | None) -> str:
    """A network rate in bits per second, as links are sold: 125000 B/s -> 1.0 Mbit/s."""
    if bytes_per_second is None:
        return "\N{EM DASH}"
    return _scaled(bytes_per_second * 8, 1000, _DECIMAL)


def moment(unix_time: float) -> str:
    """A time as the guide's System Overview writes it: 2026-06-19 08:30:01 UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_time))


def _scaled(value: float, step: int, units: tuple[str, ...]) -> str:
    for unit in units[:-1]:
        if abs(value) < step:
            return f"{value:.0f} {unit}" if unit == units[0] else f"{value:.1f} {unit}"
        value /= step
    return f"{value:.1f} {units[-1]}"
