"""Lab service `cups`: a real cupsd behind each lab host, with a queue named `office`.

Each host's SSH sessions get `CUPS_SERVER` pointing at that host's own cupsd socket, so the same
`lpstat`/`cancel`/`cupsenable` commands a real workstation runs act on that host's spooler. The
lab user is in `lpadmin`, which the cupsd policy below trusts with queue administration.

Each host's cupsd is also a service its own service manager can restart, as `cups` is on a real
host: an init script `/etc/init.d/itops-lab-<lab id>-cups-<host>` (start-stop-daemon with a pid
file the lab tracks too), named in the host variable `cups_service`. `service NAME restart` —
what `printer.restart-spooler` and `service.restart` run on a host without systemd — restarts
exactly that cupsd. The scripts are removed by `lab down`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.lab.core import LabError, LabHost, LabState, add_user_to_group, wait_for

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

CUPSD = "/usr/sbin/cupsd"
INIT_DIR = Path("/etc/init.d")
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
            host.vars["cups_service"] = service_name(state, host)

    def start(self, lab: Lab, state: LabState) -> None:
        for host in state.hosts:
            root = lab.dir / "cups" / host.name
            for sub in ("spool", "cache", "state", "log", "ppd", "ssl"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            (root / "cupsd.conf").write_text(CUPSD_CONF.format(socket=host.env["CUPS_SERVER"]))
            (root / "cups-files.conf").write_text(CUPS_FILES_CONF.format(root=root))
            argv = [
                CUPSD,
                "-f",
                "-c",
                str(root / "cupsd.conf"),
                "-s",
                str(root / "cups-files.conf"),
            ]
            pidfile = Path(state.runtime) / f"{host.name}.cupsd.pid"
            process = state.spawn(
                f"cups:{host.name}", argv, root / "cupsd.conf", root / "log" / "cupsd.out"
            )
            pidfile.write_text(f"{process.pid}\n")
            process.pidfile = str(pidfile)
            script = INIT_DIR / service_name(state, host)
            script.write_text(
                INIT_SCRIPT.format(
                    name=service_name(state, host),
                    host=host.name,
                    lab=state.lab_id,
                    pidfile=shlex.quote(str(pidfile)),
                    socket=shlex.quote(host.env["CUPS_SERVER"]),
                    log=shlex.quote(str(root / "log" / "cupsd.out")),
                    args=" ".join(shlex.quote(a) for a in argv[1:]),
                )
            )
            os.chmod(script, 0o755)
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
        for host in state.hosts:
            (INIT_DIR / service_name(state, host)).unlink(missing_ok=True)
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

    def heal_printer(self, state: LabState, names: Iterable[str]) -> None:
        """The healthy state a lab host starts in: no jobs, the queue enabled and accepting."""
        for name in names:
            host = state.host(name)
            run(host, ["cancel", "-a", PRINTER])
            run(host, ["cupsenable", PRINTER])
            run(host, ["cupsaccept", PRINTER])


def service_name(state: LabState, host: LabHost) -> str:
    return f"itops-lab-{state.lab_id}-cups-{host.name}"


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

# An LSB init script for one lab host's cupsd (run by `service`, which clears the environment).
INIT_SCRIPT = """\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:
# Default-Stop:
# Short-Description: cupsd of itops lab host {host} (lab {lab}); removed by itops lab down
### END INIT INFO
PIDFILE={pidfile}
SOCKET={socket}
case "$1" in
  start)
    start-stop-daemon --start --quiet --oknodo --background --make-pidfile --pidfile "$PIDFILE" \\
      --output {log} --exec /usr/sbin/cupsd -- {args} || exit 1
    i=0; while [ ! -S "$SOCKET" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -S "$SOCKET" ] ;;
  stop)
    start-stop-daemon --stop --quiet --oknodo --retry TERM/10/KILL/5 --pidfile "$PIDFILE" \\
      --exec /usr/sbin/cupsd && rm -f "$SOCKET" ;;
  restart|force-reload)
    "$0" stop && "$0" start ;;
  status)
    start-stop-daemon --status --pidfile "$PIDFILE" --exec /usr/sbin/cupsd ;;
  *)
    echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
"""
