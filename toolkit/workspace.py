"""The workspace: a folder with an itops.toml naming the inventory, tasks, runbooks and ledger.

Found like git finds a repository: `--workspace`, else `ITOPS_WORKSPACE`, else the nearest
itops.toml walking up from the current directory. Relative paths in itops.toml are relative to it.
A running lab (`itops lab up`) adds its inventory and known_hosts automatically.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit import settings
from toolkit.errors import ConfigError

if TYPE_CHECKING:
    from toolkit.ledger.anchors import AnchorLog

CONFIG_NAME = "itops.toml"

DEFAULT_CONFIG = """\
# itops workspace: where this team's inventory, tasks and ticket log live.
[inventory]
sources = ["inventory/hosts.yml"]       # Ansible-compatible YAML files
known_hosts = "inventory/known_hosts"   # pinned SSH host keys: itops inventory trust HOST

[paths]
tasks = "tasks"                          # this workspace's own remediations (*.py)
runbooks = "runbooks"
playbooks = "playbooks"
state = ".itops"                         # ledger, lab, command outputs

[ledger]
url = "sqlite:///.itops/ledger.db"       # teams: postgresql+psycopg://user@host/itops

[run]
forks = 50
connect_timeout = 10
command_timeout = 120

# -- Uncomment what you need; every key and its range: docs/configuration.md -----------------

# Who is allowed to change what. Tasks marked risky (a privileged password reset, a config push
# to a core switch) always need a second operator's approval; these lists add more.
# [policy]
# risky = ["network.config-apply"]       # task names/globs that need an approval
# disruptive = ["patch.apply"]           # … that run only inside the host's maintenance window
# core_groups = ["core"]
# approval_ttl = "24h"

# Maintenance windows: attach with `maintenance_window: sunday-night` on a group or host.
# [maintenance_windows.sunday-night]
# timezone = "Europe/Berlin"
# weekly = ["Sun 01:00-05:00"]
# blackout = ["2026-12-24/2026-12-26"]

# Windows hosts are inventory variables, not settings: `platform: windows`, `ansible_user`,
# `password: env:WIN_PASSWORD`, `winrm_ca_bundle: certs/ca.pem` (HTTPS with validation by
# default). See docs/windows.md.

# SLA clocks and KPIs (the defaults are KPI.md's): business hours, holidays, targets.
# [calendar]
# timezone = "Europe/Berlin"
# hours = { mon = "09:00-18:00", tue = "09:00-18:00", fri = "09:00-16:00" }   # per weekday
# country = "DE"
# [sla.priorities.P1]
# response = "30m"
# resolution = "4h"
# always = true
# [kpi.targets]
# csat_mean = 4.5

# Schedules (itops schedule add …) run in this zone unless they say otherwise.
# [scheduler]
# timezone = "Europe/Berlin"
"""

SAMPLE_PLAYBOOK = """\
# A sample playbook: itops playbook run sample lab --check (ansible check mode, no change).
# Runs through ansible-runner on this workspace's inventory, host keys checked against
# inventory/known_hosts; every per-host result goes into the ticket log.
- name: Show what the hosts run
  hosts: all
  gather_facts: false
  tasks:
    - name: Kernel and uptime (read-only)
      ansible.builtin.command: uname -sr
      changed_when: false
