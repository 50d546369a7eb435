"""The floor plan's rules (docs/architecture.md), checked on every module's imports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.syntax import parse

ROOT = Path(__file__).resolve().parents[2] / "toolkit"
MODULES = sorted(
    ".".join(p.relative_to(ROOT.parent).with_suffix("").parts).removesuffix(".__init__")
    for p in ROOT.rglob("*.py")
    if "__pycache__" not in p.parts and p.name != "__main__.py"
)
OPTIONAL = ("toolkit.lab.netsim",)  # runs in the simulators' own venv, not itops'
SHIMS = ("toolkit.catalog", "toolkit.quoting", "toolkit.linux", "toolkit.windows")  # see below


def imports(module: str) -> set[str]:
    """What a module imports: `a.b` for `import a.b`, and `a.b`, `a.b.c` for `from a.b import c`."""
    path = ROOT.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = ROOT.parent / module.replace(".", "/") / "__init__.py"
    found: set[str] = set()
    for node in ast.walk(parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# (who, may never import, why); the test kit drives the real runner on purpose.
RULES = [
    ("toolkit.transports", ("toolkit.ledger", "toolkit.run", "toolkit.desk", "toolkit.automation",
                            "toolkit.cli"), "transports never record"),
    ("toolkit.remediation", ("toolkit.transports.ssh", "toolkit.transports.winrm",
                             "toolkit.transports.netdev", "toolkit.transports.Connector",
                             "toolkit.run", "toolkit.ledger", "toolkit.cli"),
     "remediations never touch a transport (only its value types in transports.base)"),
    ("toolkit.desk", ("toolkit.transports", "toolkit.run.runner", "toolkit.remediation"),
     "the desk never reaches hosts"),
    ("toolkit.itsm", ("toolkit.transports", "toolkit.run", "toolkit.remediation"),
     "the desk adapter never reaches hosts or runs tasks"),
    ("toolkit.web", ("toolkit.cli", "toolkit.run", "toolkit.transports", "toolkit.remediation",
                     "toolkit.automation", "click", "rich"),
     "the web view reads the ledger and the desk; it never runs anything"),
    ("toolkit.workers", ("toolkit.transports", "toolkit.run.runner.Runner", "toolkit.cli"),
     "a worker runs hosts through the run service only, never a runner or transport of its own"),
    *(
        (engine, ("toolkit.cli", "click", "rich"), "the engine knows no screen")
        for engine in ("toolkit.run", "toolkit.desk", "toolkit.automation", "toolkit.remediation",
                       "toolkit.transports", "toolkit.ledger", "toolkit.backups", "toolkit.secrets",
                       "toolkit.itsm", "toolkit.workers")
    ),
]  # fmt: skip
EXEMPT = {"toolkit.remediation.testing"}


def test_only_the_workers_package_imports_celery() -> None:
    """Celery (and its kombu) load only where a run has remote sites or a worker starts."""
    broken = [
        f"{module} imports {name}"
        for module in MODULES
        if not within(module, ("toolkit.workers",))
        for name in sorted(imports(module))
        if within(name, ("celery", "kombu"))
    ]
    assert not broken, "; ".join(broken)


def test_only_the_run_service_routes_to_the_workers() -> None:
    """Hosts with a site go to their workers through `RunService.run` alone: no caller (fix,
    backup, runbooks, schedules) and no other part of the run package has a switch of its own;
    outside toolkit.workers only its light top module (a host's site) is read."""
    routing = ("toolkit.workers.dispatch", "toolkit.workers.jobs", "toolkit.workers.celeryapp")
    broken = [
        f"{module} imports {name}"
        for module in MODULES
        if not within(module, ("toolkit.workers", "toolkit.cli.worker"))
        and module != "toolkit.run.service"
        for name in sorted(imports(module))
        if within(name, routing)
    ]
    assert not broken, "; ".join(broken)


@pytest.mark.parametrize(("who", "never", "why"), RULES, ids=[f"{r[0]}: {r[2]}" for r in RULES])
def test_the_arrows_run_one_way(who: str, never: tuple[str, ...], why: str) -> None:
    broken = [
        f"{module} imports {name}"
        for module in MODULES
        if within(module, (who,)) and module not in EXEMPT
        for name in sorted(imports(module))
        if within(name, never)
    ]
    assert not broken, f"{why}: " + "; ".join(broken)


@pytest.mark.parametrize("module", [m for m in MODULES if m not in OPTIONAL + SHIMS])
def test_every_public_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_the_old_import_paths_still_work_with_a_deprecation_warning() -> None:
    import sys

    for old, new in (
        ("toolkit.catalog", "toolkit.remediation.catalog"),
        ("toolkit.quoting", "toolkit.remediation.quoting"),
        ("toolkit.linux", "toolkit.remediation.linux"),
        ("toolkit.windows", "toolkit.remediation.windows"),
    ):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new):
            shim = importlib.import_module(old)
        moved = importlib.import_module(new)
        public = [n for n in vars(moved) if not n.startswith("__")]
        assert public and all(getattr(shim, n) is getattr(moved, n) for n in public)
