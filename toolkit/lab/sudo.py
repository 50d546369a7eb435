"""Lab service `sudo`: the lab user may `sudo -n`, as an L2 login on a managed host may.

Remediations that need root go through `sudo -n` (never a root login), so the lab user gets a
sudoers drop-in for the lifetime of one lab: `/etc/sudoers.d/itops-lab-<lab id>`, validated with
`visudo -cf` before it is put in place and removed by `lab down`. It also keeps the variables the
lab sets in each host's SSH sessions (APT_CONFIG, CUPS_SERVER) across sudo, so a command run as
root still reaches that host's own package database and spooler — never this machine's.

This machine is shared: while a lab is up, its login user (key login on loopback only) is root
through sudo. Several labs may run at once; each has its own drop-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.lab.core import LabError, LabState

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

SUDOERS_DIR = Path("/etc/sudoers.d")
# The variables lab hosts set through sshd SetEnv that must survive `sudo`.
KEEP_ENV = ("APT_CONFIG", "CUPS_SERVER")


def drop_in(lab_id: str) -> Path:
    return SUDOERS_DIR / f"itops-lab-{lab_id}"  # no dot: sudo skips names with one


class Sudo:
    name = "sudo"

    def preflight(self, hosts: int) -> None:
        if not shutil.which("sudo") or not shutil.which("visudo"):
            raise LabError("sudo is not installed", hint="apt-get install sudo")

    def prepare(self, lab: Lab, state: LabState) -> None:
        text = (
            f"# itops lab {state.lab_id} ({lab.dir}); removed by `itops lab down`\n"
            f'Defaults:{state.user} env_keep += "{" ".join(KEEP_ENV)}"\n'
            f"{state.user} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        )
        target = drop_in(state.lab_id)
        tmp = SUDOERS_DIR / f".itops-lab-{state.lab_id}.tmp"
        SUDOERS_DIR.mkdir(mode=0o750, exist_ok=True)
        tmp.write_text(text)
        os.chmod(tmp, 0o440)
        check = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True)
        if check.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise LabError(f"visudo rejected the lab's sudoers drop-in: {check.stdout.strip()}")
        tmp.replace(target)

    def start(self, lab: Lab, state: LabState) -> None:
        pass

    def cleanup(self, lab: Lab, state: LabState) -> None:
        drop_in(state.lab_id).unlink(missing_ok=True)
        (SUDOERS_DIR / f".itops-lab-{state.lab_id}.tmp").unlink(missing_ok=True)
