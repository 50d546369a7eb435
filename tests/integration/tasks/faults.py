"""Remediations that exist only to put the real transport and runner under faults in tests."""

from __future__ import annotations

from toolkit.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.quoting import cmd, script


@remediation(
    "test.sleep", category="other", platforms={"linux"}, summary="A check that hangs on one host"
)
class Sleep(Remediation):
    slow_host = Param(str, required=True)
    seconds = Param(int, default=60)

    def check(self, ctx: Context) -> Finding:
        seconds = self.seconds if ctx.host.name == self.slow_host else 0
        ctx.read(cmd("sleep", seconds))
        return Finding.healthy(f"slept {seconds}s")

    def apply(self, ctx: Context) -> None:
        pass


@remediation(
    "test.slow-apply", category="other", platforms={"linux"}, summary="An apply that takes a while"
)
class SlowApply(Remediation):
    seconds = Param(int, default=30)

    def check(self, ctx: Context) -> Finding:
        return Finding.problem("always")

    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("sleep", self.seconds))


@remediation(
    "test.secret",
    category="other",
    platforms={"linux"},
    summary="Handles a secret, then fails or not",
)
class HandlesSecret(Remediation):
    password = Param(str, secret=True, required=True)
    fail = Param(bool, default=False)

    def check(self, ctx: Context) -> Finding:
        return Finding.problem("needs the secret")

    def apply(self, ctx: Context) -> None:
        # stdin only; the remote side echoes it back so the masking of output is exercised
        ctx.change(cmd("cat"), stdin=self.password)
        ctx.change(script("cat >&2"), stdin=self.password)
        ctx.note(f"used {self.password.reveal()}")
        if self.fail:
            ctx.change(
                script("printf 'rejected: %s\\n' \"$(cat)\" >&2; exit 3"), stdin=self.password
            )

    def verify(self, ctx: Context) -> Finding:
        return Finding.healthy("done")


@remediation("test.echo", category="other", platforms={"linux"}, summary="Prints a free-text value")
class Echo(Remediation):
    note = Param(str, kind="text", required=True)

    def check(self, ctx: Context) -> Finding:
        out = ctx.read(cmd("printf", "%s", self.note)).stdout
        return Finding.healthy(out)

    def apply(self, ctx: Context) -> None:
        pass
