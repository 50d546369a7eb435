"""A loopback WS-Management server that replays exchanges recorded from a real Windows host.

No Windows machine can run here. The pypsrp source distribution on PyPI ships WinRM exchanges
recorded from a real Windows Server (tests/tests_pypsrp/responses/*.yml); `recordings()` fetches it
at test time with pip into tests/artifacts/ (never committed) and checks its SHA-256.

`ReplayServer` speaks real HTTP(S) on 127.0.0.1 to the real pywinrm client:
  - authentication is real: NTLM through pyspnego's acceptor (users from an NTLM_USER_FILE), with
    real NTLM message encryption (multipart/encrypted) when the client asks for it; or Basic;
  - TLS is real when given an SSLContext (the tests make a throwaway CA and server certificate);
  - each request is answered with the next recorded response for the same WS-Management action,
    its RelatesTo rewritten to the request's MessageID (pywinrm checks it); recorded transport
    errors (HTTP 500 faults) and optional delays are reproduced;
  - in "templated" mode the recorded envelopes of test_winrs_standard are reused for every command
    and only the output streams and exit code are filled in by a test-supplied function, which gets
    the PowerShell script decoded from the -EncodedCommand. A `Send` (input on a command's stdin,
    MS-WSMV 3.1.4.12) is answered with the SendResponse recorded in test_winrs_send, a real WinRS
    exchange that wrote to a cmd.exe command's stdin; the server keeps what each command received
    on stdin and refuses (an error in `errors`, a fault to the client) a Send that names another
    command than the one in flight, is not the stdin stream, or comes after that command's stdin
    was closed (End="true") or its output was read to the end. That mode tests our command building
    and parsing over the real protocol path; it is not evidence of how Windows answers.

Every request is logged (action, raw envelope, decoded script, stdin) so tests can assert what was
sent; anything the server could not match is collected in `errors`, which the fixtures require to
be empty.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import re
import ssl
import struct
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

PYPSRP = "pypsrp==0.9.1"
PYPSRP_SHA256 = "3ad41285739d5f8107dd8277ae00e86ee44153aae5e82fb578ac8048307e0d12"
CACHE = Path(__file__).resolve().parents[1] / "artifacts" / "pypsrp-0.9.1"
BOUNDARY = b"--Encrypted Boundary"
ENC_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"

Reply = tuple[bytes, bytes, int]  # stdout, stderr, exit code


USER, PASSWORD = "itops", "Canary-Winrm-Pass-7f3a"


@dataclass(frozen=True)
class PKI:
    ca: Path  # the CA that issued the server certificate
    other_ca: Path  # a CA that did not
    cert: Path
    key: Path
    expired_cert: Path
    wrong_name_cert: Path

    def context(self, cert: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert or self.cert, self.key)
        return ctx


def make_pki(folder: Path) -> PKI:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn: str) -> tuple[Any, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("itops test CA")
    _, other = ca("some other CA")
    server_key = ec.generate_private_key(ec.SECP256R1())

    def leaf(names: list[x509.GeneralName], days: tuple[int, int]) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(name("winrm test host"))
            .issuer_name(ca_cert.subject)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days[0]))
            .not_valid_after(now + dt.timedelta(days=days[1]))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )

    loopback = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    pem = serialization.Encoding.PEM
    files = {
        "ca": ca_cert.public_bytes(pem),
        "other_ca": other.public_bytes(pem),
        "cert": leaf(loopback, (-1, 30)).public_bytes(pem),
        "expired_cert": leaf(loopback, (-30, -1)).public_bytes(pem),
        "wrong_name_cert": leaf([x509.DNSName("other.example")], (-1, 30)).public_bytes(pem),
        "key": server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    }
    paths = {}
    for key, data in files.items():
        path = folder / f"{key}.pem"
        path.write_bytes(data)
        paths[key] = path
    return PKI(**paths)


ServerFactory = Callable[..., "ReplayServer"]


def recordings() -> Path:
    """The folder of pypsrp's recorded responses, downloaded once per checkout with pip."""
    target = CACHE / "responses"
    if (target / "test_winrs_standard.yml").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            PYPSRP,
            "-d",
            str(CACHE),
        ],
        check=True,
        timeout=300,
    )
    sdist = CACHE / "pypsrp-0.9.1.tar.gz"
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    if digest != PYPSRP_SHA256:
        raise RuntimeError(f"{sdist} has SHA-256 {digest}, expected {PYPSRP_SHA256}")
    prefix = "pypsrp-0.9.1/tests/tests_pypsrp/responses/"
    target.mkdir(exist_ok=True)
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.startswith(prefix) and member.name.endswith(".yml"):
                data = tar.extractfile(member)
                assert data is not None
                (target / member.name[len(prefix) :]).write_bytes(data.read())
    return target


