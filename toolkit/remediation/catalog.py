"""The remediation catalog: the `@remediation` contract, validated parameters, loading tasks/ by path.

A remediation is a class with three steps:

    @remediation("printer.clear-queue", category="printer", platforms={"linux"},
                 summary="Cancel stuck print jobs and resume a paused queue")
    class ClearPrintQueue(Remediation):
        queue = Param(str, help="queue name (default: every queue)")

        def check(self, ctx: Context) -> Finding: ...   # read-only: is the problem there?
        def apply(self, ctx: Context) -> None: ...      # the fix; safe to run twice
        def verify(self, ctx: Context) -> Finding: ...  # proves the fix held

Check and verify receive a context whose `change()` refuses to run, so a check-only run cannot touch
a host whatever the task does. Task modules are loaded from folders by path (never as a top-level
`tasks` package); no global registry: the decorator marks the class and the Catalog collects it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, runtime_checkable

from toolkit.errors import ConfigError, NotFound, ToolkitError, Unsupported, ValidationError
from toolkit.inventory import Host
from toolkit.remediation.quoting import Command, check_path, check_text, check_token
from toolkit.secrets.credentials import Secret, is_reference
from toolkit.transports.base import CommandResult

_TASK_NAME = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}

BUILTIN_TASKS = Path(__file__).resolve().parents[2] / "tasks"


@dataclass(frozen=True)
class Finding:
    """What a check or verify step found: `ok` means no problem."""

    ok: bool
    summary: str
    facts: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def healthy(cls, summary: str, **facts: Any) -> Finding:
        return cls(True, summary, facts)

    @classmethod
    def problem(cls, summary: str, **facts: Any) -> Finding:
        return cls(False, summary, facts)


@dataclass(frozen=True)
class PastAction:
    """An earlier finished run of the same task on the same host under the same ticket."""

    action_id: str
    at: str  # when it finished (UTC, the ledger's format)
    outcome: str
    params: Mapping[str, Any]  # as recorded: secrets masked
    verify: Mapping[str, Any] | None = None  # the verify finding: ok, summary, facts


class Context(Protocol):
    """What a remediation step may do on its host.

    `read` may run in any step and returns the exit code as data. `change` works only during
    apply, and by default raises CommandFailed on a non-zero exit (`check=False` to inspect it).

    `ticket` / `ticket_priority` name the run's ticket (None in a check-only run without one);
    `previous()` lists this task's earlier finished runs on this host under that ticket, so a
    one-shot action (a reset, a restart) can tell it was already done; `handover()` gives a
    secret made during the run to the engineer once, outside every record.

    A network device's steps get a NetworkContext (`network(ctx)`), which adds `configure`
    and `save`.
    """

    host: Host
    step: str
    ticket: str | None
    ticket_priority: str | None

    def read(
        self, command: Command, *, become: bool = False, timeout: float | None = None
    ) -> CommandResult: ...

    def change(
        self,
        command: Command,
        *,
        stdin: bytes | Secret | None = None,
        become: bool = False,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None:
        """Upload a file (apply only). Only hosts reached over SSH transfer files: on any
        other a ToolkitError names the host and what it cannot do, before anything is sent."""
        ...

    def get(self, remote: str, local: Path) -> None:
        """Download a file (any step); refused like `put` on hosts without file transfer."""
        ...

    def secret(self, reference: str, label: str = "secret") -> Secret: ...

    def adopt(self, secret: Secret) -> Secret:
        """Register a secret made during the run (a generated password) for masking."""
        ...

    def note(self, text: str) -> None: ...

    def artifacts(self, name: str) -> Path:
        """A folder of the workspace where this task keeps files (e.g. configuration backups)."""
        ...

    def previous(self) -> Sequence[PastAction]: ...

    def handover(self, label: str, secret: Secret, *, to_file: str | None = None) -> None:
        """Show `secret` to the engineer once (stderr, or appended to a 0600 file), never
        recording it: only its label goes into the notes."""
        ...


@runtime_checkable
class NetworkContext(Context, Protocol):
    """A network device's context: configuration lines and saving them are changes of their own."""

    def configure(self, lines: Sequence[str], *, check: bool = True) -> CommandResult:
        """Type configuration lines on a network device (apply only); stops at a rejected line."""
        ...

    def save(self) -> CommandResult:
        """Write a network device's running configuration to startup (apply only)."""
        ...


