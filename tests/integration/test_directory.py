"""Directory accounts end to end through the CLI against a real Samba AD DC and a real OpenLDAP
slapd with ppolicy (toolkit.lab.directory), started once per session on 127.1.249.1/.2 — not
the `lab` fixture's addresses, so no lab lock is needed.

Every change is read back from the directory behind itops' back (an administrator's own
python-ldap connection), and every refusal is shown to have changed nothing.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_secrets import every_byte_written
from tests.signers import Operators, make_operators
from toolkit.lab.core import Lab, LabState
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration

ldap = pytest.importorskip("ldap")

AD_ADDRESS, LDAP_ADDRESS = "127.1.249.1", "127.1.249.2"
OPERATORS = ("l1-tech", "l2-lead")


@dataclass
class Directories:
    root: Path
    keys: Operators
    peers: dict[str, Any]  # "ad" / "ldap" → DirectoryPeer
    timings: dict[str, float]

    def itops(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
        full["ITOPS_SIGNING_KEY"] = str(self.keys.key("l1-tech"))
        full.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "toolkit", "--workspace", str(self.root), *args],
            capture_output=True, text=True, timeout=120, env=full, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def json(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        done = self.itops(*args, "--json", env=env)
        assert done.stdout.strip(), done.stderr
        return done.returncode, json.loads(done.stdout)

    def approved(self, *args: str) -> subprocess.CompletedProcess[str]:
        first = self.itops(*args)
        request = re.search(r"APR-[0-9a-f]{8}", first.stdout)
        assert first.returncode == 5 and request, first.stdout + first.stderr
        grant = self.itops(
            "approve", request.group(), "--yes",
            env={"ITOPS_OPERATOR": "l2-lead", "ITOPS_SIGNING_KEY": str(self.keys.key("l2-lead"))},
        )  # fmt: skip
        assert grant.returncode == 0, grant.stdout + grant.stderr
        return self.itops(*args)

    def host(self, kind: str) -> str:
        return str(self.peers[kind].name)

    def admin(self, kind: str) -> Any:
        return self.peers[kind].connect()

    def read(self, kind: str, dn: str, *attrs: str) -> dict[str, list[str]]:
        conn = self.admin(kind)
        try:
            found = conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", list(attrs))
        finally:
            conn.unbind_s()
        return {k: [v.decode() for v in vs] for k, vs in found[0][1].items()}

    def new_user(self, kind: str) -> tuple[str, str]:
        """A fresh enabled user with a known password: (name, DN)."""
        peer = self.peers[kind]
        name = "t" + secrets.token_hex(5)
        dn = peer.user_dn(name)
        conn = self.admin(kind)
        try:
            if kind == "ad":
                conn.add_s(dn, [
                    ("objectClass", [b"top", b"person", b"organizationalPerson", b"user"]),
                    ("sAMAccountName", [name.encode()]),
                    ("userPrincipalName", [f"{name}@itops.lab".encode()]),
                    ("unicodePwd", [f'"{peer.user_password}"'.encode("utf-16-le")]),
                    ("userAccountControl", [b"512"]),
                ])  # fmt: skip
            else:
                from toolkit.lab.directory import ssha

                conn.add_s(dn, [
                    ("objectClass", [b"inetOrgPerson", b"shadowAccount"]),
                    ("uid", [name.encode()]), ("cn", [name.encode()]), ("sn", [name.encode()]),
                    ("userPassword", [ssha(peer.user_password).encode()]),
                ])  # fmt: skip
        finally:
            conn.unbind_s()
        return name, dn

    def bind(self, kind: str, dn: str, password: str) -> str:
        """ "ok", or the AD reason word / "invalid" for a refused bind."""
        from toolkit.transports.ldap import bind_reason

        conn = self.peers[kind].connect(as_admin=False)
        try:
            conn.simple_bind_s(dn, password)
            return "ok"
        except ldap.INVALID_CREDENTIALS as exc:
            info = exc.args[0].get("info", "")
            return bind_reason("active_directory" if kind == "ad" else "ldap", info)
        finally:
            conn.unbind_s()

    def locked(self, kind: str, dn: str) -> bool:
        if kind == "ad":
            got = self.read(kind, dn, "msDS-User-Account-Control-Computed")
            return bool(int(got["msDS-User-Account-Control-Computed"][0]) & 0x10)
        return "pwdAccountLockedTime" in self.read(kind, dn, "pwdAccountLockedTime")


@pytest.fixture(scope="session")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Directories]:
    if os.geteuid() != 0 or not shutil.which("samba-tool") or not shutil.which("slapd"):
        if os.environ.get("CI"):
            pytest.fail("directory tests need root, samba-tool and slapd (scripts/setup)")
        pytest.skip("directory tests need root, samba (samba-ad-dc) and slapd")
    from toolkit.lab.directory import start_samba, start_slapd
    from toolkit.lab.tlsca import issue

    folder = tmp_path_factory.mktemp("directories")
    os.chmod(folder, 0o700)
    state = LabState(lab_id="dirtest", user="root", port=0)
    timings = {}
    ad = None
    try:
        started = time.monotonic()
        ad = start_samba(folder, AD_ADDRESS, state.spawn)
        timings["samba provision+start+seed"] = time.monotonic() - started
        started = time.monotonic()
        ld = start_slapd(folder, LDAP_ADDRESS, state.spawn)
        timings["slapd config+start+seed"] = time.monotonic() - started
        root = tmp_path_factory.mktemp("dirws") / "ws"
        Workspace.init(root)
        keys = make_operators(tmp_path_factory.mktemp("dirkeys"), OPERATORS)
        keys.write(root / "allowed_signers", OPERATORS)
        other = issue(
            folder / "other-ca", "itopsdc.itops.lab", AD_ADDRESS, ca_name="not the DC's CA"
        )
        wrong = folder / "wrong.pw"
        wrong.write_text("not-the-password\n")
        os.chmod(wrong, 0o600)
        hosts = {ad.name: ad.inventory(), ld.name: ld.inventory()}
        extra = {
            "dc-badca": {**ad.inventory(), "ldap_ca_bundle": str(other.ca)},
            "dc-down": {**ad.inventory(), "address": "127.1.249.9"},
            "dc-badpw": {**ad.inventory(), "password": f"file:{wrong}"},
            # StartTLS, and the naming context found in the rootDSE (no ldap_base_dn)
            "dc-starttls": {**ad.inventory(), "ldap_tls": "starttls", "ldap_base_dn": None},
            "ldap-starttls": {**ld.inventory(), "ldap_tls": "starttls", "ldap_base_dn": None},
            "ldap-plain": {**ld.inventory(), "ldap_tls": "none"},
        }
        import yaml

        (root / "inventory" / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {
            "directories": {"hosts": hosts}, "odd": {"hosts": extra},
        }}}))  # fmt: skip
        with open(root / "itops.toml", "a") as f:
            f.write('\n[directory]\nprivileged_groups = ["Helpdesk Admins"]\n')
        print(f"\ndirectory peers: {json.dumps({k: round(v, 2) for k, v in timings.items()})}")
        yield Directories(root, keys, {"ad": ad, "ldap": ld}, timings)
    finally:
        Lab._stop(state)
        if ad is not None:
            shutil.rmtree(ad.folder, ignore_errors=True)  # the DC's own short-path folder


KINDS = ["ad", "ldap"]


def result(data: dict[str, Any], host: str) -> dict[str, Any]:
    return next(h for h in data["hosts"] if h["host"] == host)


# --------------------------------------------------------------------------- status


@pytest.mark.parametrize("kind", KINDS)
def test_status_reads_the_seeded_accounts_states(dirs: Directories, kind: str) -> None:
    host = dirs.host(kind)
    expected = {
        "locked.user": "locked",
        "expired.user": "expired",
        "disabled.user": "disabled",
    }
    for user, word in expected.items():
        code, data = dirs.json("fix", "account.status", host, "-p", f"user={user}", "--check")
        r = result(data, host)
        assert code == 4 and r["outcome"] == "would-fix", r
        assert r["check"]["facts"][word] is True, r
        assert word in r["message"]
    _, data = dirs.json("fix", "account.status", host, "-p", "user=admin.user", "--check")
    facts = result(data, host)["check"]["facts"]
    assert {"Domain Admins" if kind == "ad" else "Administrators"} <= set(facts["groups"])
    # every directory operation is in the recorded commands
    commands = result(data, host)["commands"]
    assert commands and all(c["command"].startswith("ldap ") for c in commands)


def test_status_by_upn_on_active_directory(dirs: Directories) -> None:
    _, data = dirs.json(
        "fix", "account.status", "dc-lab", "-p", "user=disabled.user@itops.lab", "--check"
    )
    assert result(data, "dc-lab")["check"]["facts"]["account"] == "disabled.user"


# --------------------------------------------------------------------------- unlock


@pytest.mark.parametrize("kind", KINDS)
def test_unlock_a_locked_out_account(dirs: Directories, kind: str) -> None:
    from toolkit.lab.directory import lock_out

    name, dn = dirs.new_user(kind)
    lock_out(dirs.peers[kind], name)
    assert dirs.locked(kind, dn)
    host = dirs.host(kind)
    done = dirs.itops("fix", "account.unlock", host, "-p", f"user={name}", "--ticket", "INC-7001")
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    assert not dirs.locked(kind, dn)
    assert dirs.bind(kind, dn, dirs.peers[kind].user_password) == "ok"
    again = dirs.itops("fix", "account.unlock", host, "-p", f"user={name}", "--ticket", "INC-7001")
    assert again.returncode == 0 and "already-ok" in again.stdout


# --------------------------------------------------------------------------- reset


@pytest.mark.parametrize("kind", KINDS)
def test_reset_generates_a_password_that_binds_and_appears_nowhere(
    dirs: Directories, kind: str
) -> None:
    from toolkit.lab.directory import lock_out

    name, dn = dirs.new_user(kind)
    lock_out(dirs.peers[kind], name)
    host = dirs.host(kind)
    done = dirs.itops(
        "fix", "account.reset-password", host, "-p", f"user={name}", "--ticket", "INC-7002"
    )
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    shown = re.search(
        rf"{host}: new password for {name} \(shown once, not recorded\): (\S+)", done.stderr
    )
    assert shown, done.stderr
    password = shown.group(1)
    assert not dirs.locked(kind, dn)
    if kind == "ad":
        # the flag is set: AD answers "must change" (data 773) to the RIGHT password only
        assert dirs.bind(kind, dn, password) == "must-change"
        assert dirs.read(kind, dn, "pwdLastSet")["pwdLastSet"] == ["0"]
    else:
        assert dirs.bind(kind, dn, password) == "ok"
        assert dirs.read(kind, dn, "pwdReset")["pwdReset"] == ["TRUE"]
    assert dirs.bind(kind, dn, dirs.peers[kind].user_password) != "ok"  # the old one is gone
    assert password not in done.stdout
    assert password.encode() not in every_byte_written(dirs.root)
    log = dirs.itops("log", "--ticket", "INC-7002", "--json")
    assert "ldap set-password" in log.stdout and password not in log.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_reset_with_a_given_password_and_no_must_change_canary(
    dirs: Directories, kind: str
) -> None:
    name, dn = dirs.new_user(kind)
    canary = f"Canary-{secrets.token_hex(6)}$'\"x(*)\\"
    host = dirs.host(kind)
    done = dirs.itops(
        "fix", "account.reset-password", host, "-p", f"user={name}",
        "-p", "password=env:ITOPS_TEST_CANARY", "-p", "expire=false", "--ticket", "INC-7003",
        env={"ITOPS_TEST_CANARY": canary},
    )  # fmt: skip
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    assert dirs.bind(kind, dn, canary) == "ok"
    if kind == "ad":
        assert dirs.read(kind, dn, "pwdLastSet")["pwdLastSet"] != ["0"]
    else:
        assert "pwdReset" not in dirs.read(kind, dn, "pwdReset")
    for form in (canary, json.dumps(canary)[1:-1]):
        assert form not in done.stdout + done.stderr
        assert form.encode() not in every_byte_written(dirs.root)


def test_a_refused_password_names_the_policy_and_changes_nothing(dirs: Directories) -> None:
    name, dn = dirs.new_user("ad")
    done = dirs.itops(
        "fix", "account.reset-password", "dc-lab", "-p", f"user={name}",
        "-p", "password=env:PW", "--ticket", "INC-7004", env={"PW": "abc"},
    )  # fmt: skip
    assert done.returncode == 1 and "password-refused" in done.stdout, done.stdout
    assert "too short" in done.stdout and "the domain's password policy" in done.stdout
    assert dirs.bind("ad", dn, dirs.peers["ad"].user_password) == "ok"  # unchanged
    # a user under a fine-grained password policy (PSO: min length 24): the PSO is named
    pso = dirs.peers["ad"].user_dn("fgpp.user")
    before = dirs.read("ad", pso, "pwdLastSet")
    done = dirs.itops(
        "fix", "account.reset-password", "dc-lab", "-p", "user=fgpp.user",
        "-p", "password=env:PW", "--ticket", "INC-7005", env={"PW": "Fifteen-chars-1"},
    )  # fmt: skip
    assert done.returncode == 1 and "Strict PSO" in done.stdout, done.stdout
    assert "24 characters" in done.stdout
    assert dirs.read("ad", pso, "pwdLastSet") == before


def test_a_privileged_account_is_not_reset(dirs: Directories) -> None:
    done = dirs.itops(
        "fix", "account.reset-password", "dc-lab", "-p", "user=admin.user", "--ticket", "INC-7006"
    )
    assert done.returncode == 1 and "privileged-account" in done.stdout, done.stdout
    assert "Domain Admins" in done.stdout


# a reset neither re-enables an account (ppolicy drops even its permanent lock when an
# administrator sets the password) nor makes an expired one usable: check refuses it
_STATES = {
    ("ad", "disabled"): ("userAccountControl", b"514"),
    ("ad", "expired"): ("accountExpires", b"116444736000000000"),  # 1970-01-01
    ("ldap", "disabled"): ("pwdAccountLockedTime", b"000001010000Z"),
    ("ldap", "expired"): ("shadowExpire", b"1"),
}


@pytest.mark.parametrize(("kind", "state"), list(_STATES))
def test_a_disabled_or_expired_account_is_not_reset(
    dirs: Directories, kind: str, state: str
) -> None:
    name, dn = dirs.new_user(kind)
    attr, value = _STATES[kind, state]
    conn = dirs.admin(kind)
    try:
        conn.modify_s(dn, [(ldap.MOD_REPLACE, attr, [value])])
    finally:
        conn.unbind_s()
    kept = ("pwdLastSet", attr) if kind == "ad" else ("userPassword", "pwdReset", attr)
    before = dirs.read(kind, dn, *kept)
    done = dirs.itops(
        "fix", "account.reset-password", dirs.host(kind), "-p", f"user={name}",
        "--ticket", "REQ-7009",
    )  # fmt: skip
    assert done.returncode == 1 and "change-refused" in done.stdout, done.stdout + done.stderr
    assert f"{name} is {state}" in done.stdout, done.stdout
    assert "new password for" not in done.stdout + done.stderr  # none was made or shown
    assert dirs.read(kind, dn, *kept) == before  # nothing changed


def test_a_nested_or_primary_membership_of_a_privileged_group_counts(dirs: Directories) -> None:
    """Active Directory's memberOf lists direct groups only, and never the primary group: a
    user in a group nested in Domain Admins, or whose primary group is Domain Admins, is a
    Domain Admin all the same; adding someone to such a nested group makes them one."""
    nested = "Tier1 Ops " + secrets.token_hex(3)
    nested_dn, admins = group_dn("ad", nested), group_dn("ad", "Domain Admins")
    (inner, inner_dn), (primary, primary_dn) = dirs.new_user("ad"), dirs.new_user("ad")
    conn = dirs.admin("ad")
    try:
        conn.add_s(nested_dn, [("objectClass", [b"top", b"group"]),
                               ("sAMAccountName", [nested.encode()])])  # fmt: skip
        conn.modify_s(admins, [(ldap.MOD_ADD, "member", [nested_dn.encode()])])
        conn.modify_s(nested_dn, [(ldap.MOD_ADD, "member", [inner_dn.encode()])])
        conn.modify_s(admins, [(ldap.MOD_ADD, "member", [primary_dn.encode()])])
        conn.modify_s(primary_dn, [(ldap.MOD_REPLACE, "primaryGroupID", [b"512"])])
    finally:
        conn.unbind_s()
    assert all("Admins" not in g for g in dirs.read("ad", primary_dn, "memberOf")["memberOf"])
    for name, dn in ((inner, inner_dn), (primary, primary_dn)):
        before = dirs.read("ad", dn, "pwdLastSet")
        done = dirs.itops(
            "fix", "account.reset-password", "dc-lab", "-p", f"user={name}", "--ticket", "INC-7011"
        )
        assert done.returncode == 1 and "privileged-account" in done.stdout, done.stdout
        assert "Domain Admins" in done.stdout
        assert dirs.read("ad", dn, "pwdLastSet") == before
    name, dn = dirs.new_user("ad")
    done = dirs.approved(
        "fix", "account.group-add", "dc-lab", "-p", f"user={name}", "-p", f"group={nested}",
        "--ticket", "REQ-7012",
    )  # fmt: skip
    assert done.returncode == 1 and "privileged-account" in done.stdout, done.stdout
    assert "Domain Admins" in done.stdout
    assert dn.lower() not in members(dirs, "ad", nested_dn)


def test_reset_is_refused_over_plain_ldap_and_plain_ldap_is_warned(dirs: Directories) -> None:
    name, dn = dirs.new_user("ldap")
    _, data = dirs.json("fix", "account.status", "ldap-plain", "-p", f"user={name}", "--check")
    r = result(data, "ldap-plain")
    assert r["outcome"] == "already-ok", r
    assert any("WARNING: plain LDAP" in n for n in r["notes"]), r
    done = dirs.itops(
        "fix", "account.reset-password", "ldap-plain", "-p", f"user={name}", "--ticket", "INC-7007"
    )
    assert done.returncode == 1 and "clear text" in done.stdout, done.stdout
    assert dirs.bind("ldap", dn, dirs.peers["ldap"].user_password) == "ok"


@pytest.mark.parametrize("host", ["dc-starttls", "ldap-starttls"])
def test_starttls_works_with_validation(dirs: Directories, host: str) -> None:
    _, data = dirs.json("fix", "account.status", host, "-p", "user=disabled.user", "--check")
    r = result(data, host)
    assert r["outcome"] == "would-fix" and r["check"]["facts"]["disabled"], r
    assert not r["notes"]


# --------------------------------------------------------------------------- enable / disable


@pytest.mark.parametrize("kind", KINDS)
def test_disable_then_enable(dirs: Directories, kind: str) -> None:
    name, dn = dirs.new_user(kind)
    host, password = dirs.host(kind), dirs.peers[kind].user_password
    done = dirs.itops("fix", "account.disable", host, "-p", f"user={name}", "--ticket", "CHG-7010")
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    if kind == "ad":
        assert int(dirs.read(kind, dn, "userAccountControl")["userAccountControl"][0]) & 2
        assert dirs.bind(kind, dn, password) == "disabled"
    else:
        assert dirs.read(kind, dn, "pwdAccountLockedTime")["pwdAccountLockedTime"] == [
            "000001010000Z"
        ]
        assert dirs.bind(kind, dn, password) != "ok"
    done = dirs.itops("fix", "account.enable", host, "-p", f"user={name}", "--ticket", "CHG-7010")
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    assert dirs.bind(kind, dn, password) == "ok"
    if kind == "ad":
        assert int(dirs.read(kind, dn, "userAccountControl")["userAccountControl"][0]) == 512


# --------------------------------------------------------------------------- groups


def members(dirs: Directories, kind: str, group_dn: str) -> list[str]:
    return [m.lower() for m in dirs.read(kind, group_dn, "member").get("member", [])]


def group_dn(kind: str, name: str) -> str:
    return (
        f"CN={name},CN=Users,DC=itops,DC=lab"
        if kind == "ad"
        else f"cn={name},ou=groups,dc=itops,dc=lab"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_group_add_and_remove_need_a_second_operator(dirs: Directories, kind: str) -> None:
    name, dn = dirs.new_user(kind)
    host, group = dirs.host(kind), group_dn(kind, "VPN Users")
    args = ("-p", f"user={name}", "-p", "group=VPN Users", "--ticket", "REQ-7020")
    done = dirs.approved("fix", "account.group-add", host, *args)
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    assert dn.lower() in members(dirs, kind, group)
    done = dirs.approved("fix", "account.group-remove", host, *args)
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    assert dn.lower() not in members(dirs, kind, group)


@pytest.mark.parametrize(
    ("kind", "group"),
    [("ad", "Domain Admins"), ("ad", "Helpdesk Admins"), ("ldap", "Administrators")],
)
def test_a_privileged_group_is_refused_even_when_approved(
    dirs: Directories, kind: str, group: str
) -> None:
    """The approval covers the run; a privileged group also needs allow_privileged=true, which
    the approval would then bind. (Samba, unlike Windows' AdminSDHolder, lets Account Operators
    add to Domain Admins: itops' refusal is what stops it.)"""
    if group == "Helpdesk Admins":  # listed in the workspace's [directory] privileged_groups
        conn = dirs.admin("ad")
        try:
            conn.add_s(group_dn("ad", group), [("objectClass", [b"top", b"group"]),
                                               ("sAMAccountName", [group.encode()])])  # fmt: skip
        except ldap.ALREADY_EXISTS:
            pass
        finally:
            conn.unbind_s()
    name, dn = dirs.new_user(kind)
    done = dirs.approved(
        "fix", "account.group-add", dirs.host(kind), "-p", f"user={name}", "-p", f"group={group}",
        "--ticket", "REQ-7021",
    )  # fmt: skip
    assert done.returncode == 1 and "privileged-account" in done.stdout, done.stdout
    assert dn.lower() not in members(dirs, kind, group_dn(kind, group))


@pytest.mark.parametrize("kind", KINDS)
def test_a_group_name_with_filter_characters_is_escaped(dirs: Directories, kind: str) -> None:
    odd = "Sales (EU)* \\ team"
    conn = dirs.admin(kind)
    from ldap.dn import escape_dn_chars

    dn_of = group_dn(kind, escape_dn_chars(odd))
    name, dn = dirs.new_user(kind)
    try:
        attrs = [("objectClass", [b"top", b"group"]), ("sAMAccountName", [b"sales-eu"])] if kind == "ad" else [
            ("objectClass", [b"groupOfNames"]), ("cn", [odd.encode()]),
            ("member", [dirs.peers[kind].service_user.encode()]),
        ]  # fmt: skip
        conn.add_s(dn_of, attrs)
    except ldap.ALREADY_EXISTS:
        pass
    finally:
        conn.unbind_s()
    done = dirs.approved(
        "fix", "account.group-add", dirs.host(kind), "-p", f"user={name}", "-p", f"group={odd}",
        "--ticket", "REQ-7022",
    )  # fmt: skip
    assert done.returncode == 0 and "fixed" in done.stdout, done.stdout + done.stderr
    assert dn.lower() in members(dirs, kind, dn_of)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "user", ["*", "*)(uid=*", "jdoe)(|(objectClass=*)", "jdoe\\2a", "cn=x,dc=itops", "-jdoe", "a b"]
)
def test_injection_in_user_names_is_refused_before_anything_runs(
    dirs: Directories, user: str
) -> None:
    done = dirs.itops(
        "fix", "account.unlock", "directories", "-p", f"user={user}", "--ticket", "INC-7030"
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "user" in done.stderr and not done.stdout.strip()


@pytest.mark.parametrize("kind", KINDS)
def test_injection_in_group_names_matches_nothing(dirs: Directories, kind: str) -> None:
    name, dn = dirs.new_user(kind)
    for group in ("*", "VPN Users)(cn=*", "*)(|(cn=Domain Admins"):
        done = dirs.itops(
            "fix", "account.group-add", dirs.host(kind), "-p", f"user={name}", "-p",
            f"group={group}", "--check",
        )  # fmt: skip
        assert done.returncode == 1 and "no group" in done.stdout, done.stdout + done.stderr
    assert dn.lower() not in members(dirs, kind, group_dn(kind, "VPN Users"))


def test_an_unreachable_dc_is_a_clear_error(dirs: Directories) -> None:
    code, data = dirs.json(
        "fix", "account.unlock", "dc-down", "-p", "user=jdoe", "--ticket", "INC-7040"
    )
    r = result(data, "dc-down")
    assert code == 3 and r["outcome"] == "unreachable" and r["error"] == "unreachable", r
    assert "127.1.249.9" in r["message"]


def test_a_certificate_that_does_not_validate_is_refused(dirs: Directories) -> None:
    name, dn = dirs.new_user("ad")
    from toolkit.lab.directory import lock_out

    lock_out(dirs.peers["ad"], name)
    _, data = dirs.json(
        "fix", "account.unlock", "dc-badca", "-p", f"user={name}", "--ticket", "INC-7041"
    )
    r = result(data, "dc-badca")
    assert r["error"] == "certificate" and "did not validate" in r["message"], r
    assert not r["commands"]  # nothing was sent: not even a search
    assert dirs.locked("ad", dn)


def test_bad_service_account_credentials_are_a_clear_error(dirs: Directories) -> None:
    _, data = dirs.json("fix", "account.status", "dc-badpw", "-p", "user=jdoe", "--check")
    r = result(data, "dc-badpw")
    assert r["error"] == "auth-failed" and "service account" in r["message"], r
    assert "invalid-credentials" in r["message"]


def test_the_peers_start_in_time(dirs: Directories) -> None:
    """Measured once per session (reported): provisioning a DC is the slow part."""
    assert dirs.timings["samba provision+start+seed"] < 120
    assert dirs.timings["slapd config+start+seed"] < 30


# --------------------------------------------------------------------------- runbook


@pytest.mark.parametrize("kind", KINDS)
def test_the_password_locked_runbook_takes_the_directory_branch(
    dirs: Directories, kind: str, tmp_path: Path
) -> None:
    from toolkit.lab.directory import lock_out

    name, dn = dirs.new_user(kind)
    lock_out(dirs.peers[kind], name)
    out = tmp_path / "pw"
    done = dirs.itops(
        "runbook", "run", "password-locked", dirs.host(kind), "-p", f"user={name}",
        "-p", f"output_file={out}", "--ticket", f"INC-75{len(kind)}",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "escalated" not in done.stdout.replace("nothing to escalate", "")
    password = out.read_text().split()[-1]
    assert not dirs.locked(kind, dn)
    assert dirs.bind(kind, dn, password) in ("ok", "must-change")
    assert password not in done.stdout + done.stderr
    log = dirs.itops("log", "--ticket", f"INC-75{len(kind)}", "--json").stdout
    for task in ("account.status", "account.unlock", "account.reset-password"):
        assert task in log
    assert "password.reset" not in log  # the Linux steps are not a directory's


@pytest.mark.parametrize("kind", KINDS)
def test_the_password_locked_runbook_can_only_unlock(
    dirs: Directories, kind: str, tmp_path: Path
) -> None:
    """Unlock and/or reset: with -p reset=false a locked-out user who still knows the password
    is unlocked, and the password is left as it was (no reset step, nothing handed over)."""
    from toolkit.lab.directory import lock_out

    name, dn = dirs.new_user(kind)
    lock_out(dirs.peers[kind], name)
    ticket = f"INC-77{len(kind)}"
    done = dirs.itops("runbook", "run", "password-locked", dirs.host(kind), "-p", f"user={name}",
                      "-p", "reset=false", "--ticket", ticket)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert not dirs.locked(kind, dn)
    assert "new password" not in done.stderr
    log = dirs.itops("log", "--ticket", ticket, "--json").stdout
    assert "account.unlock" in log and "account.reset-password" not in log


def test_the_runbook_resets_under_a_strict_policy_with_a_longer_password(
    dirs: Directories, tmp_path: Path
) -> None:
    """A fine-grained policy asking more than the generated 20 characters refuses the reset (the
    runbook escalates, naming the policy); what the refusal's hint says, a longer generated
    password (`-p length=N`), is a parameter of the runbook too."""
    name, dn = dirs.new_user("ad")
    conn = dirs.admin("ad")
    try:
        strict = group_dn("ad", "Strict Passwords").encode()
        conn.modify_s(strict.decode(), [(ldap.MOD_ADD, "member", [dn.encode()])])
    finally:
        conn.unbind_s()
    args = ("runbook", "run", "password-locked", "dc-lab", "-p", f"user={name}")
    refused = dirs.itops(*args, "--ticket", "INC-7560")
    assert refused.returncode == 1 and "escalated" in refused.stdout, refused.stdout
    assert "Strict PSO" in refused.stdout
    out = tmp_path / "pw"
    done = dirs.itops(*args, "-p", "length=32", "-p", f"output_file={out}", "--ticket", "INC-7561")
    assert done.returncode == 0, done.stdout + done.stderr
    password = out.read_text().split()[-1]
    assert len(password) == 32 and dirs.bind("ad", dn, password) == "must-change"
