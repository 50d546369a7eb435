"""`itops identity`: which SSH key signs your approvals, and whose it is in allowed_signers."""

from __future__ import annotations

import click

from toolkit.app import App
from toolkit.cli import render


@click.group()
def identity() -> None:
    """Your signing identity: an SSH key listed under your name in allowed_signers.

    \b
    Example:
      itops identity show
    """


@identity.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
@click.pass_obj
def show(app: App, as_json: bool) -> None:
    """Show your signing key, its fingerprint and the principal it proves (by signing a probe
    and verifying it against the workspace's allowed_signers). Exit 2 if it proves nobody.

    \b
    Examples:
      itops identity show
      ITOPS_SIGNING_KEY=~/.ssh/id_ed25519 itops identity show --json
    """
    from toolkit.secrets.identity import SETUP_HINT, IdentityError

    shown = app.identity.whoami()
    if as_json:
        render.emit_json(shown)
    else:
        click.echo(
            f"key              {shown['key'] or '(none)'}\n"
            f"fingerprint      {shown['fingerprint'] or '-'}\n"
            f"allowed_signers  {shown['allowed_signers']}\n"
            f"principal        {shown['principal'] or '(none)'}"
        )
    if shown["principal"] is None:
        raise IdentityError(f"your key proves no identity: {shown['problem']}", hint=SETUP_HINT)
