"""Lab service `clamav`: a signature mirror on loopback and ClamAV's own files per host — offline.

Debian ships no signature database, and a lab must never reach the public mirror network. The lab
makes its own signatures (an MD5 `.hdb` line and a hex-body `.ndb` line that detect the EICAR
test string) and serves them over HTTP on 127.0.0.1. Each host gets its own `freshclam.conf`
(the recipe in shared/PEERS.md: no DNS lookups, `PrivateMirror` and one `DatabaseCustomURL` per
file on the lab mirror, the official databases excluded, one attempt) and its own database folder
on its disk. The host variable `clamav_freshclam_config` points `av.update`/`av.scan` at that
file — freshclam is never run with this machine's default configuration. Each host's database is
filled once at start, as the package's first freshclam run would.

Faults: `age()` makes a host's signatures days old (freshclam stopped running), and
`publish()` adds a signature for a new sample to the mirror.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.lab.core import LabError, LabState, serve_directory
from toolkit.lab.disk import host_root

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

DATABASES = ("itops-lab.hdb", "itops-lab.ndb")
INSTALL_HINT = "apt-get install clamav clamav-freshclam"
# The EICAR anti-virus test string, kept in two halves so no scanner flags this file.
EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

FRESHCLAM_CONF = """\
# itops lab host {host}: freshclam against the lab's loopback mirror only
DatabaseDirectory {db}
UpdateLogFile {log}
DatabaseOwner root
Foreground yes
DNSDatabaseInfo no
PrivateMirror http://127.0.0.1:{port}
{custom}ExcludeDatabase daily
ExcludeDatabase main
ExcludeDatabase bytecode
ScriptedUpdates no
Bytecode no
MaxAttempts 1
ConnectTimeout 5
ReceiveTimeout 10
"""


class ClamAV:
    name = "clamav"
    requires = ("sudo", "disk")

    def preflight(self, hosts: int) -> None:
        for tool in ("freshclam", "clamscan"):
            if not shutil.which(tool):
                raise LabError(f"{tool} is missing", hint=INSTALL_HINT)

    def prepare(self, lab: Lab, state: LabState) -> None:
        mirror = Path(state.runtime) / "clamav-mirror"
        mirror.mkdir(parents=True, exist_ok=True)
        data = EICAR.encode()
        (mirror / "itops-lab.hdb").write_text(
            f"{hashlib.md5(data).hexdigest()}:{len(data)}:ItopsLab.EICAR.HDB\n"
        )
        (mirror / "itops-lab.ndb").write_text(f"ItopsLab.EICAR.NDB:0:*:{data[:40].hex()}\n")
        for host in state.hosts:
            root = host_root(state, host)
            for sub in ("etc/clamav", "var/lib/clamav", "var/log/clamav", "var/lib/itops"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            (root / "home" / "shared").mkdir(parents=True, exist_ok=True)
            host.vars.update(
                clamav_freshclam_config=str(root / "etc/clamav/freshclam.conf"),
                av_quarantine_dir=str(root / "var/lib/itops/quarantine"),
                # lab hosts share this machine's disk: a scan skips itops' own workspace and
                # virtualenv (and the signature mirror, whose test signatures are EICAR's)
                av_exclude_dirs=[str(lab.workspace.root), sys.prefix, str(mirror)],
            )

    def start(self, lab: Lab, state: LabState) -> None:
        mirror = Path(state.runtime) / "clamav-mirror"
        port = serve_directory(state, "clamav-mirror", mirror, lab.dir / "clamav-mirror.log")
        state.data["clamav"] = {"port": port, "mirror": str(mirror)}
        custom = "".join(f"DatabaseCustomURL http://127.0.0.1:{port}/{n}\n" for n in DATABASES)
        for host in state.hosts:
            root = host_root(state, host)
            conf = Path(host.vars["clamav_freshclam_config"])
            conf.write_text(
                FRESHCLAM_CONF.format(
                    host=host.name,
                    db=root / "var/lib/clamav",
                    log=root / "var/log/clamav/freshclam.log",
                    port=port,
                    custom=custom,
                )
            )
            freshclam(conf)

    def cleanup(self, lab: Lab, state: LabState) -> None:
        pass  # the mirror and the hosts' files live in the lab's runtime folder

    # -- faults, for practice and tests ------------------------------------------------------
    def database_dir(self, state: LabState, name: str) -> Path:
        return host_root(state, state.host(name)) / "var/lib/clamav"

    def age(self, state: LabState, name: str, days: float = 5) -> None:
        """Make a host's signatures look `days` old, as if freshclam had stopped running."""
        when = time.time() - days * 86400
        for path in self.database_dir(state, name).iterdir():
            if path.is_file():
                os.utime(path, (when, when))

    def publish(self, state: LabState, signature: str, sample: bytes) -> None:
        """Add a body signature for `sample` to the lab mirror's .ndb database."""
        mirror = Path(state.data["clamav"]["mirror"])
        with open(mirror / "itops-lab.ndb", "a") as f:
            f.write(f"{signature}:0:*:{sample.hex()}\n")


def freshclam(conf: Path) -> None:
    done = subprocess.run(
        ["freshclam", f"--config-file={conf}"], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise LabError(f"freshclam --config-file={conf} failed: {done.stdout}{done.stderr}")
