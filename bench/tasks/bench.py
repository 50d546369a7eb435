"""The fan-out benchmark's remediation: a realistic five-command check → apply → verify."""

from __future__ import annotations

from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.quoting import cmd


@remediation(
    "bench.marker",
    category="other",
    platforms={"linux"},
    summary="Ensure a per-host marker file exists (benchmark)",
)
class Marker(Remediation):
    """check: 1 read; apply: mkdir, touch, chmod; verify: 1 read — five remote commands per host."""

    run = Param(str, required=True, help="benchmark run id (keeps runs apart)")

    def path(self, ctx: Context) -> str:
        return f"/tmp/itops-bench-{self.run}/{ctx.host.name}"

    def check(self, ctx: Context) -> Finding:
        present = ctx.read(cmd("test", "-e", self.path(ctx))).exit_code == 0
        return Finding.healthy("present") if present else Finding.problem("missing")

    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("mkdir", "-p", f"/tmp/itops-bench-{self.run}"))
        ctx.change(cmd("touch", self.path(ctx)))
        ctx.change(cmd("chmod", "0644", self.path(ctx)))
