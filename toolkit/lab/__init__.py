"""The local lab of real SSH hosts and services on loopback (see `core`)."""

from __future__ import annotations

from toolkit.lab.core import (
    DEFAULT_SERVICES,
    SERVICES,
    Lab,
    LabError,
    LabHost,
    LabState,
    Process,
    ed25519_keypair,
)

__all__ = [
    "DEFAULT_SERVICES",
    "SERVICES",
    "Lab",
    "LabError",
    "LabHost",
    "LabState",
    "Process",
    "ed25519_keypair",
]