@dataclass
class Exchange:
    action: str
    response: str
    status: int = 200
    delay: float = 0.0


def _action(xml: str) -> str:
    m = re.search(r"Action[^>]*>([^<]+)</", xml)
    return m.group(1).rsplit("/", 1)[-1] if m else "?"


def load(name: str) -> list[Exchange]:
    """One recording as a list of exchanges (request action → recorded response)."""
    data = yaml.safe_load((recordings() / f"{name}.yml").read_text())
    out = []
    for message in data["messages"]:
        error = message.get("transport_error") or {}
        out.append(
            Exchange(
                _action(message["request"]),
                message["response"],
                int(error.get("code", 200)),
                float(message.get("timeout", 0) or 0),
            )
        )
    return out


@dataclass
class Logged:
    action: str
    message_id: str
    command: str | None = None
    arguments: str | None = None
    script: str | None = None
    stdin: bytes = b""  # a Send: its data; a Command: all its Sends' data, in order
    encrypted: bool = False
    delivered: str | None = None  # a long script that arrived on stdin (the bootstrap's payload)
    body: str = ""  # the envelope as received (after NTLM unwrapping)
    command_id: str | None = None  # a Send: the command it wrote to
    end: bool = False  # a Send: End="true" (closes stdin); a Command: its stdin was closed
    finished: bool = False  # a Command: its output was read to the end (templated mode)


@dataclass
class ReplayServer:
    """See the module docstring. Start with `start()`, stop with `stop()`."""

    exchanges: list[Exchange] = field(default_factory=list)
    auth: str = "ntlm"  # ntlm | basic
    users: dict[str, str] = field(default_factory=dict)  # basic auth users
    tls: ssl.SSLContext | None = None
    reply: Callable[[str], Reply] | None = None  # templated mode when set
    delay_receive: float = 0.0  # templated mode: seconds before each Receive answer
    log: list[Logged] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    auth_failures: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._template: dict[str, Exchange] = {}
        if self.reply is not None:  # envelopes as the recorded server sent them
            self._template = {e.action: e for e in load("test_winrs_send") if e.action == "Send"}
            self._template.update({e.action: e for e in load("test_winrs_standard")})
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._current: Logged | None = None  # templated mode: the command in flight

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> ReplayServer:
        server = self

        class Handler(_Handler):
            replay = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        if self.tls is not None:
            httpd.socket = self.tls.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def scripts(self) -> list[str]:
        return [e.delivered or e.script or "" for e in self.log if e.script is not None]

    # -- answering ---------------------------------------------------------------------------
    def answer(self, body: str, encrypted: bool) -> tuple[int, str, float]:
        action = _action(body)
        message_id = _first(r"MessageID>([^<]+)</", body) or ""
        entry = Logged(action, message_id, encrypted=encrypted, body=body)
        if action == "Command":
            entry.command = _first(r"<rsp:Command>([^<]*)</rsp:Command>", body)
            entry.arguments = _first(r"<rsp:Arguments>([^<]*)</rsp:Arguments>", body)
            entry.script = _decode_script(entry.arguments or "")
        if action == "Send":
            stream = _first(r"(<rsp:Stream\b[^>]*>)", body) or ""
            entry.stdin = base64.b64decode(
                _first(r"<rsp:Stream\b[^>]*>([^<]*)</rsp:Stream>", body) or ""
            )
            entry.command_id = _first(r'CommandId="([^"]*)"', stream)
            entry.end = (_first(r'End="([^"]*)"', stream) or "").lower() == "true"
            if _first(r'Name="([^"]*)"', stream) != "stdin":
                entry.command_id = None  # not the stdin stream: refused below
        with self._lock:
            self.log.append(entry)
            exchange = self._next(action, entry)
        if exchange is None:
            self.errors.append(f"unexpected {action} request")
            return 500, _fault("no recorded answer for this request"), 0.0
        text = re.sub(
            r"(<a:RelatesTo>)[^<]*(</a:RelatesTo>)",
            lambda m: m.group(1) + message_id + m.group(2),
            exchange.response,
        )
        return exchange.status, text, exchange.delay

    def _next(self, action: str, entry: Logged) -> Exchange | None:
        if self.reply is not None:
            return self._templated(action, entry)
        for i, exchange in enumerate(self.exchanges):
            if exchange.action == action:
                self.skipped.extend(e.action for e in self.exchanges[:i])
                del self.exchanges[: i + 1]
                return exchange
        return None

    def _templated(self, action: str, entry: Logged) -> Exchange | None:
        assert self.reply is not None
        template = self._template.get(action)
        if template is None:
            return None
        if action == "Command":
            self._current = entry
        if action == "Send":
            problem = self._refuse_send(entry)
            if problem or self._current is None:
                self.errors.append(problem or "Send with no command")
                return Exchange("Send", _fault(problem or "Send with no command"), 500)
            self._current.stdin += entry.stdin
            self._current.end = entry.end
        if action != "Receive":
            return template
        current = self._current
        if current is None:
            return None
        script = current.script or ""
        if "[Console]::In" in script and not current.end:
            # powershell.exe would wait on stdin for ever: a client that never closes it hangs
            self.errors.append("Receive while the command waits on a stdin never closed")
            return Exchange("Receive", _fault("the command is still reading its stdin"), 500)
        current.finished = True
        if current.stdin and "[ScriptBlock]::Create(" in script:  # the stdin bootstrap
            script = base64.b64decode(current.stdin).decode("utf-8")
            current.delivered = script
        stdout, stderr, rc = self.reply(script)
        envelope = receive_envelope(template.response, stdout, stderr, rc)
        return Exchange("Receive", envelope, 200, self.delay_receive)

    def _refuse_send(self, send: Logged) -> str | None:
        """Why Windows would not take this Send (templated mode), or None."""
        current = self._current
        recorded = _first(r"<rsp:CommandId>([^<]+)</", self._template["Command"].response)
        if current is None or send.command_id is None or send.command_id != recorded:
            return "Send to no command in flight, or not to its stdin stream"
        if current.end:
            return "Send after the command's stdin was closed (End=true)"
        if current.finished:
            return "Send to a command whose output was already read to the end"
        return None