def network(ctx: Context) -> NetworkContext:
    """`ctx` as a network device's context; a ToolkitError naming the host on any other."""
    if not isinstance(ctx, NetworkContext):
        raise Unsupported(
            f"{ctx.host.name} is not a network device: it has no configuration to change",
            hint="configure/save work on hosts reached over netdev (network platforms)",
        )
    return ctx


@dataclass(frozen=True)
class RunInfo:
    """What `Remediation.finish_run` learns about a finished run of its task."""

    task: str
    ticket: str | None
    check_only: bool
    outcomes: Mapping[str, str]  # host → outcome
    artifacts: Callable[[str], Path]


class Param:
    """A declared, validated parameter; on a task instance the attribute reads the value.

    Strings are validated by `kind`: "token" (names: no shell metacharacters, no leading '-'),
    "path" (no '..', no control characters) or "text" (free text, passed literally). `secret`
    parameters accept only references (env:VAR, prompt, …) and become Secrets.
    """

    def __init__(
        self,
        type: type = str,
        *,
        required: bool = False,
        default: Any = None,
        help: str = "",
        pattern: str | None = None,
        choices: Sequence[str] | None = None,
        kind: str = "token",
        secret: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        many: bool = False,
        check: Callable[[Any], Any] | None = None,
    ) -> None:
        if kind not in ("token", "path", "text"):
            raise ValueError(f"unknown Param kind {kind!r}")
        self.type = type
        self.required = required
        self.default = default
        self.help = help
        self.pattern = re.compile(pattern) if pattern else None
        self.choices = tuple(choices) if choices else None
        self.kind = kind
        self.secret = secret
        self.minimum = minimum
        self.maximum = maximum
        self.many = many
        self.check = check  # a validator from toolkit.remediation.quoting, e.g. check_vlan
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return instance.params[self.name]

    def describe(self) -> str:
        bits = [self.type.__name__ + ("[]" if self.many else "")]
        if self.required:
            bits.append("required")
        if self.default is not None:
            bits.append(f"default {self.default!r}")
        if self.choices:
            bits.append("one of " + "|".join(self.choices))
        if self.secret:
            bits.append("secret reference")
        return ", ".join(bits)

    def parse(self, raw: str) -> Any:
        """Convert and validate one value given on the command line."""
        value = self._parse(raw)
        if self.check is not None and not self.secret:
            try:
                self.check(value)
            except ValidationError as exc:
                raise ValidationError(
                    f"parameter {self.name}: {exc.message}", hint=exc.hint
                ) from None
        return value

    def _parse(self, raw: str) -> Any:
        what = f"parameter {self.name}"
        if self.secret:
            if not is_reference(raw):
                raise ValidationError(
                    f"{what} is a secret: give a reference, not the value",
                    hint="env:VAR, file:/path, keyring:service/user or prompt",
                )
            return raw  # resolved by the runner's CredentialStore
        if self.type is bool:
            low = raw.lower()
            if low not in _TRUE | _FALSE:
                raise ValidationError(f"{what} must be true or false, not {raw!r}")
            return low in _TRUE
        if self.type in (int, float):
            try:
                number = self.type(raw)
            except ValueError:
                raise ValidationError(f"{what} must be a number, not {raw!r}") from None
            if self.minimum is not None and number < self.minimum:
                raise ValidationError(f"{what} must be ≥ {self.minimum:g}, not {raw}")
            if self.maximum is not None and number > self.maximum:
                raise ValidationError(f"{what} must be ≤ {self.maximum:g}, not {raw}")
            return number
        if self.choices is not None:
            if raw not in self.choices:
                raise ValidationError(
                    f"{what} must be one of {', '.join(self.choices)}, not {raw!r}"
                )
            return raw
        {"token": check_token, "path": check_path, "text": check_text}[self.kind](raw, what)
        if self.pattern is not None and not self.pattern.fullmatch(raw):
            raise ValidationError(f"{what} {raw!r} does not match {self.pattern.pattern}")
        return raw


