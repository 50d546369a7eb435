"""Typed reads: a fact is the command that reads one piece of host state plus the pure parser of
its output (as pyinfra's `FactBase`).

A fact is a frozen dataclass whose fields are the read's arguments (a queue, a service name);
`command()` builds the command through `toolkit.remediation.quoting`, and `parse(stdout, stderr,
exit_code)` turns the output into a frozen value — no transport, no context, so a parser is
tested alone on recorded output. A step reads one with `read(ctx, fact)`:

    queues = read(ctx, PrintQueues("office"))      # -> Queues, typed

`read` is the only place that joins the two: it sends the command through `ctx.read` (recorded,
masked, allowed in every step) and parses what came back. A parser raises a ToolkitError (e.g.
`CommandFailed`) when the output means the read itself failed.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar

from toolkit.errors import CommandFailed
from toolkit.remediation.catalog import Context
from toolkit.remediation.quoting import Command

T = TypeVar("T", covariant=True)


class Fact(Generic[T]):
    """One read of host state: `command()` to run and `parse()` of its output into a `T`.

    Subclasses are frozen dataclasses; `become` says the read needs root (`sudo -n`).
    """

    become: ClassVar[bool] = False

    def command(self) -> Command:
        raise NotImplementedError

    def parse(self, stdout: str, stderr: str, exit_code: int) -> T:
        raise NotImplementedError


def read(ctx: Context, fact: Fact[T], *, timeout: float | None = None) -> T:
    """Run `fact`'s command on the context's host (a read: any step) and parse its output."""
    result = ctx.read(fact.command(), become=fact.become, timeout=timeout)
    return fact.parse(result.stdout, result.stderr, result.exit_code)


def succeeded(what: str, stdout: str, stderr: str, exit_code: int) -> str:
    """stdout of a read that must succeed; a non-zero exit is CommandFailed named by `what`."""
    if exit_code != 0:
        raise CommandFailed(what, exit_code, stderr or stdout)
    return stdout
