"""A workspace for the web view's tests: the desk week of `fixture_tickets` (with a hostile
ticket), fix actions on hosts with hostile output, an approval for lab-03, and two accounts."""

from __future__ import annotations

from pathlib import Path

from tests import fixture_tickets as desk
from tests.inprocess import itops
from toolkit.ledger import Entry, Ledger
from toolkit.web.accounts import Accounts
from toolkit.workspace import Workspace

PASSWORD = "correct horse battery staple"
LEAD_PASSWORD = "lead's own long password"
# Markup, a script, a terminal escape, a spreadsheet formula: all of it must come out inert.
HOSTILE = '<script>document.title="pwned"</script><b>bold</b>\x1b[31mRED=HYPERLINK("x")'
HOSTILE_HOST = "ws-<i>evil</i>"
FORMULA = '=HYPERLINK("http://attacker.example/","click me")'


def build(root: Path) -> Workspace:
    Workspace.init(root)
    config = root / "itops.toml"
    config.write_text(config.read_text() + desk.CONFIG)
    lines = [
        *desk.LINES,
        desk.ev("INC-666", "opened", desk.t(4, 9), priority="P3", category="printer",
                hosts=[HOSTILE_HOST], summary=HOSTILE),
    ]  # fmt: skip
    code, out = itops(root, "ticket", "import", str(desk.write(root / "desk.jsonl", lines)))
    assert code == 0, out
    ws = Workspace.load(root)
    book = Ledger(ws.ledger_url, operator="ana")
    try:
        for n, (host, ticket, outcome, mode, message) in enumerate(
            [("lab-03", "INC-1", "fixed", "fix", "resumed"),
             ("lab-03", "INC-2", "failed", "fix", "resumed"),
             ("ws-1", "INC-2", "already-ok", "fix", "resumed"),
             (HOSTILE_HOST, "INC-666", "fixed", "fix", HOSTILE),
             ("lab-03", "INC-2", "failed", "check", "a --check run: changes nothing"),
             ("ws-2", "INC-666", "fixed", "fix", FORMULA)]
        ):  # fmt: skip
            policy = {"decision": "allowed", "approval": "APR-1"} if host == "lab-03" else {}
            action = f"{n:032x}"
            book.append_many(
                [
                    Entry("action.begin", ticket=ticket, host=host, task="printer.clear-queue",
                          action_id=action, params={"queue": "office"},
                          data={"mode": mode, **({"policy": policy} if policy else {})}),
                    Entry("action.finish", ticket=ticket, host=host, task="printer.clear-queue",
                          action_id=action, outcome=outcome, duration_ms=300,
                          commands=[{"step": "apply", "command": "cancel -a office",
                                     "exit_code": 0}],
                          output=HOSTILE, data={"message": message,
                                                **({"policy": policy} if policy else {})}),
                ]
            )  # fmt: skip
        book.append(
            Entry("approval.requested", ticket="INC-1", task="printer.clear-queue",
                  data={"request_id": "APR-1", "hosts": ["lab-03"],
                        "task": "printer.clear-queue", "reason": "queue stuck"})
        )  # fmt: skip
        book.append(
            Entry("approval.granted", ticket="INC-1", task="printer.clear-queue",
                  operator="li", data={"request_id": "APR-1", "hosts": ["lab-03"],
                  "task": "printer.clear-queue", "approved_by": "li", "requested_by": "ana"})
        )  # fmt: skip
    finally:
        book.close()
    accounts = Accounts(ws.state_dir)
    accounts.add("audrey", "auditor", PASSWORD)
    accounts.add("lee", "lead", LEAD_PASSWORD)
    return ws
