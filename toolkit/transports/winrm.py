"""WinRM transport on pywinrm: PowerShell over WS-Management, HTTPS and NTLM encryption by default.

Every command is a PowerShell script built by `toolkit.remediation.quoting` and sent as
`powershell.exe -NoProfile -NonInteractive -EncodedCommand <base64 UTF-16LE>`, so no cmd.exe quoting
layer ever sees a value. One remote shell (WinRS) per host carries a whole check → apply → verify.

Security defaults, per host or group in the inventory (see docs/windows.md):
  - HTTPS on 5986 with the server certificate validated against `winrm_ca_bundle` (or the bundled
    public CAs); the REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE and proxy environment variables are ignored.
  - NTLM with message encryption; `winrm_auth: kerberos|credssp` selectable.
  - Plain HTTP, Basic auth or switching certificate validation off is refused unless the host says
    `winrm_allow_insecure: true`, and then warned about on every run (log and the run's notes).

Timeouts: the connect timeout bounds every request until the shell is open; each command has a
deadline (the run's command timeout), enforced between WS-Management Receive calls whose server-side
OperationTimeout is shortened to fit, so a hung command is signalled to stop and raises CommandTimeout.

Output: the shell runs with code page 65001 and PowerShell writes UTF-8; bytes that are not valid
UTF-8 (a native tool writing the OEM code page) are decoded with `winrm_codepage_fallback` (cp437 by
default). CRLF becomes LF. PowerShell's CLIXML error stream becomes readable text.
"""

from __future__ import annotations

import base64
import codecs
import logging
import math
import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# pywinrm is imported here, whole, and not on first use inside a function: its modules import each
# other in a cycle, so two per-host threads importing it first at once deadlock. This module is
# loaded once, under the Connector's lock, before any host thread uses it.
import requests.exceptions as rex
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMOperationTimeoutError,
    WinRMTransportError,
    WSManFaultError,
)
from winrm.protocol import Protocol

from toolkit.errors import (
    AuthFailed,
    CertificateError,
    CommandInterrupted,
    CommandTimeout,
    TransportError,
    Unreachable,
    ValidationError,
)
from toolkit.inventory import Host
from toolkit.remediation.quoting import Command, ps_encoded, ps_join, ps_script
from toolkit.secrets.credentials import CredentialStore, Secret
from toolkit.transports.base import CommandResult, ConnectOptions

log = logging.getLogger("itops.transports.winrm")

AUTH_METHODS = ("ntlm", "kerberos", "credssp", "basic")
ENCRYPTING_AUTH = frozenset({"ntlm", "kerberos", "credssp"})
POWERSHELL = "powershell.exe"
PS_ARGS = ("-NoProfile", "-NonInteractive", "-EncodedCommand")
# cmd.exe (which WinRS starts the command through) accepts at most 8191 characters.
MAX_COMMAND_LINE = 8000
STDIN_CHUNK = 32 * 1024


class _Stop(Exception):
    """Ctrl-C reached a command in flight."""


RECEIVE_GRACE = 2  # seconds a Receive may take beyond its server-side OperationTimeout

# Sent before every script: no progress records in the error stream, UTF-8 in and out.
PRELUDE = ps_script(
    "$ProgressPreference = 'SilentlyContinue'\n"
    "try {{ $itopsUtf8 = New-Object Text.UTF8Encoding $false; "
    "[Console]::OutputEncoding = $itopsUtf8; $OutputEncoding = $itopsUtf8 }} catch {{ }}"
)
# For scripts too long for a command line: the script arrives on stdin as base64 of UTF-8.
STDIN_BOOTSTRAP = ps_script(
    "$itopsScript = [Text.Encoding]::UTF8.GetString("
    "[Convert]::FromBase64String([Console]::In.ReadToEnd()))\n"
    "& ([ScriptBlock]::Create($itopsScript))\n"
    "if ($LASTEXITCODE) {{ exit $LASTEXITCODE }} elseif (-not $?) {{ exit 1 }}"
)