class Remediation:
    """Base for remediations: holds the validated parameters; verify re-runs check by default."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params

    def check(self, ctx: Context) -> Finding:
        raise NotImplementedError

    def apply(self, ctx: Context) -> None:
        raise NotImplementedError

    def verify(self, ctx: Context) -> Finding:
        return self.check(ctx)

    def prepare(self, host: Host) -> None:
        """Refuse host-specific input (e.g. a template's variables) before anything connects."""

    def plan(self, host: Host) -> str:
        """What apply will do on `host`, as far as it is known before connecting (a network
        push's rendered lines): an approval is bound to it, so a changed template needs a new
        approval. Empty by default: the parameters and the task's code bind the rest."""
        return ""

    @classmethod
    def admit(cls, params: Mapping[str, Any], ticket_priority: str | None) -> None:
        """Run-level rules that can refuse this run (raise a ToolkitError): checked once, after
        the ticket is known and BEFORE an approval is requested, so no second operator is asked
        to approve a run that would be refused anyway."""

    @classmethod
    def finish_run(cls, run: RunInfo) -> list[str]:
        """Once per run, after every host finished (e.g. one commit of all backups); notes."""
        return []


RiskRule = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, eq=False)
class TaskSpec:
    """One implementation of a remediation: its metadata, platforms, parameters and class."""

    name: str
    category: str
    platforms: frozenset[str]
    summary: str
    cls: type[Remediation]
    params: Mapping[str, Param]
    doc: str = ""
    examples: tuple[str, ...] = ()
    disruptive: bool = False
    # True; the name of a bool parameter that makes a run risky; or a rule of the parameters
    # (as given) that says so, e.g. the software catalog's `approval` for the entry named
    risky: bool | str | RiskRule = False
    risky_on_core: bool = False  # risky on the hosts the workspace policy calls core devices
    source: str = ""
    kind: str = "incident"  # the kind of ticket a run opens: incident, or a standard request

    @property
    def code_sha256(self) -> str:
        """SHA-256 of the file that implements this task (what an approval and every begin
        record are bound to: an edited task is other code)."""
        if not self.source:
            return ""
        path = self.source.rsplit(":", 1)[0]
        try:
            stamp = Path(path).stat().st_mtime_ns
        except OSError:
            return ""
        return _file_sha256(path, stamp)

    def risky_for(self, raw: Mapping[str, Any]) -> bool:
        """Whether a run with these parameters (as given) needs an approval."""
        if callable(self.risky):
            return bool(self.risky(raw))
        if isinstance(self.risky, str):
            value = raw.get(self.risky)
            if isinstance(value, str):
                value = self.params[self.risky].parse(value)
            return bool(value)
        return self.risky

    def validate(self, raw: Mapping[str, str | list[str]]) -> dict[str, Any]:
        """Parameters given as strings → validated values, before anything connects."""
        unknown = set(raw) - set(self.params)
        if unknown:
            name = sorted(unknown)[0]
            where = f"for {self.name} on {'/'.join(sorted(self.platforms))}"
            raise NotFound.named("parameter", name, self.params, where)
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            given = raw.get(name)
            if given is None:
                if param.required:
                    raise ValidationError(
                        f"{self.name} needs parameter {name}", hint=f"-p {name}=… ({param.help})"
                    )
                values[name] = list(param.default or []) if param.many else param.default
                continue
            items = given if isinstance(given, list) else [given]
            if not param.many and len(items) > 1:
                raise ValidationError(f"parameter {name} was given more than once")
            parsed = [param.parse(v) for v in items]
            values[name] = parsed if param.many else parsed[0]
        return values

    def secret_params(self) -> list[str]:
        return [n for n, p in self.params.items() if p.secret]


@dataclass(frozen=True)
class Task:
    """A catalog entry: one name, one implementation per platform (e.g. Linux and Windows)."""

    name: str
    specs: tuple[TaskSpec, ...]

    @property
    def summary(self) -> str:
        return self.specs[0].summary

    @property
    def category(self) -> str:
        return self.specs[0].category

    @property
    def kind(self) -> str:
        """The kind of ticket a run of this task opens (`itops fix --ticket NEW-ID`): a
        standard request (a password reset, an install) or an incident."""
        return self.specs[0].kind

    @property
    def platforms(self) -> frozenset[str]:
        return frozenset().union(*(s.platforms for s in self.specs))

    @property
    def disruptive(self) -> bool:
        return any(s.disruptive for s in self.specs)

    @property
    def risky(self) -> bool:
        """Risky in some use (always, with a parameter such as allow_privileged, on core devices)."""
        return any(bool(s.risky) or s.risky_on_core for s in self.specs)

    def implementation(self, platform: str) -> TaskSpec | None:
        return next((s for s in self.specs if platform in s.platforms), None)

    def validate(
        self, raw: Mapping[str, str | list[str]], platforms: Iterable[str] | None = None
    ) -> dict[TaskSpec, dict[str, Any]]:
        """Validate parameters for every implementation that will run (all, if not told)."""
        wanted = set(platforms) if platforms is not None else None
        specs = [s for s in self.specs if wanted is None or s.platforms & wanted]
        if raw and not specs:
            specs = list(self.specs)
        return {spec: spec.validate(raw) for spec in specs}


