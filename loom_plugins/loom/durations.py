"""Human durations (``30s``, ``15m``, ``4h``, ``7d``, ``2w``; ``0`` = unlimited) as seconds."""

from __future__ import annotations

import re

from loom.errors import RequestError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DURATION_RE = re.compile(r"^(0|\d+[smhdw])$")


def parse_duration(value: str | int, field: str = "duration") -> int:
    """Seconds in ``value``; an int is taken as seconds. Raises RequestError naming ``field``."""
    if isinstance(value, bool):
        raise RequestError(f"{field}: {value!r} is not a duration")
    if isinstance(value, int):
        if value < 0:
            raise RequestError(f"{field}: {value} is negative")
        return value
    if not isinstance(value, str) or not DURATION_RE.match(value):
        raise RequestError(f"{field}: {value!r} is not a duration: use e.g. 30m, 4h, 7d, 2w (0 = unlimited)")
    return 0 if value == "0" else int(value[:-1]) * UNITS[value[-1]]


def format_duration(seconds: int) -> str:
    if seconds == 0:
        return "0"
    for unit in ("w", "d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"
