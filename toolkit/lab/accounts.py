"""Lab service `accounts`: local accounts for `password.reset` to work on, unique to one lab.

Lab hosts share this machine's /etc/passwd and /etc/shadow, so the accounts are real local
accounts of this machine, named after the lab id (`itl-<lab id>-jdoe`, `itl-<lab id>-admin`) so
several labs never collide, created without a home or a login shell, locked (`!` in shadow, as a
user locked out after too many attempts), and deleted by `lab down`. The `-admin` account is a
member of the `sudo` group: the privileged account the reset must refuse. It is locked and has no
password; `lab down` removes it.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from toolkit.lab.core import LabError, LabState

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

ROLES = {"user": (), "admin": ("sudo",)}


def account(state: LabState, role: str) -> str:
    return f"itl-{state.lab_id}-{'jdoe' if role == 'user' else role}"


class Accounts:
    name = "accounts"

    def preflight(self, hosts: int) -> None:
        pass

    def prepare(self, lab: Lab, state: LabState) -> None:
        names = {}
        for role, groups in ROLES.items():
            name = account(state, role)
            argv = ["useradd", "-M", "-s", "/usr/sbin/nologin", "-c", f"itops lab {state.lab_id}"]
            if groups:
                argv += ["-G", ",".join(groups)]
            done = subprocess.run([*argv, name], capture_output=True, text=True)
            if done.returncode not in (0, 9):  # 9: exists (a re-run after a crash)
                raise LabError(f"useradd {name} failed: {done.stderr.strip()}")
            self.lock(name)
            names[role] = name
        state.data["accounts"] = names

    def start(self, lab: Lab, state: LabState) -> None:
        pass

    def cleanup(self, lab: Lab, state: LabState) -> None:
        for role in ROLES:
            subprocess.run(["userdel", account(state, role)], capture_output=True)

    @staticmethod
    def lock(name: str) -> None:
        """Lock the password (`!` in shadow), as too many failed logins or an admin would."""
        subprocess.run(["usermod", "-L", name], capture_output=True, check=True)

    @staticmethod
    def restore(name: str) -> None:
        """Back to how the lab made the account: no password, locked, nothing forced at login
        (so tests do not depend on what an earlier test's reset left behind)."""
        import datetime

        subprocess.run(["usermod", "-p", "!", name], capture_output=True, check=True)
        today = datetime.date.today().isoformat()
        subprocess.run(["chage", "-d", today, name], capture_output=True, check=True)
