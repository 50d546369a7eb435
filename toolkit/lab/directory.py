"""Lab services `ad` and `ldap`: a real Samba AD domain controller and a real OpenLDAP slapd.

`ad`: `samba-tool domain provision` (DNS backend NONE) into a private folder (/tmp/itops-dc-*:
samba's unix sockets need a short path), then `samba` with its own smb.conf: `interfaces` /
`bind interfaces only` on one loopback address (127.1.250.1 for `itops lab up`), `server
services = ldap` (the DC's LDAP and LDAPS listeners, nothing else), and a certificate for that
address from a CA of its own (`tls cafile/certfile/keyfile`) that the inventory names as
`ldap_ca_bundle`.

`ldap`: slapd with its own cn=config (slapd.d, made with slapadd), its own MDB database, the
ppolicy overlay (lockout after 3 failures until an administrator unlocks, must-change after an
administrator's reset, a minimum length of 8) on ldaps:// and ldap:// (StartTLS) of its own
loopback address (127.1.250.2), with its own CA-signed certificate.

Both are seeded with the same roles: `plain` (jdoe), `locked`, `expired`, `disabled`,
`privileged` (in Domain Admins / Administrators) and a group `VPN Users`; the AD also has a user
under a fine-grained password policy (min length 24). itops binds as the service account
`itops-svc` (AD: a member of Account Operators; OpenLDAP: `manage` by ACL), whose password is
in a 0600 file the inventory references (`password: file:…`). The inventory group is
`directories`: hosts `dc-lab` (active_directory) and `ldap-lab` (ldap).

`start_samba` / `start_slapd` are also what the integration tests start once per session.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.lab.core import LabError, LabState, Process, wait_for
from toolkit.lab.tlsca import issue
from toolkit.remediation.ldapsafe import python_ldap

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

AD_ADDRESS = "127.1.250.1"
LDAP_ADDRESS = "127.1.250.2"
REALM = "ITOPS.LAB"
BASE_DN = "DC=itops,DC=lab"
LDAP_BASE = "dc=itops,dc=lab"
INSTALL_HINT = "apt-get install samba samba-ad-dc samba-ad-provision slapd ldap-utils"
ROLES = {
    "plain": "jdoe",
    "locked": "locked.user",
    "expired": "expired.user",
    "disabled": "disabled.user",
    "privileged": "admin.user",
}
PSO_USER = "fgpp.user"
GROUP = "VPN Users"
SERVICE = "itops-svc"

Spawn = Callable[..., Process]


@dataclass
class DirectoryPeer:
    """A started directory server: what the inventory and the tests need to reach it."""

    name: str  # its inventory host name
    platform: str  # active_directory | ldap
    address: str
    folder: str
    ca: str  # the CA certificate that signed its server certificate
    base_dn: str
    service_user: str  # the bind DN (AD: a UPN)
    password_file: str  # the service account's password, 0600
    admin_dn: str
    admin_password: str
    user_password: str  # the seeded users' password
    users: dict[str, str] = field(default_factory=dict)  # role → account name
    pid: int = 0

    def inventory(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "address": self.address,
            "ldap_ca_bundle": self.ca,
            "ldap_base_dn": self.base_dn,
            "user": self.service_user,
            "password": f"file:{self.password_file}",
        }

    def connect(self, *, as_admin: bool = True) -> Any:
        """A python-ldap connection bound as the directory's administrator (for seeding and
        for tests that read the directory behind itops' back)."""
        ldap = python_ldap()

        conn = ldap.initialize(f"ldaps://{self.address}:636", bytes_mode=False)
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, self.ca)
        conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 10)
        if as_admin:
            conn.simple_bind_s(self.admin_dn, self.admin_password)
        return conn

    def user_dn(self, name: str) -> str:
        if self.platform == "active_directory":
            return f"CN={name},CN=Users,{self.base_dn}"
        return f"uid={name},ou=people,{self.base_dn}"


def _password() -> str:
    """A lab password every policy here accepts (length, three character classes)."""
    return "Lab-" + secrets.token_urlsafe(12).replace("-", "x").replace("_", "y") + "-9a"


def _write_secret(path: Path, value: str) -> None:
    path.write_text(value + "\n")
    os.chmod(path, 0o600)


def _listening(address: str, port: int) -> bool:
    from toolkit.lab.core import _listening as listening

    return address in listening(port)


