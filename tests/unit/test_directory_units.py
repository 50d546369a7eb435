"""Directory accounts, the pure parts: RFC 4515 filter and RFC 4514 DN escaping against injection
attempts, name validation, userAccountControl bits, AD/ppolicy times, parsing an account, the
inventory's ldap settings, and the directory step context's recording (changes refused outside
apply, secrets masked) over an in-memory directory. The real directories are in
tests/integration/test_directory.py."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ldap")

from toolkit.errors import ChangeRefused, Unsupported, ValidationError
from toolkit.inventory import make_host
from toolkit.remediation import ldapsafe as q
from toolkit.remediation.catalog import Entry, directory
from toolkit.secrets.credentials import CredentialStore, Redactor, Secret
from toolkit.transports.ldap import LdapSettings, bind_reason


def _tasks_module() -> Any:
    """tasks/directory.py as the catalog loads it (by path, never as a `tasks` package)."""
    import sys

    from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog

    spec = Catalog.load([BUILTIN_TASKS]).get("account.status").specs[0]
    return sys.modules[spec.cls.__module__]


_mod = _tasks_module()
PPOLICY_PERMANENT = _mod.PPOLICY_PERMANENT
parse_account = _mod.parse_account
uac_flags = _mod.uac_flags
with_disabled = _mod.with_disabled

UTC = datetime.UTC
NOW = datetime.datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

# --------------------------------------------------------------------------- escaping

INJECTIONS = [
    ("*", r"\2a"),
    ("*)(uid=*", r"\2a\29\28uid=\2a"),
    ("jdoe)(|(objectClass=*)", r"jdoe\29\28|\28objectClass=\2a\29"),
    ("a\\b", r"a\5cb"),
    ("nul\x00byte", r"nul\00byte"),
]


@pytest.mark.parametrize(("value", "escaped"), INJECTIONS)
def test_filter_values_are_escaped_per_rfc4515(value: str, escaped: str) -> None:
    assert q.escape_filter(value) == escaped
    built = q.eq("cn", value)
    assert built == f"(cn={escaped})"
    # the value cannot open or close a filter component: one balanced pair of parentheses
    assert built.count("(") == 1 and built.count(")") == 1


def test_the_in_chain_rule_escapes_its_dn() -> None:
    dn = r"CN=Sales \28EU\29*,CN=Users,DC=x"
    assert q.in_chain("member", dn) == (
        r"(member:1.2.840.113556.1.4.1941:=CN=Sales \5c28EU\5c29\2a,CN=Users,DC=x)"
    )
    with pytest.raises(ValueError):
        q.in_chain("member)(cn=*", dn)


def test_filters_compose_and_attribute_names_are_checked() -> None:
    assert q.all_of(q.eq("a", "1"), q.any_of(q.eq("b", "2"), q.eq("c", "*"))) == (
        r"(&(a=1)(|(b=2)(c=\2a)))"
    )
    for bad in ("cn)(x", "cn=*", "", "1cn"):
        with pytest.raises(ValueError):
            q.eq(bad, "x")


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("Sales, EU", r"Sales\, EU"),
        ("a+b", r"a\+b"),
        ("#lead", r"\#lead"),
        (" pad ", r"\ pad\ "),
        ('q"uote<>;', r"q\"uote\<\>\;"),
        ("x=y,dc=evil", r"x\=y\,dc\=evil"),
    ],
)
def test_dn_values_are_escaped_per_rfc4514(value: str, escaped: str) -> None:
    assert q.escape_dn_value(value) == escaped
    from ldap.dn import str2dn

    rdn = str2dn(f"cn={escaped},dc=itops,dc=lab")
    assert rdn[0][0][1] == value and len(rdn) == 3  # still one RDN, not an injected one


@pytest.mark.parametrize(
    "name",
    ["*", "*)(uid=*", "a b", "-jdoe", "jdoe\\2a", "cn=x,dc=y", "jdoe@", "jdoe@-bad", "x" * 65, ""],
)
def test_account_names_that_are_not_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError):
        q.check_account(name)


@pytest.mark.parametrize("name", ["jdoe", "j.doe", "j_doe-2", "jdoe@corp.example", "JDoe@X.ORG"])
def test_account_names(name: str) -> None:
    assert q.check_account(name) == name


def test_group_names_may_hold_spaces_but_no_control_characters() -> None:
    assert q.check_group("VPN Users") == "VPN Users"
    assert q.check_group("Sales (EU)*") == "Sales (EU)*"  # escaped when used, not refused
    for bad in ("", " lead", "a\nb", "a\x00b", "x" * 129):
        with pytest.raises(ValidationError):
            q.check_group(bad)


def test_dn_checks() -> None:
    assert q.check_dn("cn=a,dc=b") == "cn=a,dc=b"
    for bad in ("not a dn", "cn=a,,dc=b", ""):
        with pytest.raises(ValidationError):
            q.check_dn(bad)
    assert q.rdn_value(r"CN=Sales\, EU,CN=Users,DC=x") == "Sales, EU"


_FIRST_USE_FROM_THREADS = """
import threading
from toolkit.errors import Unreachable
from toolkit.inventory import make_host
from toolkit.remediation import ldapsafe as q
from toolkit.transports.base import ConnectOptions
from toolkit.transports.ldap import LdapSettings, LdapTransport