def _first(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, re.S)
    return m.group(1) if m else None


def _decode_script(arguments: str) -> str | None:
    parts = arguments.split()
    if "-EncodedCommand" not in parts:
        return None
    encoded = parts[parts.index("-EncodedCommand") + 1]
    return base64.b64decode(encoded).decode("utf-16-le")


def receive_envelope(template: str, stdout: bytes, stderr: bytes, rc: int) -> str:
    """A recorded ReceiveResponse with its streams and exit code replaced."""
    command_id = _first(r'CommandId="([^"]+)"', template)
    body = re.sub(r"<rsp:Stream [^>]*>[^<]*</rsp:Stream>|<rsp:Stream [^>]*/>", "", template)
    streams = ""
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        for i in range(0, len(data), 4096):
            chunk = base64.b64encode(data[i : i + 4096]).decode()
            streams += f'<rsp:Stream Name="{name}" CommandId="{command_id}">{chunk}</rsp:Stream>'
        streams += f'<rsp:Stream Name="{name}" CommandId="{command_id}" End="true"></rsp:Stream>'
    body = body.replace("<rsp:CommandState", streams + "<rsp:CommandState", 1)
    return re.sub(r"<rsp:ExitCode>-?\d+</rsp:ExitCode>", f"<rsp:ExitCode>{rc}</rsp:ExitCode>", body)