"""


SAMPLE_SOFTWARE = """\
# The software catalog: only what is listed here is installed or removed by software.install /
# software.remove (docs/software.md). One entry per application, e.g.:
#
# firefox:
#   summary: Mozilla Firefox web browser
#   licence: MPL-2.0, free for business use
#   approval: false
#   packages:
#     apt: firefox-esr
#     dnf: firefox
#     winget: Mozilla.Firefox
#   verify:
#     command: [firefox, --version]
"""


@dataclass(frozen=True)
class Workspace:
    root: Path
    config: Mapping[str, Any] = field(default_factory=dict)

    # -- discovery ---------------------------------------------------------------------------
    @classmethod
    def find(cls, explicit: str | Path | None = None, *, cwd: Path | None = None) -> Workspace:
        given = explicit or os.environ.get("ITOPS_WORKSPACE")
        if given:
            root = Path(given).expanduser().resolve()
            if root.is_file():
                root = root.parent
            if not (root / CONFIG_NAME).is_file():
                raise ConfigError(
                    f"{root} is not an itops workspace (no {CONFIG_NAME})",
                    hint=f"create one with: itops init {root}",
                )
            return cls.load(root)
        here = (cwd or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_NAME).is_file():
                return cls.load(folder)
        raise ConfigError(
            f"no {CONFIG_NAME} in {here} or any parent folder",
            hint="cd into a workspace, pass --workspace DIR, set ITOPS_WORKSPACE, or run: itops init",
        )

    @classmethod
    def load(cls, root: Path) -> Workspace:
        """Read itops.toml and check every value against the one schema (toolkit.settings), so a
        bad setting stops the command here, before anything is recorded or connected."""
        path = root / CONFIG_NAME
        try:
            text = path.read_text()
            config = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        settings.validate(config, text, str(path))
        from toolkit.ownership import check_owned

        check_owned(path, "the workspace config", workspace=root)
        return cls(root, config)

    @staticmethod
    def init(root: Path) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        path = root / CONFIG_NAME
        if path.exists():
            raise ConfigError(f"{path} already exists")
        path.write_text(DEFAULT_CONFIG)
        for sub in ("inventory", "tasks", "runbooks", "playbooks"):
            (root / sub).mkdir(exist_ok=True)
        hosts = root / "inventory" / "hosts.yml"
        if not hosts.exists():
            hosts.write_text("all:\n  hosts: {}\n")
        sample = root / "playbooks" / "sample.yml"
        if not sample.exists():
            sample.write_text(SAMPLE_PLAYBOOK)
        (root / "software").mkdir(exist_ok=True)
        software = root / "software" / "apps.yml"
        if not software.exists():
            software.write_text(SAMPLE_SOFTWARE)
        return path

    # -- settings ----------------------------------------------------------------------------
    def section(self, name: str) -> Mapping[str, Any]:
        value = self.config.get(name, {})
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.root / CONFIG_NAME}: [{name}] must be a table")
        return value

    def path(self, value: str | Path) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    def folder(self, name: str, default: str) -> Path:
        return self.path(self.section("paths").get(name, default))

    @property
    def state_dir(self) -> Path:
        return self.folder("state", ".itops")

    @property
    def task_overrides(self) -> list[str]:
        """Built-in task names this workspace's tasks/ may replace ([policy] overrides)."""
        return [str(name) for name in self.section("policy").get("overrides") or []]

    def anchor_log(self) -> AnchorLog:
        """Where the ledger's signed heads are kept (toolkit.ledger.anchors)."""
        from toolkit.ledger.anchors import AnchorLog

        section = self.section("ledger")
        # One log per ledger: the same workspace may point at another ledger (ITOPS_LEDGER_URL,
        # a team's PostgreSQL), whose heads are not this one's.
        import hashlib

        which = hashlib.sha256(self.ledger_url.encode()).hexdigest()[:12]
        log = section.get("anchor_log") or str(self.state_dir / f"anchors-{which}.jsonl")
        key = section.get("anchor_key") or str(self.state_dir / "anchor_ed25519")
        syslog = section.get("anchor_syslog") or None
        return AnchorLog(self.path(log), self.path(key), syslog)

    @property
    def lab_dir(self) -> Path:
        return self.state_dir / "lab"

    @property
    def inventory_sources(self) -> list[Path]:
        sources = self.section("inventory").get("sources", ["inventory/hosts.yml"])
        if isinstance(sources, str):
            sources = [sources]
        paths = [self.path(s) for s in sources]
        for path in paths:
            if not path.is_file():
                raise ConfigError(
                    f"inventory file {path} does not exist",
                    hint=f"fix [inventory] sources in {self.root / CONFIG_NAME}",
                )
        lab = self.lab_dir / "hosts.yml"
        return [*paths, lab] if lab.is_file() else paths

    @property
    def known_hosts(self) -> Path:
        return self.path(self.section("inventory").get("known_hosts", "inventory/known_hosts"))

    @property
    def known_hosts_files(self) -> list[Path]:
        lab = self.lab_dir / "known_hosts"
        return [self.known_hosts, *([lab] if lab.is_file() else [])]

    @property
    def software_folder(self) -> Path:
        """The software catalog (`software/*.yml`, toolkit.software)."""
        return self.folder("software", "software")

    @property
    def task_folders(self) -> list[Path]:
        from toolkit.remediation.catalog import BUILTIN_TASKS

        return [BUILTIN_TASKS, self.folder("tasks", "tasks")]

    @property
    def ledger_url(self) -> str:
        url = os.environ.get("ITOPS_LEDGER_URL") or self.section("ledger").get(
            "url", "sqlite:///.itops/ledger.db"
        )
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            url = prefix + str(self.path(url[len(prefix) :]))
        return str(url)

    @property
    def operator(self) -> str:
        return os.environ.get("ITOPS_OPERATOR") or str(
            self.section("operator").get("name") or getpass.getuser()
        )

    def run_setting(self, key: str, default: Any) -> Any:
        return self.section("run").get(key, default)
