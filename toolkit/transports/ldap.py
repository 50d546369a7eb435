"""LDAP transport on python-ldap (OpenLDAP's libldap): directories such as Active Directory and slapd.

A directory takes no shell commands: its transport offers the directory verbs (search, modify,
a bind check) that `toolkit.run.runner.DirectoryStepContext` records like any other command.
python-ldap is imported here only, when a run reaches a host of platform `active_directory` or
`ldap` (`pip install 'itops-toolkit[directory]'`).

Security defaults, per host or group in the inventory (see docs/directory.md):
  - LDAPS on 636 with the server certificate validated (`ldap_ca_bundle` for a private CA, else
    the system's trust store; TLS 1.2 at least). `ldap_tls: starttls` upgrades ldap:// on 389 and
    must succeed, with the same validation.
  - `ldap_tls: none` (plain LDAP: the bind password and every value travel in clear text) only
    where the inventory says so, and then warned about on every run (log and the run's notes).
    A password is never set over such a connection (Active Directory refuses it too).
  - The bind is a simple bind of the service account `user` (a DN, or a UPN on Active
    Directory) with `password`, a credential reference (env:, keyring:, file:, prompt).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import (
    AuthFailed,
    CertificateError,
    CommandTimeout,
    ToolkitError,
    TransportError,
    Unreachable,
    Unsupported,
    ValidationError,
)
from toolkit.inventory import Host
from toolkit.remediation.ldapsafe import check_dn, python_ldap
from toolkit.remediation.quoting import Command
from toolkit.secrets.credentials import CredentialStore, Secret
from toolkit.transports.base import CommandResult, ConnectOptions

log = logging.getLogger("itops.transports.ldap")

TLS_MODES = ("ldaps", "starttls", "none")
# Active Directory's "data NNN" in a failed bind's diagnostic message: why the bind failed.
AD_BIND_CODES = {
    "525": "no-such-user",
    "52e": "invalid-credentials",
    "530": "logon-hours",
    "531": "workstation",
    "532": "password-expired",
    "533": "disabled",
    "701": "account-expired",
    "773": "must-change",
    "775": "locked",
}


class DirectoryError(ToolkitError):
    """The directory answered an operation with an error (its result code and message)."""

    def __init__(self, message: str, *, code: int = -1, info: str = "", hint: str | None = None):
        super().__init__(message, hint=hint)
        self.code = code
        self.info = info


@dataclass(frozen=True)
class LdapSettings:
    """A directory host's connection settings, read and validated from its inventory variables."""

    host: str
    address: str
    port: int
    tls: str = "ldaps"
    ca_bundle: str | None = None
    base_dn: str | None = None

    @property
    def url(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        scheme = "ldaps" if self.tls == "ldaps" else "ldap"
        return f"{scheme}://{address}:{self.port}"

    @property
    def encrypted(self) -> bool:
        return self.tls != "none"

    @classmethod
    def from_host(cls, host: Host) -> LdapSettings:
        def fail(message: str) -> ValidationError:
            return ValidationError(
                f"{host.name}: {message}", hint=f"see {host.source or 'inventory'}"
            )

        tls = str(host.var("ldap_tls", "ldaps")).lower()
        if tls not in TLS_MODES:
            raise fail(f"ldap_tls must be one of {', '.join(TLS_MODES)}, not {tls!r}")
        port = host.port
        if tls != "ldaps" and not ({"port", "ansible_port"} & set(host.vars)):
            port = 389
        bundle = host.var("ldap_ca_bundle", host.var("ca_bundle"))
        if bundle is not None:
            path = Path(str(bundle)).expanduser()
            if not path.is_file():
                raise fail(f"ldap_ca_bundle {str(bundle)!r} is not a file")
            bundle = str(path)
        base = host.var("ldap_base_dn")
        if base is not None:
            check_dn(str(base), "ldap_base_dn")
        return cls(host.name, host.address, port, tls, bundle, str(base) if base else None)


def _info(exc: Any) -> tuple[int, str, str]:
    """(result code, description, server message) of a python-ldap exception."""
    data = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return int(data.get("result", -1)), str(data.get("desc", exc)), str(data.get("info", ""))


def _refused(host: str, what: str, exc: Any) -> DirectoryError:
    """The DirectoryError for a python-ldap error the directory answered `what` with."""
    code, desc, info = _info(exc)
    return DirectoryError(
        f"{host}: {what}: {desc}" + (f" ({info})" if info else ""), code=code, info=info
    )


def bind_reason(kind: str, info: str) -> str:
    """Why a bind was refused, as one of AD_BIND_CODES' words (`invalid-credentials` else)."""
    if kind == "active_directory":
        low = info.lower()
        for code, word in AD_BIND_CODES.items():
            if f"data {code}," in low or f"data {code} " in low or low.endswith(f"data {code}"):
                return word
    return "invalid-credentials"


# The StartTLS extended request (RFC 4511 4.14.1), message id 1: constant bytes.
_STARTTLS = bytes.fromhex("301d02010177188016") + b"1.3.6.1.4.1.1466.20037"


def tls_probe(settings: LdapSettings, timeout: float) -> tuple[str, str]:
    """The directory's TLS handshake done with Python's ssl, every step under `timeout`:
    ("unreachable", why) when nothing answers on TCP, ("stalled", "") when it accepts but does
    not complete the handshake in time, ("certificate", the verification message), ("tls",
    why) for another handshake failure, ("ok", "")."""
    import socket
    import ssl

    try:
        sock = socket.create_connection((settings.address, settings.port), timeout=timeout)
    except OSError as exc:
        return "unreachable", str(exc.strerror or exc)
    context = ssl.create_default_context(cafile=settings.ca_bundle)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if settings.tls == "starttls":
            sock.sendall(_STARTTLS)
            sock.recv(4096)
        with context.wrap_socket(sock, server_hostname=settings.address):
            return "ok", ""
    except TimeoutError:
        return "stalled", ""
    except ssl.SSLCertVerificationError as exc:
        return "certificate", str(exc.verify_message or exc.reason or exc)
    except (ssl.SSLError, OSError) as exc:
        return "tls", f"TLS handshake failed: {exc}"
    finally:
        sock.close()


def tls_diagnosis(settings: LdapSettings, timeout: float) -> str | None:
    """After libldap failed to connect: None if nothing answers on TCP; else why the TLS
    handshake fails (the certificate verification message), or "" if it does not."""
    kind, why = tls_probe(settings, timeout)
    if kind == "unreachable":
        return None
    if kind == "stalled":
        return "TLS handshake failed: timed out"
    return why


class LdapTransport:
    """One bound LDAP connection to one directory host (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        settings: LdapSettings,
        options: ConnectOptions,
        notices: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.settings = settings
        self.options = options
        self.notices = notices
        self.kind = host.platform
        self.base_dn = settings.base_dn or ""
        self.encrypted = settings.encrypted
        self.privileged_groups: tuple[str, ...] = options.directory_privileged_groups
        self._conn: Any = None
        self._lock = threading.Lock()

    # -- connecting --------------------------------------------------------------------------
    def _connection(self) -> Any:
        """A new connection with this host's TLS settings, TLS established (not yet bound)."""
        ldap = python_ldap()

        s = self.settings
        if s.encrypted:
            self._tls_first()
        conn = ldap.initialize(s.url, bytes_mode=False)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, self.options.connect_timeout)
        conn.set_option(ldap.OPT_TIMEOUT, self.options.command_timeout)
        if s.encrypted:
            conn.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_DEMAND)
            conn.set_option(ldap.OPT_X_TLS_PROTOCOL_MIN, ldap.OPT_X_TLS_PROTOCOL_TLS1_2)
            if s.ca_bundle:
                conn.set_option(ldap.OPT_X_TLS_CACERTFILE, s.ca_bundle)
            conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)  # apply the TLS options to this handle
        try:
            if s.tls == "starttls":
                conn.start_tls_s()
            else:
                conn.search_ext_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])  # connects
        except ldap.LDAPError as exc:
            raise self._connect_error(exc) from None
        return conn

    def _tls_first(self) -> None:
        """libldap's timeouts stop at TCP: a DC that accepts the connection and then stalls the
        TLS handshake held the run (spinning a core) until it hung up. So the handshake is
        first made here with Python's ssl under the connect timeout (one extra handshake per
        connection, milliseconds); a stall or a certificate that does not validate ends the
        host here, before libldap is handed the address."""
        kind, why = tls_probe(self.settings, self.options.connect_timeout)
        where = self.settings.url
        if kind == "stalled":
            raise Unreachable(
                self.host.name,
                f"the directory at {where} accepted the connection but did not complete the "
                f"TLS handshake within {self.options.connect_timeout:g} s",
                hint="is an LDAP server listening there, and is ldap_tls right (ldaps on 636, "
                "starttls on 389)? --connect-timeout gives a slow DC longer",
            )
        if kind == "certificate":
            raise self._certificate_error(why)

    def _certificate_error(self, why: str) -> CertificateError:
        return CertificateError(
            self.host.name,
            f"the directory's TLS certificate did not validate at {self.settings.url}: {why}",
            hint="give the CA that signed the DC's certificate as ldap_ca_bundle for this "
            "host, and connect by a name or address the certificate lists",
        )

    def _connect_error(self, exc: Any) -> TransportError:
        """A failed connection or TLS negotiation as the error kind it is. libldap says little
        ("Can't contact LDAP server" for a refused certificate too), so an encrypted
        connection that failed is diagnosed again here: TCP first, then the same TLS
        handshake with Python's ssl, which says why a certificate did not validate."""
        ldap = python_ldap()

        _, desc, info = _info(exc)
        name = self.host.name
        where = self.settings.url
        unreachable = Unreachable(
            name,
            f"no directory answered at {where} ({desc})",
            hint="is the DC up and the address/port right? LDAPS is 636, StartTLS and plain "
            "LDAP 389 (ldap_tls)",
        )
        if not isinstance(exc, ldap.SERVER_DOWN | ldap.TIMEOUT | ldap.CONNECT_ERROR):
            return TransportError(name, f"{where}: {desc}" + (f": {info}" if info else ""))
        if not self.settings.encrypted:
            return unreachable
        why = tls_diagnosis(self.settings, self.options.connect_timeout)
        if why is None:
            return unreachable
        return self._certificate_error(why or desc)

    def connect(self, user: str, password: Secret) -> None:
        ldap = python_ldap()

        conn = self._connection()
        try:
            conn.simple_bind_s(user, password.reveal())
        except ldap.INVALID_CREDENTIALS as exc:
            _, _, info = _info(exc)
            why = bind_reason(self.kind, info)
            raise AuthFailed(
                self.host.name,
                f"the directory refused the service account {user!r} ({why})",
                hint="check user and the password reference for this host, and that the "
                "service account is neither locked nor disabled",
            ) from None
        except ldap.LDAPError as exc:
            raise self._connect_error(exc) from None
        self._conn = conn
        if not self.base_dn:
            self.base_dn = self._naming_context()

    def _naming_context(self) -> str:
        found = self.search(
            "", "base", "(objectClass=*)", ["defaultNamingContext", "namingContexts"]
        )
        attrs = found[0][1] if found else {}
        for key in ("defaultNamingContext", "namingContexts"):
            values = attrs.get(key) or []
            if values:
                return str(values[0].decode())
        raise ToolkitError(
            f"{self.host.name}: the directory does not say its naming context",
            hint="set ldap_base_dn for this host in the inventory",
        )

    # -- the Transport protocol ----------------------------------------------------------------
    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult:
        raise Unsupported(
            f"{self.host.name} is a directory: it runs no commands (refused: {command.display})",
            hint="directory tasks use the directory context: directory(ctx).find_user, modify",
        )

    def interrupt(self) -> None:
        """Directory operations are single requests bounded by the command timeout."""

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.unbind_s()
            except Exception:
                log.debug("unbinding from %s failed", self.host.name, exc_info=True)

    # -- directory verbs -----------------------------------------------------------------------
    def _call(self, what: str, call: Any, timeout: float | None) -> Any:
        ldap = python_ldap()

        if self._conn is None:
            raise TransportError(self.host.name, "the directory connection is closed")
        limit = timeout or self.options.command_timeout
        with self._lock:
            try:
                return call(limit)
            except ldap.TIMEOUT:
                raise CommandTimeout(
                    self.host.name, f"{what}: no answer after {limit:g}s"
                ) from None
            except ldap.SERVER_DOWN as exc:
                _, desc, info = _info(exc)
                raise Unreachable(self.host.name, f"{what}: {info or desc}") from None
            except ldap.LDAPError as exc:
                raise _refused(self.host.name, what, exc) from None

    def search(
        self,
        base: str,
        scope: str,
        filterstr: str,
        attrs: Sequence[str],
        *,
        timeout: float | None = None,
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        ldap = python_ldap()

        scopes = {"base": ldap.SCOPE_BASE, "one": ldap.SCOPE_ONELEVEL, "sub": ldap.SCOPE_SUBTREE}

        def call(limit: float) -> Any:
            return self._conn.search_ext_s(
                base, scopes[scope], filterstr, list(attrs), timeout=limit
            )

        found = self._call(f"search {filterstr}", call, timeout)
        return [(dn, dict(attrs)) for dn, attrs in found if dn is not None]  # no referrals

    def modify(
        self,
        dn: str,
        changes: Sequence[tuple[str, str, Sequence[bytes] | Secret | None]],
        *,
        timeout: float | None = None,
    ) -> None:
        """`changes`: (add|replace|delete, attribute, values). A Secret value is sent as
        Active Directory's unicodePwd encoding (a quoted UTF-16LE string) when the attribute
        is unicodePwd, as UTF-8 otherwise."""
        ldap = python_ldap()

        ops = {"add": ldap.MOD_ADD, "replace": ldap.MOD_REPLACE, "delete": ldap.MOD_DELETE}
        modlist: list[tuple[int, str, list[bytes] | None]] = []
        for op, attr, values in changes:
            if isinstance(values, Secret):
                if attr.lower() == "unicodepwd":
                    data = [f'"{values.reveal()}"'.encode("utf-16-le")]
                else:
                    data = [values.reveal().encode()]
                modlist.append((ops[op], attr, data))
            else:
                modlist.append((ops[op], attr, list(values) if values is not None else None))

        def call(limit: float) -> Any:
            msgid = self._conn.modify_ext(dn, modlist)
            return self._conn.result3(msgid, all=1, timeout=limit)

        self._call(f"modify {dn}", call, timeout)

    def set_password(self, dn: str, password: Secret, *, timeout: float | None = None) -> None:
        """Set `dn`'s password as an administrator: Active Directory's unicodePwd (replace), or
        the LDAP Password Modify extended operation (RFC 3062: the server hashes it). Refused
        on a connection without TLS: a password never travels in clear text."""
        if not self.encrypted:
            raise DirectoryError(
                f"{self.host.name}: refused to send a password over plain LDAP (ldap_tls: none)",
                hint="use LDAPS or StartTLS for this directory (Active Directory refuses it too)",
            )
        if self.kind == "active_directory":
            self.modify(dn, [("replace", "unicodePwd", password)], timeout=timeout)
            return

        def call(limit: float) -> Any:
            msgid = self._conn.passwd(dn, None, password.reveal())
            return self._conn.result3(msgid, all=1, timeout=limit)

        self._call(f"password modify {dn}", call, timeout)

    def bind_check(self, dn: str, password: Secret) -> str:
        """Bind as `dn` with `password` on a new connection: "ok", or why the directory refused
        (AD_BIND_CODES' words: "must-change" still proves the password right on AD)."""
        ldap = python_ldap()

        started = time.monotonic()
        conn = self._connection()
        try:
            conn.simple_bind_s(dn, password.reveal())
            return "ok"
        except ldap.INVALID_CREDENTIALS as exc:
            return bind_reason(self.kind, _info(exc)[2])
        except ldap.LDAPError as exc:
            raise _refused(self.host.name, "bind check", exc) from None
        finally:
            log.debug("bind check on %s took %.3fs", self.host.name, time.monotonic() - started)
            with contextlib.suppress(Exception):
                conn.unbind_s()


class LdapFactory:
    """Opens LdapTransports for a run; resolves each host's bind password reference."""

    def __init__(self, options: ConnectOptions, credentials: CredentialStore) -> None:
        self.options = options
        self.credentials = credentials

    def open(self, host: Host) -> LdapTransport:
        settings = LdapSettings.from_host(host)
        notices: list[str] = []
        if not settings.encrypted:
            text = (
                f"WARNING: plain LDAP to {host.name} (ldap_tls: none): the service account's "
                "password and every value travel unencrypted"
            )
            log.warning(text)
            notices.append(text)
        if not host.user:
            raise ValidationError(
                f"{host.name}: a directory needs a service account (user)",
                hint="set user: the bind DN (or user@domain on Active Directory) for this host",
            )
        reference = host.var("password")
        if not reference:
            raise ValidationError(
                f"{host.name}: a directory needs the service account's password reference",
                hint="set password: env:VAR, keyring:service/user or file:/path for this host",
            )
        password = self.credentials.resolve(str(reference), f"{host.name} password")
        transport = LdapTransport(host, settings, self.options, tuple(notices))
        transport.connect(host.user, password)
        return transport

    def close(self) -> None:
        """Nothing shared: each transport owns its connection."""
