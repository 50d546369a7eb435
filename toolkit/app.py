"""The per-invocation application object: workspace, secrets, inventory, catalog, ledger.

Built lazily, so `itops --help` or `itops tasks list` never opens the ledger or imports a transport.
The CLI passes one App in `click`'s `ctx.obj`; tests build their own.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.inventory import Inventory
from toolkit.remediation.catalog import Catalog
from toolkit.secrets.credentials import CredentialStore, Redactor
from toolkit.transports.base import ConnectOptions
from toolkit.workspace import Workspace

if TYPE_CHECKING:  # SQLAlchemy costs ~0.3 s to import: only commands that use the ledger pay it
    from toolkit.clock import Clock
    from toolkit.ledger import Ledger
    from toolkit.run.policy import PolicySettings
    from toolkit.secrets.identity import Identity


class RedactingFilter(logging.Filter):
    """Masks every registered secret in log records before any handler formats them."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.mask(record.getMessage())
        record.args = ()
        if record.exc_info and record.exc_info[1] is not None:
            import traceback

            record.exc_text = self.redactor.mask(
                "".join(traceback.format_exception(*record.exc_info))
            )
            record.exc_info = None
        return True


class App:
    def __init__(
        self,
        workspace: str | Path | None = None,
        *,
        verbose: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self._workspace_arg = workspace
        self.verbose = verbose
        self._clock = clock
        self._closers: list[Callable[[], None]] = []
        self._after: list[Callable[[], None]] = []
        self.redactor = Redactor()
        self._ledger: Ledger | None = None
        self.read_only = False  # set by commands that only read (cli.options.reads_only)

    @cached_property
    def workspace(self) -> Workspace:
        from toolkit.statefiles import secure

        ws = Workspace.find(self._workspace_arg)
        secure(ws.state_dir)  # private: 0700, its files 0600 (see statefiles)
        self._setup_logging(ws)
        from toolkit import software

        software.activate(ws.software_folder, ws.root)  # what the software tasks may install
        return ws

    @cached_property
    def credentials(self) -> CredentialStore:
        return CredentialStore(self.redactor, prompter=_prompt if sys.stdin.isatty() else None)

    @cached_property
    def inventory(self) -> Inventory:
        return Inventory.load(self.workspace.inventory_sources)

    @cached_property
    def catalog(self) -> Catalog:
        ws = self.workspace
        return Catalog.load(
            ws.task_folders,
            index=ws.state_dir / "cache" / "catalog.json",
            overrides=ws.task_overrides,
        )

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            from toolkit.clock import SystemClock

            self._clock = SystemClock()
        return self._clock

    @cached_property
    def policy_settings(self) -> PolicySettings:
        """Maintenance windows and approval rules from itops.toml (validated on first use)."""
        from toolkit.run.policy import PolicySettings

        return PolicySettings.from_config(self.workspace.config)

    @cached_property
    def identity(self) -> Identity:
        """This operator's signing key and the workspace's allowed_signers ([identity])."""
        from toolkit.secrets.identity import Identity

        return Identity.of(self.workspace)

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            from toolkit.ledger import open_ledger
            from toolkit.ledger.store import SqliteTarget
            from toolkit.statefiles import private_file

            ws = self.workspace
            if ws.ledger_url.startswith("sqlite:///") and not self.read_only:
                target = SqliteTarget.parse(ws.ledger_url)
                if not target.read_only and Path(target.path).parent.is_dir():
                    private_file(Path(target.path))  # (SQLite gives -wal and -shm its mode)
            self._ledger = open_ledger(
                ws.ledger_url,
                operator=ws.operator,
                redactor=self.redactor,
                blob_dir=ws.state_dir / "outputs",
                synchronous=str(ws.section("ledger").get("synchronous", "normal")),
                read_only=self.read_only,
            )
        return self._ledger

    def connect_options(
        self, connect_timeout: float | None = None, command_timeout: float | None = None
    ) -> ConnectOptions:
        ws = self.workspace
        return ConnectOptions(
            connect_timeout=float(connect_timeout or ws.run_setting("connect_timeout", 10)),
            command_timeout=float(command_timeout or ws.run_setting("command_timeout", 120)),
            known_hosts=tuple(ws.known_hosts_files),
            session_log_dir=ws.state_dir / "sessions",
            directory_privileged_groups=tuple(
                ws.config.get("directory", {}).get("privileged_groups", [])
            ),
        )

    def on_close(self, closer: Callable[[], None]) -> None:
        """Release something (a database engine, a temporary folder) when the command ends."""
        self._closers.append(closer)

    def after_close(self, then: Callable[[], None]) -> None:
        """Do something once the command is done with the workspace: its ledger anchored and
        closed (a run's detached desk delivery starts then, so it never competes with it)."""
        self._after.append(then)

    def close(self) -> None:
        try:
            while self._closers:
                try:
                    self._closers.pop()()
                except Exception:
                    logging.getLogger("itops").debug("closing failed", exc_info=True)
            if self._ledger is not None:
                try:
                    self.anchor()
                finally:
                    self._ledger.close()
                    self._ledger = None
        finally:
            while self._after:
                self._after.pop(0)()

    def anchor(self, *, force: bool = False) -> Any:
        """After a command that wrote to the ledger: sign its head into the anchor log (kept
        outside the database), so a later truncation or rewrite is caught by `audit verify`.
        A failure to anchor is logged and said on stderr, never the command's outcome."""
        ledger = self._ledger
        if ledger is None or self.read_only or ledger.read_only:
            return None
        try:
            log = self.workspace.anchor_log()
            head = ledger.head()
            if head is None or (not force and head.seq <= log.newest_seq()):
                return None
            return log.append(head.seq, head.hash, head.at)
        except Exception as exc:
            from toolkit.ledger.anchors import ShipError

            what = (
                str(exc)
                if isinstance(exc, ShipError)
                else f"could not anchor the ledger's head: {exc}"
            )
            logging.getLogger("itops").warning("%s", what)
            print(f"warning: {what}", file=sys.stderr)
            return None

    def _setup_logging(self, ws: Workspace) -> None:
        logger = logging.getLogger("itops")
        if logger.handlers:
            return
        logger.setLevel(logging.DEBUG if self.verbose else logging.INFO)
        from toolkit.statefiles import private_file

        ws.state_dir.mkdir(parents=True, exist_ok=True)
        if os.access(ws.state_dir, os.W_OK):
            private_file(ws.state_dir / "itops.log")
        handler: logging.Handler = logging.FileHandler(ws.state_dir / "itops.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter(self.redactor))
        logger.addHandler(handler)
        if self.verbose:
            stream = logging.StreamHandler()
            stream.addFilter(RedactingFilter(self.redactor))
            logger.addHandler(stream)
        logger.propagate = False
        os.environ.setdefault("ITOPS_LOG", str(ws.state_dir / "itops.log"))


def _prompt(label: str) -> str:
    import click

    value: Any = click.prompt(label, hide_input=True, err=True)
    return str(value)