R = TypeVar("R", bound=type[Remediation])


def remediation(
    name: str,
    *,
    category: str,
    platforms: set[str] | frozenset[str],
    summary: str,
    disruptive: bool = False,
    risky: bool | str | RiskRule = False,
    risky_on_core: bool = False,
    kind: str = "incident",
) -> Any:
    """Mark a Remediation subclass as a catalog entry (the Catalog collects it when loading).

    `kind`: the kind of ticket a run opens when its --ticket is new — `request` for a task that
    fulfils one of KPI.md's standard requests (a password reset, an account or permission
    change, a software install), measured apart from incidents in the KPIs."""
    if not _TASK_NAME.fullmatch(name):
        raise ValueError(f"invalid remediation name {name!r} (use domain.action, lower case)")
    if kind not in ("incident", "request"):
        raise ValueError(f"@remediation({name!r}): kind must be incident or request, not {kind!r}")

    def mark(cls: R) -> R:
        if not (isinstance(cls, type) and issubclass(cls, Remediation)):
            raise TypeError(f"@remediation({name!r}) must decorate a Remediation subclass")
        doc = inspect.getdoc(cls) or ""
        params = {
            attr: value
            for klass in reversed(cls.__mro__)
            for attr, value in vars(klass).items()
            if isinstance(value, Param)
        }
        if isinstance(risky, str) and not (
            isinstance(params.get(risky), Param) and params[risky].type is bool
        ):
            raise TypeError(f"@remediation({name!r}): risky={risky!r} must name a bool Param")
        cls.__remediation__ = TaskSpec(  # type: ignore[attr-defined]
            name=name,
            category=category,
            platforms=frozenset(platforms),
            summary=summary,
            cls=cls,
            params=MappingProxyType(params),
            doc=doc,
            examples=tuple(
                line.strip() for line in doc.splitlines() if line.strip().startswith("itops ")
            ),
            disruptive=disruptive,
            risky=risky,
            risky_on_core=risky_on_core,
            kind=kind,
        )
        return cls

    return mark


@dataclass(frozen=True)
class TaskInfo:
    """What a listing needs of a task, known from the catalog index without importing it."""

    name: str
    category: str
    summary: str
    platforms: frozenset[str]
    disruptive: bool
    risky: bool
    sources: tuple[str, ...]  # path:line of each implementation, in catalog order
    # A declared override of a built-in task keeps the built-in's marks: per source, the
    # (risky, disruptive, risky_on_core) it must keep, so a lazy import applies them too.
    inherited: tuple[tuple[str, Any, bool, bool], ...] = ()

    @classmethod
    def of(
        cls, task: Task, inherited: Mapping[str, tuple[Any, bool, bool]] | None = None
    ) -> TaskInfo:
        return cls(
            task.name,
            task.category,
            task.summary,
            task.platforms,
            task.disruptive,
            task.risky,
            tuple(s.source for s in task.specs),
            tuple((src, *marks) for src, marks in (inherited or {}).items()
                  if any(src == s.source for s in task.specs)),
        )  # fmt: skip


