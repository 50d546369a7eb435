"""Lab service `disk`: each lab host gets a root folder of its own, with a small real /var.

Lab hosts share this machine's filesystem, so what must differ per host lives under
`/run/itops-lab/<lab id>/hosts/<host>/` (its "root"): `var/` there is a 16 MiB tmpfs — a real,
separately mounted filesystem that can run full — holding the host's logs, package caches and
databases (`apt` and `clamav` put theirs there). The host's inventory variables point the
remediations at it (`disk_path`, `log_dir`, `logrotate_conf`, `logrotate_state`); on a real host
they default to `/`, `/var/log` and the system's logrotate files.

`fill()` is the practice fault for `disk.cleanup`: old rotated logs until the disk is nearly full.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.lab.core import LabError, LabHost, LabState

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

SIZE_MB = 16
LOGROTATE_CONF = """\
# itops lab host {host}: rotate the host's own logs (never this machine's)
{log}/*.log {{
    rotate 3
    size 64k
    compress
    missingok
    notifempty
}}
"""


def host_root(state: LabState, host: LabHost) -> Path:
    """The folder that stands for `/` of one lab host (its own var/, etc/, home/)."""
    return Path(state.runtime) / "hosts" / host.name


class Disk:
    name = "disk"

    def preflight(self, hosts: int) -> None:
        if not shutil.which("mount") or not shutil.which("umount"):
            raise LabError("mount/umount are missing", hint="apt-get install mount")

    def prepare(self, lab: Lab, state: LabState) -> None:
        for host in state.hosts:
            root = host_root(state, host)
            var = root / "var"
            (root / "etc").mkdir(parents=True, exist_ok=True)
            var.mkdir(parents=True, exist_ok=True)
            mounted = subprocess.run(
                [
                    "mount",
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={SIZE_MB}m,mode=0755",
                    f"itops-lab-{state.lab_id}",
                    str(var),
                ],
                capture_output=True,
                text=True,
            )
            if mounted.returncode != 0:
                raise LabError(
                    f"cannot mount the lab disk for {host.name}: {mounted.stderr.strip()}",
                    hint="the lab needs root with permission to mount a tmpfs "
                    "(or leave out the disk service: --services cups)",
                )
            for sub in ("log", "cache", "lib/logrotate", "tmp"):
                (var / sub).mkdir(parents=True, exist_ok=True)
            (var / "log" / "syslog.log").write_text("lab syslog\n")
            conf = root / "etc" / "logrotate.conf"
            conf.write_text(LOGROTATE_CONF.format(host=host.name, log=var / "log"))
            host.vars.update(
                disk_path=str(var),
                log_dir=str(var / "log"),
                logrotate_conf=str(conf),
                logrotate_state=str(var / "lib" / "logrotate" / "status"),
            )

    def start(self, lab: Lab, state: LabState) -> None:
        pass

    def cleanup(self, lab: Lab, state: LabState) -> None:
        for host in state.hosts:
            var = host_root(state, host) / "var"
            if os.path.ismount(var):
                done = subprocess.run(["umount", str(var)], capture_output=True)
                if done.returncode != 0:
                    subprocess.run(["umount", "-l", str(var)], capture_output=True)

    # -- faults, for practice and tests ------------------------------------------------------
    def fill(self, state: LabState, name: str, free_percent: float = 10.0) -> int:
        """Write old rotated logs on a lab host's disk until less than `free_percent` is free.
        Returns the bytes written."""
        host = state.host(name)
        var = host_root(state, host) / "var"
        log = var / "log"
        old = time.time() - 30 * 86400
        written, n = 0, 0
        chunk = os.urandom(256 * 1024)  # incompressible, like real compressed logs
        while _free_percent(var) >= free_percent:
            n += 1
            path = log / f"app.log.{n}.gz"
            try:
                path.write_bytes(chunk)
            except OSError:
                break  # full
            os.utime(path, (old, old))
            written += len(chunk)
        return written


def _free_percent(path: Path) -> float:
    st = os.statvfs(path)
    return 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else 0.0
