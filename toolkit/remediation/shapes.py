"""Value shapes and renderings every platform's remediations share (Linux, Windows, …)."""

from __future__ import annotations

from typing import Any

# A DNS name to resolve, and a host:port to connect to (an IPv6 address in brackets).
DNS_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})"
HOST_PORT = r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}"


def as_int(value: Any, default: int = 0) -> int:
    """A number a host printed (`" 42 "`) or returned in JSON (`42`, `42.0`) as an int;
    `default` when there is none (missing, empty, not a number)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