class Catalog:
    """Remediations by name, loaded once from task folders.

    A later folder (the workspace's tasks/) overrides an earlier one (the built-in catalog) for
    the platforms it implements; two implementations of one name and platform in the same folder
    are an error.

    With an index file, loading imports every task module only when a task file changed since
    the index was written (by path, size and mtime: the rule of Python's own bytecode cache);
    otherwise `get` imports just the modules that implement the task asked for, and `infos`
    lists the catalog from the index alone."""

    def __init__(
        self,
        tasks: Mapping[str, Task],
        infos: Mapping[str, TaskInfo] | None = None,
        inherited: Mapping[str, tuple[Any, bool, bool]] | None = None,
    ) -> None:
        self._tasks = dict(tasks)
        made = {n: TaskInfo.of(t, inherited) for n, t in tasks.items()}
        self._infos = dict(sorted((infos or made).items()))

    @classmethod
    def load(
        cls, folders: Sequence[Path], *, index: Path | None = None, overrides: Sequence[str] = ()
    ) -> Catalog:
        """`overrides`: built-in task names the workspace declares it replaces ([policy]
        overrides); any other workspace task that registers a built-in name is refused."""
        files = _task_files(folders)
        stamp = [*_stamp(files), sorted(overrides)]
        if index is not None and (infos := _read_index(index, stamp)) is not None:
            return cls({}, infos)
        catalog = cls._import_all(files, overrides)
        if index is not None:
            _write_index(index, stamp, catalog.infos())
        return catalog

    @classmethod
    def _import_all(
        cls, files: Sequence[tuple[Path, Path]], overrides: Sequence[str] = ()
    ) -> Catalog:
        by_name: dict[str, list[TaskSpec]] = {}
        inherited: dict[str, tuple[Any, bool, bool]] = {}
        from_here: dict[tuple[str, str], TaskSpec] = {}
        current_folder: Path | None = None
        for folder, path in files:
            if folder != current_folder:
                current_folder, from_here = folder, {}
            for spec in _load_module(path):
                for platform in spec.platforms:
                    other = from_here.get((spec.name, platform))
                    if other is not None:
                        raise ToolkitError(
                            f"{spec.name} is implemented twice for {platform}: "
                            f"{other.source} and {spec.source}"
                        )
                    from_here[(spec.name, platform)] = spec
                current = by_name.setdefault(spec.name, [])
                replaced = [
                    s
                    for s in current
                    if s.platforms & spec.platforms and not s.source.startswith(str(folder))
                ]
                builtin = [s for s in replaced if s.source.startswith(str(BUILTIN_TASKS))]
                if builtin:
                    if spec.name not in overrides:
                        raise ConfigError(
                            f"{spec.source} registers {spec.name}, a built-in task: refusing a "
                            "silent replacement (it would run instead, without the built-in's "
                            "approval and window marks)",
                            hint=f'declare it in itops.toml: [policy] overrides = ["{spec.name}"]',
                        )
                    spec = _keep_marks(spec, builtin)
                    # (a rule of the parameters cannot be indexed: the override is risky always)
                    marks = True if callable(spec.risky) else spec.risky
                    inherited[spec.source] = (marks, spec.disruptive, spec.risky_on_core)
                current[:] = [s for s in current if s not in replaced]
                current.append(spec)
        tasks = {name: Task(name, tuple(specs)) for name, specs in by_name.items()}
        return cls(tasks, inherited=inherited)

    def get(self, name: str) -> Task:
        if not _TASK_NAME.fullmatch(name):
            raise ValidationError(
                f"invalid task name {name!r}", hint="task names look like printer.clear-queue"
            )
        task = self._tasks.get(name)
        if task is None:
            info = self._infos.get(name)
            if info is None:
                raise NotFound.named("task", name, self._infos)
            task = self._tasks[name] = self._import(info)
        return task

    def infos(self) -> list[TaskInfo]:
        """Every task's listing facts, by name (no task module is imported for this)."""
        return list(self._infos.values())

    def _import(self, info: TaskInfo) -> Task:
        paths = dict.fromkeys(source.rpartition(":")[0] for source in info.sources)
        specs = {s.source: s for path in paths for s in _load_module(Path(path))}
        if any(source not in specs for source in info.sources):  # changed under a running process
            raise ToolkitError(
                f"{info.name} changed while itops was loading it: run the command again"
            )
        marks = {source: rest for source, *rest in info.inherited}
        return Task(
            info.name,
            tuple(
                dataclasses.replace(
                    specs[src], risky=m[0], disruptive=m[1], risky_on_core=m[2]
                ) if (m := marks.get(src)) else specs[src]
                for src in info.sources
            ),
        )  # fmt: skip

    def __iter__(self) -> Iterator[Task]:
        return (self.get(name) for name in self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos


INDEX_VERSION = 2


def _keep_marks(spec: TaskSpec, builtin: Sequence[TaskSpec]) -> TaskSpec:
    """A declared override keeps the built-in's risk marks (it may add, never drop them): a
    built-in risky for a parameter the override does not declare is risky always."""
    risky: bool | str | RiskRule = spec.risky
    for old in builtin:
        if old.risky and not risky:
            risky = (
                old.risky if not isinstance(old.risky, str) or old.risky in spec.params else True
            )
    return dataclasses.replace(
        spec,
        risky=risky,
        disruptive=spec.disruptive or any(o.disruptive for o in builtin),
        risky_on_core=spec.risky_on_core or any(o.risky_on_core for o in builtin),
    )


@functools.lru_cache(maxsize=256)
def _file_sha256(path: str, mtime_ns: int) -> str:
    """(cached per file version: a scheduler running for days sees an edited task as new code)"""
    import hashlib

    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def _task_files(folders: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(folder, file) for every task module, in load order; `_*` and dot names are not tasks.

    A workspace's folder and files must be yours (or root's) and not writable by others
    (toolkit.ownership): their Python runs as you."""
    from toolkit.ownership import check_owned

    found = []
    for folder in existing_folders(folders):
        builtin = folder.resolve() == BUILTIN_TASKS
        if not builtin:
            check_owned(folder, "the tasks folder", workspace=folder.parent)
        for path in sorted(folder.rglob("*.py")):
            if any(part.startswith(("_", ".")) for part in path.relative_to(folder).parts):
                continue
            if not builtin:
                check_owned(path, "the task file", workspace=folder.parent)
            found.append((folder, path))
    return found


def _stamp(files: Sequence[tuple[Path, Path]]) -> list[Any]:
    from toolkit import __version__

    stamp: list[Any] = [INDEX_VERSION, __version__]
    for folder, path in files:
        st = path.stat()
        stamp.append([str(folder), str(path), st.st_size, st.st_mtime_ns])
    return stamp


def _read_index(index: Path, stamp: list[Any]) -> dict[str, TaskInfo] | None:
    import json

    try:
        data = json.loads(index.read_text())
        if data["stamp"] != stamp:
            return None
        return {  # the inverse of _write_index
            t["name"]: TaskInfo(
                **{
                    **t,
                    "platforms": frozenset(t["platforms"]),
                    "sources": tuple(t["sources"]),
                    "inherited": tuple(tuple(i) for i in t.get("inherited", ())),
                }
            )
            for t in data["tasks"]
        }
    except (OSError, ValueError, KeyError, TypeError):  # absent, unreadable or another shape
        return None


def _write_index(index: Path, stamp: list[Any], infos: Sequence[TaskInfo]) -> None:
    """Best effort: a workspace we may not write to (an auditor's copy) just loads slower."""
    import json
    import os

    tasks = [{**dataclasses.asdict(info), "platforms": sorted(info.platforms)} for info in infos]
    temp = index.with_name(f".{index.name}.{os.getpid()}")
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps({"stamp": stamp, "tasks": tasks}))
        os.replace(temp, index)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)