class InsecureRefused(TransportError):
    """The host's WinRM settings would send credentials or data unprotected; not allowed for it."""

    kind = "insecure-refused"


def _flag(value: Any, what: str, host: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValidationError(f"{host}: {what} must be true or false, not {value!r}")


@dataclass(frozen=True)
class WinRMSettings:
    """A host's WinRM connection settings, read and validated from its inventory variables."""

    host: str
    scheme: str = "https"
    address: str = ""
    port: int = 5986
    path: str = "/wsman"
    auth: str = "ntlm"
    message_encryption: str = "always"
    cert_validation: bool = True
    ca_bundle: str | None = None
    allow_insecure: bool = False
    operation_timeout: int = 20
    codepage: int = 65001
    codepage_fallback: str = "cp437"
    kerberos_delegation: bool = False
    kerberos_hostname: str | None = None
    proxy: str | None = None

    @property
    def endpoint(self) -> str:
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{address}:{self.port}{self.path}"

    @property
    def encrypted_messages(self) -> bool:
        return self.auth in ENCRYPTING_AUTH and (
            self.message_encryption == "always"
            or (self.message_encryption == "auto" and self.scheme == "http")
        )

    def insecure_reasons(self) -> list[str]:
        """What about these settings is weaker than the defaults (each needs winrm_allow_insecure)."""
        reasons = []
        if self.scheme == "http":
            reasons.append(
                "plain HTTP: the server is not authenticated by a certificate"
                + ("" if self.encrypted_messages else " and messages travel in clear text")
            )
        if self.auth == "basic":
            reasons.append("Basic auth: the password is sent with every request")
        if self.scheme == "https" and not self.cert_validation:
            reasons.append("certificate validation is off: anyone on the path can impersonate it")
        return reasons

    @classmethod
    def from_host(cls, host: Host) -> WinRMSettings:
        def var(name: str, default: Any = None) -> Any:
            value = host.var(f"winrm_{name}")
            if value is None:
                value = host.var(f"ansible_winrm_{name}")
            return default if value is None else value

        def fail(message: str) -> ValidationError:
            return ValidationError(
                f"{host.name}: {message}", hint=f"see {host.source or 'inventory'}"
            )

        scheme = str(var("scheme", "https")).lower()
        if scheme not in ("https", "http"):
            raise fail(f"winrm_scheme must be https or http, not {scheme!r}")
        port = host.port
        if scheme == "http" and port == 5986 and not ({"port", "ansible_port"} & set(host.vars)):
            port = 5985
        auth = str(var("auth", var("transport", "ntlm"))).lower()
        if auth == "plaintext":
            auth = "basic"
        if auth not in AUTH_METHODS:
            raise fail(f"winrm_auth must be one of {', '.join(AUTH_METHODS)}, not {auth!r}")
        encryption = str(var("message_encryption", "always")).lower()
        if encryption not in ("always", "auto", "never"):
            raise fail(
                f"winrm_message_encryption must be always, auto or never, not {encryption!r}"
            )
        if auth == "basic":
            encryption = "never"  # Basic has no session key to encrypt with
        validation = var("cert_validation", var("server_cert_validation", True))
        if isinstance(validation, str) and validation.lower() in ("validate", "ignore"):
            validation = validation.lower() == "validate"
        ca_bundle = var("ca_bundle", var("ca_trust_path"))
        if ca_bundle is not None:
            bundle = Path(str(ca_bundle)).expanduser()
            if not bundle.exists():
                raise fail(f"winrm_ca_bundle {str(ca_bundle)!r} does not exist")
            ca_bundle = str(bundle)
        path = str(var("path", "/wsman"))
        if not re.fullmatch(r"/[A-Za-z0-9/_.-]*", path):
            raise fail(f"invalid winrm_path {path!r}")
        try:
            op_timeout = int(var("operation_timeout", 20))
            codepage = int(var("codepage", 65001))
        except (TypeError, ValueError):
            raise fail("winrm_operation_timeout and winrm_codepage must be integers") from None
        if not 1 <= op_timeout <= 3600:
            raise fail("winrm_operation_timeout must be between 1 and 3600 seconds")
        fallback = str(var("codepage_fallback", "cp437"))
        try:
            codecs.lookup(fallback)
        except LookupError:
            raise fail(f"unknown winrm_codepage_fallback {fallback!r}") from None
        proxy = var("proxy")
        return cls(
            host=host.name,
            scheme=scheme,
            address=host.address,
            port=port,
            path=path,
            auth=auth,
            message_encryption=encryption,
            cert_validation=_flag(validation, "winrm_cert_validation", host.name),
            ca_bundle=ca_bundle,
            allow_insecure=_flag(var("allow_insecure", False), "winrm_allow_insecure", host.name),
            operation_timeout=op_timeout,
            codepage=codepage,
            codepage_fallback=fallback,
            kerberos_delegation=_flag(
                var("kerberos_delegation", False), "winrm_kerberos_delegation", host.name
            ),
            kerberos_hostname=var("kerberos_hostname_override"),
            proxy=str(proxy) if proxy else None,
        )


# --------------------------------------------------------------------------- output decoding


def decode_output(data: bytes, fallback: str = "cp437") -> str:
    """Bytes from a Windows command → text: UTF-8 if valid, else the console code page; LF ends."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode(fallback, "replace")
    return text.replace("\r\n", "\n")


_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_CLIXML_NS = "{http://schemas.microsoft.com/powershell/2004/04}"
_STREAM_PREFIX = {"error": "", "warning": "WARNING: ", "verbose": "VERBOSE: ", "debug": "DEBUG: "}


def _clixml_unescape(text: str) -> str:
    raw = _CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # Characters outside the BMP arrive as two escaped UTF-16 surrogates.
    return raw.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def clixml_to_text(text: str) -> str:
    """PowerShell's serialized error stream (`#< CLIXML` + <Objs>) → the lines a console shows.

    Error, warning, verbose and debug strings are kept (prefixed like PowerShell prints them),
    progress records are dropped; text outside CLIXML blocks is kept as is. Unparseable input is
    returned unchanged rather than lost.
    """
    if "#< CLIXML" not in text:
        return text
    out: list[str] = []
    for n, part in enumerate(text.split("#< CLIXML")):
        if n == 0:
            if part.strip():
                out.append(part.rstrip("\n"))
            continue
        start, end = part.find("<Objs"), part.rfind("</Objs>")
        if start < 0 or end < 0:
            out.append(part.strip())
            continue
        try:
            root = ET.fromstring(part[start : end + len("</Objs>")])
        except ET.ParseError:
            out.append(part.strip())
            continue
        lines: list[str] = []
        for node in root.iter(f"{_CLIXML_NS}S"):
            stream = (node.get("S") or "").lower()
            if stream in _STREAM_PREFIX:
                lines.append(_STREAM_PREFIX[stream] + _clixml_unescape(node.text or ""))
        chunk = "".join(lines).replace("\r\n", "\n")
        if chunk.strip():
            out.append(chunk.rstrip("\n"))
        rest = part[end + len("</Objs>") :]
        if rest.strip():
            out.append(rest.strip("\n"))
    return "\n".join(out) + ("\n" if out else "")


def command_line(command: Command) -> tuple[list[str], bytes | None]:
    """The powershell.exe arguments for a script, and the stdin that carries it if too long."""
    if command.shell != "powershell":
        raise TypeError(f"the WinRM transport runs PowerShell commands, not {command.shell}")
    if command.text != command.display:  # something masked: a secret, which ps_script refuses
        raise ValidationError(
            "a script carrying a secret cannot be sent: powershell.exe's command line (and a"
            " script it runs) is what process auditing and script-block logging record",
            hint="read the secret from stdin: StdinSecret(secret) in the script, .stdin() as stdin",
        )
    script = ps_join(PRELUDE, command)
    encoded = ps_encoded(script)
    if len(POWERSHELL) + sum(len(a) + 1 for a in PS_ARGS) + len(encoded) < MAX_COMMAND_LINE:
        return [*PS_ARGS, encoded], None
    payload = base64.b64encode(script.text.encode("utf-8"))
    return [*PS_ARGS, ps_encoded(ps_join(PRELUDE, STDIN_BOOTSTRAP))], payload


# --------------------------------------------------------------------------- errors


def _ssl_reason(exc: BaseException) -> str | None:
    """The certificate problem behind an SSL error, or None if it is not about the certificate."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        text = str(item)
        for marker in (
            "CERTIFICATE_VERIFY_FAILED",
            "certificate verify failed",
            "Hostname mismatch",
        ):
            if marker in text:
                detail = getattr(item, "verify_message", None) or text
                return str(detail)
        if isinstance(item, BaseException):
            todo.extend([item.__cause__, item.__context__, *item.args])
            todo.append(getattr(item, "reason", None))
    return None


def translate(host: str, exc: BaseException, phase: str) -> TransportError:
    """A pywinrm/requests/spnego exception → one of our typed TransportErrors."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, InvalidCredentialsError | PermissionError):
        return AuthFailed(
            host,
            "the server rejected the credentials (HTTP 401)",
            hint="check user/password (a credential reference) and winrm_auth for this host",
        )
    if isinstance(exc, rex.SSLError):
        reason = _ssl_reason(exc)
        if reason is not None:
            return CertificateError(
                host,
                f"TLS certificate not trusted: {reason}",
                hint="set winrm_ca_bundle to the CA that issued the host's WinRM certificate",
            )
        return Unreachable(host, f"TLS handshake failed: {exc}", hint="is this port HTTPS?")
    if isinstance(exc, rex.ConnectTimeout):
        return Unreachable(host, "connection timed out")
    if isinstance(exc, rex.ReadTimeout):
        if phase == "connect":
            return Unreachable(host, "the WinRM service did not answer in time")
        return CommandTimeout(host, "the WinRM service stopped answering")
    if isinstance(exc, rex.ConnectionError):
        text = str(exc)
        if "Connection refused" in text or "Errno 111" in text:
            return Unreachable(host, "connection refused")
        if phase == "connect":
            return Unreachable(host, f"cannot connect: {_short(text)}")
        return Unreachable(host, f"session lost: {_short(text)}")
    if isinstance(exc, WSManFaultError):
        return TransportError(host, f"WS-Management fault: {exc.reason.strip()}")
    if isinstance(exc, WinRMTransportError):
        if exc.code == 401:
            return AuthFailed(host, "the server rejected the credentials (HTTP 401)")
        return TransportError(host, f"WinRM HTTP {exc.code}: {_short(exc.response_text)}")
    if isinstance(exc, WinRMError):
        text = str(exc)
        for auth in ("kerberos", "credssp"):
            if auth in text and "not installed" in text:
                return TransportError(
                    host,
                    f"WinRM {auth} support is not installed",
                    hint=f"pip install 'itops-toolkit[winrm-{auth}]'",
                )
        return TransportError(host, f"WinRM error: {text}")
    name = type(exc).__module__.split(".")[0]
    if name == "spnego":
        return AuthFailed(host, f"authentication failed: {_short(str(exc))}")
    return TransportError(host, f"{type(exc).__name__}: {_short(str(exc))}")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- factory + transport


class WinRMFactory:
    """Opens WinRMTransports for a run; resolves each host's password through the CredentialStore."""

    def __init__(self, options: ConnectOptions, credentials: CredentialStore) -> None:
        self.options = options
        self.credentials = credentials

    def settings(self, host: Host) -> WinRMSettings:
        return WinRMSettings.from_host(host)

    def open(self, host: Host) -> WinRMTransport:
        settings = self.settings(host)
        notices: list[str] = []
        reasons = settings.insecure_reasons()
        if reasons and not settings.allow_insecure:
            raise InsecureRefused(
                host.name,
                "refused an insecure WinRM connection: " + "; ".join(reasons),
                hint="use HTTPS (5986) with NTLM/Kerberos, or set winrm_allow_insecure: true "
                "for this host in the inventory if you accept the risk",
            )
        for reason in reasons:
            text = f"WARNING: insecure WinRM to {host.name} ({reason}), allowed by winrm_allow_insecure"
            log.warning(text)
            notices.append(text)
        username, password = self._credentials(host, settings)
        protocol = _protocol(settings, username, password, self.options)
        transport = WinRMTransport(host, settings, protocol, self.options, tuple(notices))
        transport.connect()
        return transport

    def _credentials(self, host: Host, settings: WinRMSettings) -> tuple[str | None, str | None]:
        reference = host.var("password") or host.var("ansible_password")
        password: Secret | None = None
        if reference:
            password = self.credentials.resolve(str(reference), f"{host.name} password")
        if settings.auth != "kerberos":
            if not host.user:
                raise ValidationError(
                    f"{host.name}: WinRM {settings.auth} needs a user",
                    hint="set user (DOMAIN\\name or name@domain) for this host",
                )
            if password is None:
                raise ValidationError(
                    f"{host.name}: WinRM {settings.auth} needs a password reference",
                    hint="set password: env:VAR or keyring:service/user for this host",
                )
        return host.user, password.reveal() if password is not None else None

    def close(self) -> None:
        """Nothing shared to release: each transport owns its HTTP session."""


def _protocol(
    settings: WinRMSettings, username: str | None, password: str | None, options: ConnectOptions
) -> Any:
    kwargs: dict[str, Any] = {}
    if settings.auth == "kerberos":
        kwargs["kerberos_delegation"] = settings.kerberos_delegation
        if settings.kerberos_hostname:
            kwargs["kerberos_hostname_override"] = settings.kerberos_hostname
    try:
        protocol = Protocol(
            settings.endpoint,
            transport=settings.auth,  # type: ignore[arg-type]
            username=username,
            password=password,
            server_cert_validation="validate" if settings.cert_validation else "ignore",
            # Never "legacy_requests": the environment must not decide which CAs are trusted.
            ca_trust_path=settings.ca_bundle,  # type: ignore[arg-type]
            read_timeout_sec=settings.operation_timeout + RECEIVE_GRACE,
            operation_timeout_sec=settings.operation_timeout,
            message_encryption=settings.message_encryption,  # type: ignore[arg-type]
            proxy=settings.proxy,
            **kwargs,
        )
    except Exception as exc:
        raise translate(settings.host, exc, "connect") from None
    return protocol


class WinRMTransport:
    """One WinRS shell on one Windows host (see the module docstring)."""

    def __init__(
        self,
        host: Host,
        settings: WinRMSettings,
        protocol: Any,
        options: ConnectOptions,
        notices: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.settings = settings
        self.notices = notices  # warnings the runner copies into this host's notes
        self._protocol = protocol
        self._options = options
        self._shell_id: str | None = None
        self._interrupted = threading.Event()

    # The HTTP timeout pywinrm passes to requests is one attribute; requests accepts a
    # (connect, read) pair there, which is how the connect timeout stays separate.
    def _http_timeout(self, read: float) -> None:
        transport: Any = self._protocol.transport
        transport.read_timeout_sec = (self._options.connect_timeout, read)

    def connect(self) -> None:
        """Authenticate and open the shell, every request bounded by the connect timeout."""
        self._http_timeout(self._options.connect_timeout)
        try:
            self._shell_id = self._protocol.open_shell(
                codepage=self.settings.codepage, noprofile=True
            )
        except Exception as exc:
            self._drop_session()
            raise translate(self.host.name, exc, "connect") from None

    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult:
        args, payload = command_line(command)
        if payload is not None and stdin is not None:
            raise ValidationError("a script this long cannot also take stdin")
        data = stdin.reveal().encode() if isinstance(stdin, Secret) else stdin
        if payload is not None:
            data = payload
        limit = timeout if timeout is not None else self._options.command_timeout
        started = time.monotonic()
        deadline = started + limit
        if self._shell_id is None:
            self.connect()
        shell_id = self._shell_id
        command_id: str | None = None
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            self._http_timeout(self._options.connect_timeout + RECEIVE_GRACE)
            command_id = self._protocol.run_command(shell_id, POWERSHELL, args)
            if data is not None:
                for i in range(0, len(data), STDIN_CHUNK):
                    self._protocol.send_command_input(
                        shell_id, command_id, data[i : i + STDIN_CHUNK]
                    )
                self._protocol.send_command_input(shell_id, command_id, b"", end=True)
            while True:
                if self._interrupted.is_set():
                    raise _Stop
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                wait = max(1, min(self.settings.operation_timeout, math.ceil(remaining)))
                self._protocol.operation_timeout_sec = wait
                self._http_timeout(wait + RECEIVE_GRACE)
                try:
                    o, e, rc, done = self._protocol.get_command_output_raw(shell_id, command_id)
                except WinRMOperationTimeoutError:
                    continue  # no output yet: the expected answer while a command runs
                out.append(o)
                err.append(e)
                if done:
                    break
        except TimeoutError:
            how = self._abandon(command_id)
            raise CommandTimeout(
                self.host.name, f"command timed out after {limit:g}s; {how}"
            ) from None
        except _Stop:
            how = self._abandon(command_id)
            raise CommandInterrupted(self.host.name, f"interrupted; {how}") from None
        except Exception as exc:
            error = translate(self.host.name, exc, "command")
            if isinstance(error, CommandTimeout):
                self._abandon(command_id)
            else:
                self._drop_session()
            raise error from None
        finally:
            self._protocol.operation_timeout_sec = self.settings.operation_timeout
        self._cleanup(command_id)
        fallback = self.settings.codepage_fallback
        return CommandResult(
            command=command.display,
            exit_code=rc,
            stdout=decode_output(b"".join(out), fallback),
            stderr=clixml_to_text(decode_output(b"".join(err), fallback)),
            duration=time.monotonic() - started,
        )

    def _cleanup(self, command_id: str) -> None:
        self._http_timeout(self._options.connect_timeout + RECEIVE_GRACE)
        try:
            self._protocol.cleanup_command(self._shell_id, command_id)
        except Exception as exc:  # the command has finished; a failed Signal only costs the shell
            log.debug("%s: cleanup of command %s failed: %s", self.host.name, command_id, exc)
            self._drop_session()

    def _abandon(self, command_id: str | None) -> str:
        """After a timeout or Ctrl-C: signal the command to terminate, then delete the shell
        (WinRM ends every process the shell started); say what the host confirmed."""
        self._http_timeout(self._options.connect_timeout)
        signalled = False
        if command_id is not None:
            try:
                self._protocol.cleanup_command(self._shell_id, command_id)
                signalled = True
            except Exception as exc:
                log.debug("%s: could not signal timed-out command: %s", self.host.name, exc)
        closed = self.close()
        if signalled or closed:
            what = " and ".join(
                w
                for w, ok in (("signalled to terminate", signalled), ("its shell deleted", closed))
                if ok
            )
            return f"{what} on the host (WinRM ends the shell's processes); it may have changed it part-way"
        return "the host did not confirm it stopped: it may still be running there"

    def interrupt(self) -> None:
        """Ctrl-C: the command in flight is abandoned at its next Receive (signalled, shell
        deleted)."""
        self._interrupted.set()

    def _drop_session(self) -> None:
        self._shell_id = None
        try:
            self._protocol.transport.close_session()
        except Exception:  # pragma: no cover - closing a requests session does not fail
            log.debug("%s: closing the HTTP session failed", self.host.name, exc_info=True)

    def close(self) -> bool:
        """Delete the shell; True if the host confirmed it."""
        if self._shell_id is None:
            self._drop_session()
            return False
        shell_id, self._shell_id = self._shell_id, None
        self._http_timeout(self._options.connect_timeout)
        try:
            self._protocol.close_shell(shell_id)
            return True
        except Exception as exc:
            log.debug("%s: closing the shell failed: %s", self.host.name, exc)
            return False
        finally:
            self._drop_session()
