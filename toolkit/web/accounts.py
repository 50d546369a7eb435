"""The web view's accounts: a name, a role and an Argon2id hash (argon2-cffi, RFC 9106's
parameters), in one JSON file in the workspace's state folder, 0600 (see statefiles).

Roles: `auditor` reads every page; `lead` reads the KPI dashboard, tickets and approvals
(`ROLE_PAGES`). A password is never stored, logged or recorded: only its hash is kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ValidationError

ROLES = ("auditor", "lead")
# The pages each role may read (by route name); an auditor reads them all.
ROLE_PAGES = {
    "auditor": frozenset(
        {"search", "ticket", "host", "approvals", "chain", "kpi", "kpi_tickets", "home"}
    ),
    "lead": frozenset({"ticket", "approvals", "kpi", "kpi_tickets", "home"}),
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 12
FILE_NAME = "web-users.json"


@dataclass(frozen=True)
class Account:
    name: str
    role: str


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # Argon2id, RFC 9106 low-memory profile (argon2-cffi's default)


class Accounts:
    """The accounts file (`state_dir/web-users.json`)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME
        self._dummy: str | None = None

    def _load(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            users = data["users"]
            assert isinstance(users, dict)
            return users
        except (ValueError, KeyError, AssertionError) as exc:
            raise ValidationError(
                f"cannot read the web accounts file {self.path}: {exc}",
                hint="restore it from a backup, or remove it and add the accounts again",
            ) from None

    def _save(self, users: dict[str, dict[str, str]]) -> None:
        from toolkit.statefiles import write_private

        write_private(self.path, json.dumps({"users": users}, indent=2, sort_keys=True) + "\n")

    def list(self) -> list[Account]:
        return [Account(name, u["role"]) for name, u in sorted(self._load().items())]

    def get(self, name: str) -> Account | None:
        found = self._load().get(name)
        return Account(name, found["role"]) if found else None

    def add(self, name: str, role: str, password: str, *, replace: bool = False) -> Account:
        if not NAME.match(name):
            raise ValidationError(
                f"not an account name: {name!r}",
                hint="letters, digits and . _ @ - (at most 64), starting with a letter or digit",
            )
        if role not in ROLES:
            raise ValidationError(f"no role {role!r}", hint=f"roles: {', '.join(ROLES)}")
        if len(password) < MIN_PASSWORD:
            raise ValidationError(f"the password must have at least {MIN_PASSWORD} characters")
        users = self._load()
        if name in users and not replace:
            raise ValidationError(
                f"the account {name!r} exists", hint="--replace sets a new password and role"
            )
        users[name] = {"role": role, "hash": _hasher().hash(password)}
        self._save(users)
        return Account(name, role)

    def remove(self, name: str) -> bool:
        users = self._load()
        if users.pop(name, None) is None:
            return False
        self._save(users)
        return True

    def check(self, name: str, password: str) -> Account | None:
        """The account if `password` is its password, else None. An unknown name costs the same
        hash as a known one (no telling names apart by the time taken)."""
        from argon2.exceptions import InvalidHashError, VerificationError

        hasher = _hasher()
        found = self._load().get(name)
        if found is None:
            if self._dummy is None:
                self._dummy = hasher.hash("not a password: evens out the time taken")
            stored = self._dummy
        else:
            stored = found["hash"]
        try:
            hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return Account(name, found["role"]) if found else None