def _wait_serving(server: str, address: str, seconds: float, logs: Path) -> None:
    """Wait until `server` listens on both LDAP ports of `address`."""
    wait_for(
        lambda: _listening(address, 636) and _listening(address, 389),
        seconds,
        f"{server} did not start listening on {address}:636 (see {logs})",
    )


def check_free(address: str, wait: float = 10) -> None:
    """Both LDAP ports free on `address` (waiting a little: a server just stopped may still
    hold them)."""
    deadline = time.monotonic() + wait
    for port in (389, 636):
        while True:
            with socket.socket() as sock:
                # as the servers do: connections in TIME_WAIT do not hold the port
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((address, port))
                    break
                except OSError:
                    if time.monotonic() < deadline:
                        time.sleep(0.2)
                        continue
                    raise LabError(
                        f"{address}:{port} is in use: another directory server runs there",
                        hint="itops lab down (or stop what listens there) first",
                    ) from None


# --------------------------------------------------------------------------- Samba AD DC

SMB_CONF = """\
# itops lab: a Samba AD DC on {address} only, serving LDAP/LDAPS and nothing else
[global]
\tnetbios name = ITOPSDC
\trealm = {realm}
\tworkgroup = ITOPS
\tserver role = active directory domain controller
\tserver services = ldap
\tinterfaces = {address}/8
\tbind interfaces only = yes
\tprivate dir = {d}/private
\tlock directory = {d}
\tstate directory = {d}/state
\tcache directory = {d}/cache
\tpid directory = {d}/run
\tncalrpc dir = {d}/run/ncalrpc
\twinbindd socket directory = {d}/run/winbindd
\tbinddns dir = {d}/bind-dns
\tlog file = {logs}/samba.log
\tlogging = file
\ttls enabled = yes
\ttls keyfile = {tls}/key.pem
\ttls certfile = {tls}/cert.pem
\ttls cafile = {tls}/ca.pem
"""


