"""Remediations that exist only to put the real transport and runner under faults in tests."""

from __future__ import annotations

from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.quoting import cmd, script


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


@remediation(
    "test.slow-mark",
    category="other",
    platforms={"linux"},
    summary="An apply that sleeps, then leaves a mark: the mark proves the apply ran to its end",
)
class SlowMark(Remediation):
    seconds = Param(int, default=6)
    mark = Param(str, required=True)  # a file name under /tmp, one per host
    root = Param(bool, default=False)  # the apply runs under sudo
    stdin = Param(bool, default=False)  # the apply takes stdin (an exec channel of its own)

    def _path(self, ctx: Context) -> str:
        return f"/tmp/{self.mark}-{ctx.host.name}"

    def check(self, ctx: Context) -> Finding:
        present = ctx.read(cmd("test", "-e", self._path(ctx))).exit_code == 0
        return Finding.healthy("marked") if present else Finding.problem("no mark")

    def apply(self, ctx: Context) -> None:
        command = script("sleep {s}; touch {path}", s=self.seconds, path=self._path(ctx))
        ctx.change(command, become=self.root, stdin=b"data\n" if self.stdin else None)

    def verify(self, ctx: Context) -> Finding:
        return self.check(ctx)