def existing_folders(folders: Sequence[Path]) -> list[Path]:
    """The folders that exist, resolved, each once, in order (built-in, then the workspace's)."""
    found: list[Path] = []
    for folder in folders:
        folder = folder.resolve()
        if folder.is_dir() and folder not in found:
            found.append(folder)
    return found


def _load_module(path: Path) -> list[TaskSpec]:
    # Named by path, size and mtime: a process that runs for weeks (the scheduler) imports an
    # edited task file afresh instead of reusing the module it loaded before the edit.
    st = path.stat()
    digest = hashlib.sha1(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    module_name = f"toolkit._loaded_tasks.{path.stem}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ToolkitError(f"cannot load task module {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except ToolkitError:
            del sys.modules[module_name]
            raise
        except Exception as exc:
            del sys.modules[module_name]
            raise ToolkitError(
                f"task module {path} failed to load: {type(exc).__name__}: {exc}"
            ) from exc
    found = []
    lines: list[str] | None = None
    for value in vars(module).values():
        spec_ = getattr(value, "__remediation__", None)
        if isinstance(spec_, TaskSpec) and spec_.cls is value:
            if lines is None:  # cheaper than inspect.getsourcelines, which tokenizes the file
                lines = path.read_text().splitlines()
            # `class Name…`, or `Name = factory(…)` for one class registered per platform family
            starts = (f"class {value.__name__}", f"{value.__name__} = ")
            line = next((n for n, text in enumerate(lines, 1) if text.startswith(starts)), 0)
            found.append(dataclasses.replace(spec_, source=f"{path}:{line}"))
    return found