failures = []

def use(call):
    try:
        call()
    except Unreachable:  # nothing listens on port 9: connecting is only the first use here
        pass
    except Exception as exc:
        failures.append(repr(exc))

v = {"address": "127.0.0.1", "port": 9, "platform": "ldap", "ldap_tls": "none"}
dc = make_host("dc", v, (), "t")
lab = make_host("ldap-lab", {**v, "ldap_base_dn": "dc=itops,dc=lab"}, (), "t")
connect = LdapTransport(dc, LdapSettings.from_host(dc), ConnectOptions())._connection
calls = [connect, lambda: LdapSettings.from_host(lab), lambda: q.escape_filter("a*")]
threads = [threading.Thread(target=use, args=(c,)) for c in calls]
for t in threads: t.start()
for t in threads: t.join()
print(failures)
"""


def test_python_ldap_first_used_from_several_threads_at_once() -> None:
    """python-ldap's modules import each other in a cycle: two threads importing it at once got
    ImportError, which check_dn reported as 'not a valid distinguished name' (CI, stop 22: the
    first two directory hosts of a fan-out). Each run is a fresh interpreter: the first use."""
    import subprocess
    import sys

    for _ in range(5):
        run = subprocess.run(
            [sys.executable, "-c", _FIRST_USE_FROM_THREADS],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert "Traceback" not in run.stderr, run.stderr
        assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


# --------------------------------------------------------------------------- AD bits and times


def test_user_account_control_bits() -> None:
    assert uac_flags(512) == []
    assert uac_flags(514) == ["disabled"]
    assert uac_flags(0x10 | 0x10000 | 0x800000 | 2) == [
        "disabled",
        "locked",
        "password never expires",
        "password expired",
    ]
    assert with_disabled(512, True) == 514
    assert with_disabled(514, False) == 512
    assert with_disabled(0x10202, False) == 0x10200  # every other bit kept
    assert with_disabled(0x10202, True) == 0x10202


def ad_entry(**attrs: str | list[str]) -> Entry:
    values = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in attrs.items()}
    return Entry("CN=jdoe,CN=Users,DC=itops,DC=lab", {"sAMAccountName": ("jdoe",), **values})


def filetime_of(when: datetime.datetime) -> str:
    return str(int((when.timestamp() + 11644473600) * 10_000_000))


def test_an_ad_account_parsed() -> None:
    yesterday = NOW - datetime.timedelta(days=1)
    entry = ad_entry(
        userAccountControl="514",
        **{"msDS-User-Account-Control-Computed": "16", "msDS-ResultantPSO": "CN=Strict PSO,CN=x"},
        lockoutTime="134408714349216560",
        accountExpires=filetime_of(yesterday),
        pwdLastSet=filetime_of(NOW - datetime.timedelta(days=10)),
        badPasswordTime=filetime_of(NOW - datetime.timedelta(hours=1)),
        badPwdCount="3",
    )
    groups = ["CN=Domain Admins,CN=Users,DC=itops,DC=lab", r"CN=Sales\, EU,CN=Users,DC=x"]
    account = parse_account("active_directory", entry, groups, NOW)
    assert (account.disabled, account.locked, account.expired, account.must_change) == (
        True,
        True,
        True,
        False,
    )
    assert account.groups == ("Domain Admins", "Sales, EU")
    assert account.privileged(["domain admins", "Administrators"]) == ["Domain Admins"]
    facts = account.facts(NOW)
    assert facts["password_age_days"] == 10 and facts["bad_password_count"] == 3
    assert facts["password_policy"] == "CN=Strict PSO,CN=x"


def test_ad_never_expires_and_must_change() -> None:
    for never in ("0", "9223372036854775807"):
        account = parse_account(
            "active_directory", ad_entry(accountExpires=never, pwdLastSet="0"), [], NOW
        )
        assert not account.expired and account.must_change and account.password_set is None
    # lockoutTime set but the lockout duration is over: the computed bit decides
    over = ad_entry(lockoutTime="1234", **{"msDS-User-Account-Control-Computed": "0"})
    assert not parse_account("active_directory", over, [], NOW).locked


def test_a_ppolicy_account_parsed() -> None:
    def entry(**attrs: str | list[str]) -> Entry:
        values = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in attrs.items()}
        return Entry("uid=jdoe,ou=people,dc=x", {"uid": ("jdoe",), **values})

    locked = parse_account(
        "ldap",
        entry(
            pwdAccountLockedTime="20261204110000Z",
            pwdFailureTime=["20261204105900Z", "20261204110000.123456Z"],
            pwdReset="TRUE",
            shadowExpire="1",
        ),
        ["VPN Users"],
        NOW,
    )
    assert (locked.locked, locked.disabled, locked.must_change, locked.expired) == (
        True,
        False,
        True,
        True,
    )
    assert locked.bad_count == 2 and locked.last_bad_password == datetime.datetime(
        2026, 12, 4, 11, 0, tzinfo=UTC
    )
    disabled = parse_account("ldap", entry(pwdAccountLockedTime=PPOLICY_PERMANENT), [], NOW)
    assert disabled.disabled and not disabled.locked
    plain = parse_account("ldap", entry(shadowExpire="99999"), [], NOW)
    assert plain.problems() == []


@pytest.mark.parametrize(
    ("info", "why"),
    [
        ("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 773, v1db1", "must-change"),
        ("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 775, v1db1", "locked"),
        ("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 533, v1db1", "disabled"),
        ("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1", "invalid-credentials"),
        ("", "invalid-credentials"),
    ],
)  # fmt: skip
def test_why_active_directory_refused_a_bind(info: str, why: str) -> None:
    assert bind_reason("active_directory", info) == why
    assert bind_reason("ldap", info) == "invalid-credentials"


# --------------------------------------------------------------------------- inventory


def test_directory_platforms_map_to_the_ldap_transport(tmp_path: Path) -> None:
    host = make_host(
        "dc-01",
        {"platform": "active_directory", "user": "cn=itops svc,ou=services,dc=corp", "password": "env:X"},
        ("directories",),
        "inv.yml:1",
    )  # fmt: skip
    assert (host.transport, host.port) == ("ldap", 636)
    settings = LdapSettings.from_host(host)
    assert (settings.url, settings.encrypted) == ("ldaps://dc-01:636", True)
    starttls = make_host("l", {"platform": "ldap", "ldap_tls": "starttls"}, (), "x")
    assert LdapSettings.from_host(starttls).url == "ldap://l:389"
    plain = make_host("l", {"platform": "ldap", "ldap_tls": "none", "port": 1389}, (), "x")
    assert LdapSettings.from_host(plain).url == "ldap://l:1389"
    assert not LdapSettings.from_host(plain).encrypted
    with pytest.raises(ValidationError, match="ldap_tls"):
        LdapSettings.from_host(make_host("l", {"platform": "ldap", "ldap_tls": "ssl"}, (), "x"))
    with pytest.raises(ValidationError, match="ldap_ca_bundle"):
        LdapSettings.from_host(
            make_host("l", {"platform": "ldap", "ldap_ca_bundle": str(tmp_path / "no")}, (), "x")
        )


# --------------------------------------------------------------------------- step context


class MemoryDirectory:
    """An in-memory directory transport (DirectoryTransport) for the context's own rules."""

    def __init__(self) -> None:
        self.host = make_host("dc-01", {"platform": "active_directory"}, (), "x")
        self.notices: tuple[str, ...] = ()
        self.kind, self.base_dn, self.encrypted = "active_directory", "DC=x", True
        self.privileged_groups: tuple[str, ...] = ("Helpdesk Admins",)
        self.filters: list[str] = []
        self.passwords: list[str] = []

    def run(self, command: Any, **_: Any) -> Any:
        raise Unsupported("a directory runs no commands")

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass

    def search(
        self, base: str, scope: str, filterstr: str, attrs: Sequence[str], **_: Any
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        self.filters.append(filterstr)
        return [("CN=jdoe,CN=Users,DC=x", {"sAMAccountName": [b"jdoe"]})]

    def modify(self, dn: str, changes: Any, **_: Any) -> None:
        pass

    def set_password(self, dn: str, password: Secret, **_: Any) -> None:
        self.passwords.append(password.reveal())

    def bind_check(self, dn: str, password: Secret) -> str:
        return "ok"


def context(step: str = "check") -> tuple[Any, MemoryDirectory, Any]:
    from toolkit.run.runner import _context, _StepEnv, _Trace

    transport = MemoryDirectory()
    trace = _Trace()
    env = _StepEnv(
        CredentialStore(Redactor()), threading.Event(), None, None, "INC-1", "P3", lambda h: []
    )
    ctx = _context(transport.host, transport, trace, env)  # type: ignore[arg-type]
    ctx.step = step
    return ctx, transport, trace


def test_a_directory_host_gets_a_directory_context_that_records_every_operation() -> None:
    ctx, transport, trace = context()
    dctx = directory(ctx)
    assert (
        dctx.privileged_groups[-1] == "Helpdesk Admins"
        and "Domain Admins" in dctx.privileged_groups
    )
    user = dctx.find_user("jdoe", ["sAMAccountName"])
    assert user.first("samaccountname") == "jdoe"
    assert transport.filters == [
        "(&(objectCategory=person)(objectClass=user)(sAMAccountName=jdoe))"
    ]
    dctx.find_group("Sales (EU)*", ["cn"])
    assert r"(cn=Sales \28EU\29\2a)" in transport.filters[-1]
    assert [c.command.split()[:2] for c in trace.commands] == [["ldap", "search"]] * 2
    with pytest.raises(ValidationError):
        dctx.find_user("*)(uid=*", ["cn"])
    assert len(transport.filters) == 2  # refused before anything was sent


def test_changes_only_in_apply_and_a_new_password_never_recorded() -> None:
    canary = "Canary-s3cr3t-(x)*"
    ctx, transport, trace = context("check")
    dctx = directory(ctx)
    with pytest.raises(ChangeRefused):
        dctx.modify("CN=jdoe,DC=x", [("replace", "lockoutTime", ["0"])])
    with pytest.raises(ChangeRefused):
        dctx.set_password("CN=jdoe,DC=x", Secret(canary))
    assert transport.passwords == []
    ctx.step = "apply"
    dctx.set_password("CN=jdoe,DC=x", Secret(canary))
    dctx.modify("CN=jdoe,DC=x", [("replace", "unicodePwd", Secret(canary))])
    ctx.step = "verify"
    assert dctx.bind_check("CN=jdoe,DC=x", Secret(canary)) == "ok"
    assert transport.passwords == [canary]
    recorded = repr(trace.commands) + repr(trace.notes)
    assert canary not in recorded and "********" in recorded
    assert [c.command.split()[1] for c in trace.commands] == [
        "set-password",
        "modify",
        "bind-check",
    ]


def test_directory_refuses_other_contexts() -> None:
    class Plain:
        host = make_host("ws-1", {}, (), "x")

    with pytest.raises(Unsupported, match="not a directory"):
        directory(Plain())  # type: ignore[arg-type]


@pytest.mark.parametrize("tls", ["ldaps", "starttls"])
def test_a_directory_that_accepts_but_never_answers_tls_fails_within_the_connect_timeout(
    tls: str,
) -> None:
    """A DC that accepts TCP and then says nothing: libldap's timeouts do not cover the TLS
    handshake (it spun a CPU core until the listener closed, 200 s); the run must end within the
    connect timeout, naming the stall."""
    import socket
    import time

    from toolkit.errors import Unreachable
    from toolkit.transports.base import ConnectOptions
    from toolkit.transports.ldap import LdapTransport

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # accepted, never answered
            except OSError:
                continue

    threading.Thread(target=hold, daemon=True).start()
    port = listener.getsockname()[1]
    host = make_host(
        "dc-silent",
        {"platform": "active_directory", "address": "127.0.0.1", "port": port, "ldap_tls": tls,
         "user": "cn=svc,dc=corp", "password": "env:X"},
        ("directories",),
        "inv.yml:1",
    )  # fmt: skip
    started = time.monotonic()
    try:
        with pytest.raises(Unreachable, match="did not complete the TLS handshake|no answer"):
            LdapTransport(
                host, LdapSettings.from_host(host), ConnectOptions(connect_timeout=1.0)
            )._connection()
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        listener.close()
        for s in held:
            s.close()