def _fault(text: str) -> str:
    return (
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault>'
        f"<s:Reason><s:Text>{text}</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    replay: ReplayServer

    def setup(self) -> None:
        super().setup()
        self.ntlm: Any = None
        self.authenticated = False
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.settimeout(10)
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.close_connection = True
                self.handshake_failed = True
                return
        self.handshake_failed = False

    def handle(self) -> None:
        if not self.handshake_failed:
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if not self._authenticate():
            return
        encrypted = "multipart/encrypted" in (self.headers.get("Content-Type") or "")
        if encrypted:
            body = self._unwrap(body)
        if not body:  # pywinrm's empty POST that sets up message encryption
            self._send(200, b"")
            return
        status, text, delay = self.replay.answer(body.decode("utf-8"), encrypted)
        if delay:
            time.sleep(delay)
        data = text.encode("utf-8")
        if encrypted:
            self._send(status, self._wrap(data), {"Content-Type": self._enc_type()})
        else:
            self._send(status, data, {"Content-Type": "application/soap+xml;charset=UTF-8"})

    # -- authentication ----------------------------------------------------------------------
    def _authenticate(self) -> bool:
        if self.authenticated:
            return True
        header = self.headers.get("Authorization") or ""
        if self.replay.auth == "basic":
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "basic":
                user, _, password = base64.b64decode(token).decode().partition(":")
                if self.replay.users.get(user) == password:
                    return True
            self._reject({"WWW-Authenticate": 'Basic realm="WSMAN"'})
            return False
        import spnego

        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("negotiate", "ntlm") or not token:
            self._reject({"WWW-Authenticate": "Negotiate"})
            return False
        try:
            if self.ntlm is None:
                self.ntlm = spnego.server(protocol="ntlm")
            out = self.ntlm.step(base64.b64decode(token))
        except Exception:
            self.ntlm = None
            self._reject({})
            return False
        if not self.ntlm.complete:
            challenge = base64.b64encode(out or b"").decode()
            self._send(401, b"", {"WWW-Authenticate": f"{scheme} {challenge}"})
            return False
        self.authenticated = True
        return True

    def _reject(self, headers: dict[str, str]) -> None:
        if "Authorization" in self.headers:
            with self.replay._lock:
                self.replay.auth_failures += 1
        self._send(401, b"", headers)

    # -- NTLM message encryption (MS-WSMV 2.2.9.1.1) -----------------------------------------
    def _enc_type(self) -> str:
        return f'multipart/encrypted;protocol="{ENC_PROTOCOL}";boundary="Encrypted Boundary"'

    def _unwrap(self, body: bytes) -> bytes:
        parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
        message = b""
        for i in range(0, len(parts) - 1, 2):
            payload = parts[i + 1]
            if payload.endswith(BOUNDARY + b"--\r\n"):
                payload = payload[: -len(BOUNDARY + b"--\r\n")]
            data = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
            sig_len = struct.unpack("<i", data[:4])[0]
            signature, sealed = data[4 : 4 + sig_len], data[4 + sig_len :]
            message += self.ntlm.unwrap(signature + sealed).data
        return message

    def _wrap(self, data: bytes) -> bytes:
        wrapped = self.ntlm.wrap(data, encrypt=True).data
        signature, sealed = wrapped[:16], wrapped[16:]
        return (
            BOUNDARY
            + b"\r\n\tContent-Type: "
            + ENC_PROTOCOL.encode()
            + b"\r\n\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
            + str(len(data)).encode()
            + b"\r\n"
            + BOUNDARY
            + b"\r\n\tContent-Type: application/octet-stream\r\n"
            + struct.pack("<i", len(signature))
            + signature
            + sealed
            + BOUNDARY
            + b"--\r\n"
        )


def ntlm_user_file(path: Path, users: dict[str, str]) -> Path:
    """Write users for pyspnego's NTLM acceptor (read through the NTLM_USER_FILE variable)."""
    path.write_text("".join(f":{user}:{password}\n" for user, password in users.items()))
    os.environ["NTLM_USER_FILE"] = str(path)
    return path


def clixml_error(line: str) -> bytes:
    """The error stream powershell.exe writes for a failing statement, quoting its script line."""

    def esc(text: str) -> str:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return text.replace("\r", "_x000D_").replace("\n", "_x000A_")

    records = [
        "Set-LocalUser : The password does not meet the password policy requirements.\r\n",
        "At line:3 char:1\r\n",
        f"+ {line}\r\n",
        "    + CategoryInfo          : InvalidOperation: (:) [Set-LocalUser], InvalidPasswordException\r\n",
    ]
    body = "".join(f'<S S="Error">{esc(r)}</S>' for r in records)
    return (
        '#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        + body
        + "</Objs>"
    ).encode()


def secret_forms(secret: str) -> list[str]:
    """The forms a secret could take in an envelope or a record: as is, quoted for PowerShell,
    JSON- and XML-escaped, and base64 of UTF-8 (the form a stdin Send carries)."""
    import html
    import json

    return [
        secret,
        secret.replace("'", "''"),
        json.dumps(secret)[1:-1],
        html.escape(secret),
        html.escape(secret, quote=False),
        base64.b64encode(secret.encode("utf-8")).decode("ascii"),
    ]


def leaks_outside_stdin(log: list[Logged], secret: str) -> list[str]:
    """Every logged request, other than a Send on a command's stdin, whose envelope or decoded
    script (powershell.exe's command line) holds the secret in any of its forms."""
    forms = secret_forms(secret)
    found = []
    for entry in log:
        if entry.action == "Send" and entry.command_id is not None:
            continue
        where = (entry.body, entry.arguments or "", entry.script or "", entry.delivered or "")
        if any(form in text for form in forms for text in where):
            found.append(f"{entry.action} {entry.message_id}")
    return found
