"""Process and port probes shared by the local provider, the stack launcher and the tests.

PID 1 on these machines reaps orphans late, so "alive" reads /proc state (a zombie is dead),
never ``kill -0``.
"""

from __future__ import annotations

import socket
from pathlib import Path


def proc_start_time(pid: int) -> str | None:
    """Start time of ``pid`` (clock ticks since boot), or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def process_alive(pid: int) -> bool:
    return proc_start_time(pid) is not None


def port_open(ip: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_ipv4() -> set[str]:
    """IPv4 addresses some socket on this host listens on (from /proc/net/tcp, LISTEN = 0A).
    Local nodes share the host's network: an address is only free if nothing listens on it."""
    out = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A":
            addr = fields[1].split(":")[0]
            out.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return out
