"""Deprecated import path, kept for one release: use `toolkit.remediation.catalog`.

Workspace tasks written before the move import from here; this forwards every name.
"""

from __future__ import annotations

import warnings
from typing import Any

import toolkit.remediation.catalog as _moved
from toolkit.remediation.catalog import *  # noqa: F403

warnings.warn(
    "toolkit.catalog moved to toolkit.remediation.catalog; the old path goes away in the next release",
    DeprecationWarning,
    stacklevel=2,
)


def __getattr__(name: str) -> Any:
    return getattr(_moved, name)
