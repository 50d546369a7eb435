"""Lab service `cups`: a real cupsd behind each lab host, with a queue named `office`.

Each host's SSH sessions get `CUPS_SERVER` pointing at that host's own cupsd socket, so the same
`lpstat`/`cancel`/`cupsenable` commands a real workstation runs act on that host's spooler. The
lab user is in `lpadmin`, which the cupsd policy below trusts with queue administration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .core import LabError, LabHost, LabState, add_user_to_group, wait_for

if TYPE_CHECKING:
    from .core import Lab

CUPSD = "/usr/sbin/cupsd"
MAX_HOSTS = 32
PRINTER = "office"
INSTALL_HINT = "apt-get install cups-daemon cups-client cups-bsd"


class Cups:
    name = "cups"

    def preflight(self, hosts: int) -> None:
        if hosts > MAX_HOSTS:
            raise LabError(
                f"CUPS on {hosts} hosts would start {hosts} cupsd processes",
                hint=f"use --services none for labs over {MAX_HOSTS} hosts",
            )
        if not os.access(CUPSD, os.X_OK) or not shutil.which("lpadmin"):
            raise LabError("CUPS is not installed", hint=INSTALL_HINT)

    def prepare(self, lab: Lab, state: LabState) -> None:
        add_user_to_group("lpadmin")
        for host in state.hosts:
            host.env["CUPS_SERVER"] = f"{state.runtime}/{host.name}.cups.sock"

    def start(self, lab: Lab, state: LabState) -> None:
        for host in state.hosts:
            root = lab.dir / "cups" / host.name
            for sub in ("spool", "cache", "state", "log", "ppd", "ssl"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            (root / "cupsd.conf").write_text(CUPSD_CONF.format(socket=host.env["CUPS_SERVER"]))
            (root / "cups-files.conf").write_text(CUPS_FILES_CONF.format(root=root))
            state.spawn(
                f"cups:{host.name}",
                [CUPSD, "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
                root / "cupsd.conf",
                root / "log" / "cupsd.out",
            )
        for host in state.hosts:
            socket_path = Path(host.env["CUPS_SERVER"])
            wait_for(
                socket_path.exists,
                15,
                f"cupsd for {host.name} did not start (see {lab.dir}/cups/{host.name}/log)",
            )
            run(
                host,
                [
                    "lpadmin",
                    "-p",
                    PRINTER,
                    "-E",
                    "-v",
                    "file:/dev/null",
                    "-D",
                    f"Lab printer on {host.name}",
                ],
            )

    def cleanup(self, lab: Lab, state: LabState) -> None:
        shutil.rmtree(lab.dir / "cups", ignore_errors=True)

    # -- faults, for practice and tests ------------------------------------------------------
    def break_printer(self, state: LabState, names: Iterable[str], jobs: int = 3) -> list[str]:
        """Put a lab host's printer in the state L2 is called for: paused with stuck jobs."""
        broken = []
        for name in names:
            host = state.host(name)
            run(host, ["cupsdisable", "-r", "paper jam", PRINTER])
            for _ in range(jobs):
                run(host, ["lp", "-d", PRINTER, "-o", "raw"], stdin=b"itops lab test page\n")
            broken.append(name)
        return broken


def run(host: LabHost, argv: Sequence[str], stdin: bytes | None = None) -> str:
    """Run a CUPS client command locally against a lab host's own cupsd."""
    env = {**os.environ, "CUPS_SERVER": host.env.get("CUPS_SERVER", ""), "LC_ALL": "C"}
    result = subprocess.run(list(argv), env=env, input=stdin, capture_output=True, timeout=30)
    if result.returncode != 0:
        raise LabError(f"{' '.join(argv)} on {host.name} failed: {result.stderr.decode().strip()}")
    return result.stdout.decode()


CUPSD_CONF = """\
LogLevel warn
Listen {socket}
Browsing No
WebInterface No
DefaultAuthType Basic
<Location />
  Order allow,deny
  Allow all
</Location>
<Policy default>
  JobPrivateAccess default
  JobPrivateValues default
  SubscriptionPrivateAccess default
  SubscriptionPrivateValues default
  <Limit All>
    Order deny,allow
  </Limit>
  <Limit Cancel-Job Cancel-Jobs Cancel-My-Jobs Purge-Jobs CUPS-Authenticate-Job>
    Require user @OWNER @SYSTEM
    Order deny,allow
  </Limit>
  <Limit Pause-Printer Resume-Printer Enable-Printer Disable-Printer Hold-New-Jobs \
Release-Held-New-Jobs Restart-Printer CUPS-Accept-Jobs CUPS-Reject-Jobs CUPS-Add-Modify-Printer \
CUPS-Delete-Printer CUPS-Add-Modify-Class CUPS-Delete-Class CUPS-Set-Default>
    AuthType Default
    Require user @SYSTEM
    Order deny,allow
  </Limit>
</Policy>
"""

CUPS_FILES_CONF = """\
ServerRoot {root}
RequestRoot {root}/spool
CacheDir {root}/cache
StateDir {root}/state
AccessLog {root}/log/access_log
ErrorLog {root}/log/error_log
PageLog {root}/log/page_log
FileDevice Yes
SystemGroup lpadmin root
"""
