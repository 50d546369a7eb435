"""Generated passwords: one generator for every reset task (Linux, Windows, directories).

The alphabet leaves out characters people misread when a password is read out or typed from a
screen (l/1/I, O/0), and its symbols need no quoting in a shell, PowerShell or an LDAP value.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

CLASSES = {
    "lower": "abcdefghijkmnopqrstuvwxyz",
    "upper": "ABCDEFGHJKLMNPQRSTUVWXYZ",
    "digit": "23456789",
    "symbol": "!#%+-=?@^_",
}


def generate_password(length: int, classes: Sequence[str] = tuple(CLASSES)) -> str:
    """A random password with at least one character of every class asked for."""
    alphabet = "".join(CLASSES[c] for c in classes)
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(ch in CLASSES[c] for ch in value) for c in classes):
            return value