def provision_samba(folder: Path, address: str) -> float:
    """`samba-tool domain provision` into `folder` (seconds it took)."""
    if not shutil.which("samba-tool") or not shutil.which("samba"):
        raise LabError("samba-tool is missing", hint=INSTALL_HINT)
    started = time.monotonic()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.chmod(folder, 0o700)
    admin = _password()
    _write_secret(folder / "admin.pw", admin)
    done = subprocess.run(
        [
            "samba-tool", "domain", "provision",
            f"--realm={REALM}", "--domain=ITOPS", "--server-role=dc", "--dns-backend=NONE",
            "--host-name=itopsdc", f"--host-ip={address}", f"--targetdir={folder}",
            f"--adminpass={admin}",
            f"--option=interfaces={address}/8", "--option=bind interfaces only=yes",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        hint = INSTALL_HINT if "samba-ad-provision" in done.stderr else None
        raise LabError("samba-tool domain provision failed: " + " | ".join(tail), hint=hint)
    return time.monotonic() - started


def start_samba(folder: Path, address: str, spawn: Spawn, *, name: str = "dc-lab") -> DirectoryPeer:
    """Provision, start and seed a Samba AD DC on `address`; its certificates and the service
    account's password file go into `folder`.

    The DC's own files go into a short private folder (/tmp/itops-dc-*) rather than `folder`:
    samba puts unix sockets there (private/ldap_priv/ldapi, msg.sock/PID, ncalrpc), whose paths
    may not exceed 108 bytes — a lab under a deep workspace (pytest's tmp_path) exceeds it and
    samba then never listens."""
    import tempfile

    check_free(address)
    dc = Path(tempfile.mkdtemp(prefix="itops-dc-"))
    try:
        provision_samba(dc, address)
        tls = issue(folder / "tls-ad", "itopsdc.itops.lab", address, ca_name="itops lab AD CA")
        for sub in ("run", "cache"):
            (dc / sub).mkdir(exist_ok=True)
        logs = folder / "ad-logs"  # kept in the lab folder: they outlive a failed start
        logs.mkdir(exist_ok=True)
        conf = dc / "etc" / "itops-lab.conf"
        conf.write_text(
            SMB_CONF.format(address=address, realm=REALM, d=dc, tls=tls.ca.parent, logs=logs)
        )
        process = spawn(
            "ad",
            ["samba", "-F", "--no-process-group", "-s", str(conf)],
            conf,
            logs / "fg.log",
        )
        # samba renames its processes ("samba: root process"): `lab down` knows it by its pid file
        # (see core.Process.alive)
        process.pidfile = str(dc / "run" / "samba.pid")
        _wait_serving("samba", address, 60, logs)
        admin = (dc / "admin.pw").read_text().strip()
        peer = DirectoryPeer(
            name=name,
            platform="active_directory",
            address=address,
            folder=str(dc),
            ca=str(tls.ca),
            base_dn=BASE_DN,
            service_user=f"{SERVICE}@itops.lab",
            password_file=str(folder / "ad-service.pw"),
            admin_dn="Administrator@itops.lab",
            admin_password=admin,
            user_password=_password(),
            users=dict(ROLES),
            pid=process.pid,
        )
        _seed_samba(peer, folder)
        return peer
    except BaseException:  # the caller stops what was started; the folder goes here
        shutil.rmtree(dc, ignore_errors=True)
        raise


def _seed_samba(peer: DirectoryPeer, folder: Path) -> None:
    ldap = python_ldap()

    conn = _retry(peer.connect)
    base = peer.base_dn

    def pw(value: str) -> bytes:
        return f'"{value}"'.encode("utf-16-le")

    def add_user(name: str, password: str, uac: int = 512, **extra: bytes) -> str:
        dn = peer.user_dn(name)
        attrs = [
            ("objectClass", [b"top", b"person", b"organizationalPerson", b"user"]),
            ("sAMAccountName", [name.encode()]),
            ("userPrincipalName", [f"{name}@itops.lab".encode()]),
            ("unicodePwd", [pw(password)]),
            ("userAccountControl", [str(uac).encode()]),
            *((k, [v]) for k, v in extra.items()),
        ]
        conn.add_s(dn, attrs)
        return dn

    service = _password()
    _write_secret(Path(peer.password_file), service)
    svc = add_user(SERVICE, service)
    conn.modify_s(
        f"CN=Account Operators,CN=Builtin,{base}", [(ldap.MOD_ADD, "member", [svc.encode()])]
    )
    conn.modify_s(base, [(ldap.MOD_REPLACE, "lockoutThreshold", [b"3"])])
    users = {
        role: add_user(name, peer.user_password)
        for role, name in ROLES.items()
        if role != "disabled"
    }
    add_user(ROLES["disabled"], peer.user_password, uac=514)
    # expired yesterday (accountExpires is a FILETIME: 100 ns since 1601)
    yesterday = int((time.time() - 86400 + 11644473600) * 10_000_000)
    conn.modify_s(
        users["expired"], [(ldap.MOD_REPLACE, "accountExpires", [str(yesterday).encode()])]
    )
    conn.modify_s(
        f"CN=Domain Admins,CN=Users,{base}",
        [(ldap.MOD_ADD, "member", [users["privileged"].encode()])],
    )
    conn.add_s(
        f"CN={GROUP},CN=Users,{base}",
        [("objectClass", [b"top", b"group"]), ("sAMAccountName", [GROUP.encode()])],
    )
    # a fine-grained password policy (PSO) for the group "Strict Passwords": min length 24
    fgpp = add_user(PSO_USER, peer.user_password + "-long-enough-x")
    conn.add_s(
        f"CN=Strict Passwords,CN=Users,{base}",
        [("objectClass", [b"top", b"group"]), ("sAMAccountName", [b"Strict Passwords"]),
         ("member", [fgpp.encode()])],
    )  # fmt: skip
    conn.add_s(
        f"CN=Strict PSO,CN=Password Settings Container,CN=System,{base}",
        [
            ("objectClass", [b"msDS-PasswordSettings"]),
            ("msDS-PasswordSettingsPrecedence", [b"1"]),
            ("msDS-PasswordReversibleEncryptionEnabled", [b"FALSE"]),
            ("msDS-PasswordHistoryLength", [b"24"]),
            ("msDS-PasswordComplexityEnabled", [b"TRUE"]),
            ("msDS-MinimumPasswordLength", [b"24"]),
            ("msDS-MinimumPasswordAge", [b"0"]),
            ("msDS-MaximumPasswordAge", [b"-37108517437440"]),
            ("msDS-LockoutThreshold", [b"0"]),
            ("msDS-LockoutObservationWindow", [b"-18000000000"]),
            ("msDS-LockoutDuration", [b"-18000000000"]),
            ("msDS-PSOAppliesTo", [f"CN=Strict Passwords,CN=Users,{base}".encode()]),
        ],
    )
    peer.users["pso"] = PSO_USER
    conn.unbind_s()
    lock_out(peer, ROLES["locked"])


def lock_out(peer: DirectoryPeer, name: str, attempts: int = 3) -> None:
    """Lock `name` out the way a user does: wrong passwords until the policy locks it."""
    ldap = python_ldap()

    for _ in range(attempts + 1):
        conn = peer.connect(as_admin=False)
        try:
            conn.simple_bind_s(peer.user_dn(name), "wrong-" + secrets.token_hex(4))
        except ldap.INVALID_CREDENTIALS:
            pass
        finally:
            conn.unbind_s()


def _retry(call: Callable[[], Any], timeout: float = 30) -> Any:
    ldap = python_ldap()

    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ldap.LDAPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --------------------------------------------------------------------------- OpenLDAP slapd

SLAPD_CONFIG = """\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcTLSCACertificateFile: {tls}/ca.pem
olcTLSCertificateFile: {tls}/cert.pem
olcTLSCertificateKeyFile: {tls}/key.pem

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb
olcModuleLoad: ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif
include: file:///etc/ldap/schema/cosine.ldif
include: file:///etc/ldap/schema/nis.ldif
include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {base}
olcRootDN: cn=admin,{base}
olcRootPW: {rootpw}
olcDbDirectory: {d}/data
olcDbIndex: objectClass eq
olcDbIndex: uid eq
olcDbIndex: member eq
olcAccess: {{0}}to attrs=userPassword
  by dn.exact="cn={svc},ou=services,{base}" manage by self write by anonymous auth by * none
olcAccess: {{1}}to * by dn.exact="cn={svc},ou=services,{base}" manage by self read by * none

dn: olcOverlay={{0}}ppolicy,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{0}}ppolicy
olcPPolicyDefault: cn=default,ou=policies,{base}
olcPPolicyHashCleartext: TRUE
olcPPolicyUseLockout: TRUE
"""

SLAPD_DATA = """\
dn: {base}
objectClass: dcObject
objectClass: organization
dc: itops
o: itops lab

dn: ou=people,{base}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{base}
objectClass: organizationalUnit
ou: groups

dn: ou=services,{base}
objectClass: organizationalUnit
ou: services

dn: ou=policies,{base}
objectClass: organizationalUnit
ou: policies

dn: cn=default,ou=policies,{base}
objectClass: organizationalRole
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdMaxFailure: 3
pwdLockout: TRUE
pwdLockoutDuration: 0
pwdMustChange: TRUE
pwdAllowUserChange: TRUE
pwdMinLength: 8
pwdCheckQuality: 2
pwdInHistory: 5

dn: cn={svc},ou=services,{base}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: {svc}
userPassword: {svcpw}

"""

SLAPD_USER = """\
dn: uid={uid},ou=people,{base}
objectClass: inetOrgPerson
objectClass: shadowAccount
uid: {uid}
cn: {uid}
sn: {uid}
mail: {uid}@itops.lab
userPassword: {pw}
{extra}
"""


def ssha(password: str) -> str:
    """{SSHA} of a password, as slappasswd makes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def start_slapd(
    folder: Path, address: str, spawn: Spawn, *, name: str = "ldap-lab"
) -> DirectoryPeer:
    """Configure (slapadd into folder/slapd), start and seed slapd with ppolicy on `address`."""
    slapd = shutil.which("slapd") or "/usr/sbin/slapd"
    slapadd = shutil.which("slapadd") or "/usr/sbin/slapadd"
    if not os.access(slapd, os.X_OK):
        raise LabError("slapd is missing", hint=INSTALL_HINT)
    check_free(address)
    d = folder / "slapd"
    shutil.rmtree(d, ignore_errors=True)
    (d / "slapd.d").mkdir(parents=True)
    (d / "data").mkdir()
    os.chmod(d, 0o700)
    tls = issue(folder / "tls-ldap", "ldap.itops.lab", address, ca_name="itops lab LDAP CA")
    admin, service, users_pw = _password(), _password(), _password()
    config = d / "config.ldif"
    config.write_text(
        SLAPD_CONFIG.format(d=d, tls=tls.ca.parent, base=LDAP_BASE, rootpw=ssha(admin), svc=SERVICE)
    )
    _run([slapadd, "-n0", "-F", str(d / "slapd.d"), "-l", str(config)], "slapadd (config)")
    hashed = ssha(users_pw)
    now = time.strftime("%Y%m%d%H%M%SZ", time.gmtime())
    extras = {
        "plain": "",
        "locked": f"pwdAccountLockedTime: {now}\npwdFailureTime: {now}\n",
        "expired": "shadowExpire: 1\n",
        "disabled": "pwdAccountLockedTime: 000001010000Z\n",
        "privileged": "",
    }
    data = SLAPD_DATA.format(base=LDAP_BASE, svc=SERVICE, svcpw=ssha(service))
    for role, uid in ROLES.items():
        data += SLAPD_USER.format(uid=uid, base=LDAP_BASE, pw=hashed, extra=extras[role]) + "\n"
    data += (
        f"dn: cn=Administrators,ou=groups,{LDAP_BASE}\nobjectClass: groupOfNames\n"
        f"cn: Administrators\nmember: uid={ROLES['privileged']},ou=people,{LDAP_BASE}\n\n"
        f"dn: cn={GROUP},ou=groups,{LDAP_BASE}\nobjectClass: groupOfNames\ncn: {GROUP}\n"
        f"member: cn={SERVICE},ou=services,{LDAP_BASE}\n\n"
    )
    seed = d / "data.ldif"
    seed.write_text(data)
    _run([slapadd, "-n1", "-F", str(d / "slapd.d"), "-l", str(seed)], "slapadd (data)")
    conf_dir = d / "slapd.d"
    urls = f"ldaps://{address}:636/ ldap://{address}:389/"
    process = spawn(
        "ldap", [slapd, "-d", "0", "-h", urls, "-F", str(conf_dir)], conf_dir, d / "slapd.log"
    )
    _wait_serving("slapd", address, 30, d / "slapd.log")
    _write_secret(folder / "ldap-service.pw", service)
    return DirectoryPeer(
        name=name,
        platform="ldap",
        address=address,
        folder=str(d),
        ca=str(tls.ca),
        base_dn=LDAP_BASE,
        service_user=f"cn={SERVICE},ou=services,{LDAP_BASE}",
        password_file=str(folder / "ldap-service.pw"),
        admin_dn=f"cn=admin,{LDAP_BASE}",
        admin_password=admin,
        user_password=users_pw,
        users=dict(ROLES),
        pid=process.pid,
    )


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise LabError(f"{what} failed: {(done.stderr or done.stdout).strip()[-400:]}")


# --------------------------------------------------------------------------- lab services


class _DirectoryService:
    name = ""
    address = ""

    def preflight(self, hosts: int) -> None:
        try:
            import ldap  # noqa: F401
        except ImportError:
            raise LabError(
                "python-ldap is missing", hint="pip install 'itops-toolkit[directory]'"
            ) from None

    def prepare(self, lab: Lab, state: LabState) -> None:
        pass

    def _start(self, lab: Lab, folder: Path, state: LabState) -> DirectoryPeer:
        raise NotImplementedError

    def start(self, lab: Lab, state: LabState) -> None:
        folder = lab.dir / "directories"
        folder.mkdir(mode=0o700, exist_ok=True)
        peer = self._start(lab, folder, state)
        state.data[self.name] = asdict(peer)
        group = state.inventory.setdefault("directories", {"hosts": {}})
        group["hosts"][peer.name] = peer.inventory()

    def cleanup(self, lab: Lab, state: LabState) -> None:
        data = state.data.get(self.name)
        if data:
            shutil.rmtree(data["folder"], ignore_errors=True)
            shutil.rmtree(Path(data["ca"]).parent, ignore_errors=True)
            shutil.rmtree(lab.dir / "directories" / f"{self.name}-logs", ignore_errors=True)
            Path(data["password_file"]).unlink(missing_ok=True)
            folder = lab.dir / "directories"
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()

    @staticmethod
    def peer(state: LabState, name: str) -> DirectoryPeer:
        return DirectoryPeer(**state.data[name])


class SambaAD(_DirectoryService):
    name = "ad"
    address = AD_ADDRESS

    def preflight(self, hosts: int) -> None:
        super().preflight(hosts)
        if not shutil.which("samba-tool"):
            raise LabError("samba-tool is missing", hint=INSTALL_HINT)

    def _start(self, lab: Lab, folder: Path, state: LabState) -> DirectoryPeer:
        return start_samba(folder, self.address, state.spawn)


class OpenLDAP(_DirectoryService):
    name = "ldap"
    address = LDAP_ADDRESS

    def _start(self, lab: Lab, folder: Path, state: LabState) -> DirectoryPeer:
        return start_slapd(folder, self.address, state.spawn)
