"""Lab service `rt`: a real Request Tracker 5 on loopback, the service desk itops writes back to.

Debian's `request-tracker5 rt5-db-sqlite rt5-standalone` install RT with an SQLite database that
holds the user `root` (password `password`). The lab never touches that installation: it copies
the packaged database into its own folder, writes its own site configuration (`RT_SITE_CONFIG`,
and an empty `RT_SITE_CONFIG_DIR` so the package's own drop-ins — its database path, its web
path `/rt` — are not read) and starts RT's standalone server (Plack/Starlet) on a loopback
address of its own, 127.1.251.1, away from the lab hosts' 127.1.0.x. REST 2 answers at
`http://127.1.251.1:PORT/REST/2.0/` with basic auth (RT 5.0.3 accepts it out of the box).

RT's standalone server speaks HTTP only. On loopback that is what the lab uses; a desk reached
over a network is configured with an https URL, and itops verifies its certificate (docs/itsm.md).

`RtServer` is the server alone (the integration tests start one per session with it);
`Rt` is the lab service `itops lab up --services rt` runs, which also prints the `[itsm]` lines
for itops.toml. Outgoing mail goes to a temporary file (`$MailCommand = 'testfile'`), never out.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.lab.core import LabError, LabState, can_bind

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

RT_SERVER = "/usr/share/request-tracker5/libexec/rt-server"
PACKAGED_DB = Path("/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb")
INSTALL_HINT = (
    "DEBIAN_FRONTEND=noninteractive apt-get install request-tracker5 rt5-db-sqlite rt5-standalone"
)
ADDRESS = "127.1.251.1"
USER = "root"
PASSWORD = "password"  # the packaged database's administrator (a lab-only, well-known value)
START_TIMEOUT = 90.0
LAB_PORT = 8080  # `itops lab up --services rt`'s, if free (then its [itsm] url stays the same)
SEED_SUBJECT = "The office printer on lab-01 is stuck"

SITE_CONFIG = """\
# itops lab: Request Tracker on loopback (written by toolkit/lab/rt.py)
Set($rtname, 'itops-lab');
Set($Organization, 'itops-lab');
Set($WebPath, '');
Set($WebDomain, '{address}');
Set($WebPort, {port});
Set($WebBaseURL, 'http://{address}:{port}');
Set(@ReferrerWhitelist, qw({address}:{port}));
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{db}');
Set($MailCommand, 'testfile');
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($LogToSTDERR, 'warning');
1;
"""


class RtServer:
    """One RT in `directory`: its own copy of the packaged database and its own site config."""

    def __init__(self, directory: Path, *, address: str = ADDRESS, port: int | None = None):
        self.dir = directory
        self.address = address
        self.port = port or free_port(address)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"{self.url}/REST/2.0/"

    @property
    def access_log(self) -> Path:
        """On RT's command line, which is how `lab down` knows the process is ours."""
        return self.dir / "access.log"

    @property
    def log(self) -> Path:
        return self.dir / "rt.log"

    def prepare(self) -> None:
        """Copy the packaged database (once: a restart keeps the tickets) and write the config."""
        preflight()
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "site.d").mkdir(exist_ok=True)  # RT_SITE_CONFIG_DIR: empty on purpose
        db = self.dir / "rtdb"
        if not db.exists():
            shutil.copy2(PACKAGED_DB, db)
        (self.dir / "RT_SiteConfig.pm").write_text(
            SITE_CONFIG.format(address=self.address, port=self.port, db=db)
        )

    def argv(self) -> list[str]:
        return [
            RT_SERVER,
            "--port",
            str(self.port),
            "--host",
            self.address,
            "--max-workers",
            "4",
            "--access-log",
            str(self.access_log),
        ]

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.dir),
            "RT_SITE_CONFIG": str(self.dir / "RT_SiteConfig.pm"),
            "RT_SITE_CONFIG_DIR": str(self.dir / "site.d"),
        }

    def start(self, timeout: float = START_TIMEOUT) -> float:
        """Start RT (in its own session) and wait until REST 2 answers; the seconds it took."""
        self.prepare()
        began = time.monotonic()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.env(),
                start_new_session=True,
            )
        self.wait_ready(timeout, process=self.process)
        return time.monotonic() - began

    def wait_ready(
        self, timeout: float = START_TIMEOUT, process: subprocess.Popen[bytes] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LabError(
                    f"RT exited with {process.returncode} while starting (see {self.log})"
                )
            if answers(self.rest_url):
                return
            time.sleep(0.2)
        raise LabError(
            f"RT did not answer at {self.rest_url} within {timeout:g} s (see {self.log})"
        )

    def stop(self) -> None:
        """Stop RT and its workers (its whole session), and wait for them."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not can_bind(self.address, self.port):
            time.sleep(0.1)  # the workers of a killed master may still hold the port a moment

    def seed_ticket(self) -> str:
        """A first ticket to practise on (RT-1 in a fresh lab): what a user would have filed."""
        import base64
        import json

        body = {
            "Queue": "General",
            "Subject": SEED_SUBJECT,
            "Requestor": "alice@example.org",
            "Priority": 50,
        }
        request = urllib.request.Request(
            self.rest_url + "ticket",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": "Basic "
                + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return f"RT-{json.loads(response.read())['id']}"

    def itsm_config(self) -> str:
        """The itops.toml lines that point itops at this RT."""
        return (
            "[itsm]\n"
            'system = "rt"\n'
            f'url = "{self.url}"\n'
            f'user = "{USER}"\n'
            'password = "env:RT_PASSWORD"   # export RT_PASSWORD=password (the lab RT\'s root)\n'
        )


def preflight() -> None:
    if not os.access(RT_SERVER, os.X_OK):
        raise LabError(f"{RT_SERVER} is missing", hint=INSTALL_HINT)
    if not PACKAGED_DB.is_file():
        raise LabError(f"RT's packaged SQLite database {PACKAGED_DB} is missing", hint=INSTALL_HINT)


def answers(url: str) -> bool:
    """RT's REST 2 answers (any HTTP status: unauthenticated it says 401)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def free_port(address: str, start: int = 18000, stop: int = 19000) -> int:
    import secrets

    first: int = start + secrets.randbelow(stop - start)
    ports: list[int] = [*range(first, stop), *range(start, first)]
    for port in ports:
        if can_bind(address, port):
            return port
    raise LabError(f"no free port between {start} and {stop} on {address}")


class Rt:
    """The lab service: one RT for the lab, stopped by `itops lab down` with everything else."""

    name = "rt"

    def preflight(self, hosts: int) -> None:
        preflight()

    def prepare(self, lab: Lab, state: LabState) -> None:
        pass

    def start(self, lab: Lab, state: LabState) -> None:
        server = RtServer(lab.dir / "rt", port=LAB_PORT if can_bind(ADDRESS, LAB_PORT) else None)
        server.prepare()
        began = time.monotonic()
        process = state.spawn("rt", server.argv(), server.access_log, server.log, env=server.env())
        state.save(lab.state_file)  # tracked before the wait: a failed start is still stopped
        server.wait_ready()
        ticket = server.seed_ticket()
        (lab.dir / "itsm.toml").write_text(server.itsm_config())
        state.data["rt"] = {
            "ticket": ticket,
            "url": server.url,
            "port": server.port,
            "pid": process.pid,
            "started_in": round(time.monotonic() - began, 1),
            "itsm": server.itsm_config(),
        }

    def cleanup(self, lab: Lab, state: LabState) -> None:
        shutil.rmtree(lab.dir / "rt", ignore_errors=True)
        (lab.dir / "itsm.toml").unlink(missing_ok=True)
