"""The WinRM transport's pure parts: settings from inventory, decoding, CLIXML, command lines,
error translation, lazy import. The protocol itself is covered by tests/integration."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toolkit.errors import (
    AuthFailed,
    CertificateError,
    CommandTimeout,
    TransportError,
    Unreachable,
    ValidationError,
)
from toolkit.inventory import make_host
from toolkit.remediation.quoting import Command, ps_script
from toolkit.secrets.credentials import Secret
from toolkit.transports.winrm import (
    MAX_COMMAND_LINE,
    WinRMSettings,
    clixml_to_text,
    command_line,
    decode_output,
    translate,
)


def settings(**values: Any) -> WinRMSettings:
    host = make_host("ws-042", {"platform": "windows", "address": "10.0.0.42", **values}, (), "t")
    return WinRMSettings.from_host(host)


def test_defaults_are_https_ntlm_encrypted_validated() -> None:
    s = settings()
    assert s.endpoint == "https://10.0.0.42:5986/wsman"
    assert (s.auth, s.message_encryption, s.cert_validation) == ("ntlm", "always", True)
    assert s.encrypted_messages and s.insecure_reasons() == []
    assert s.codepage == 65001 and s.ca_bundle is None and s.proxy is None


def test_http_defaults_to_5985_and_is_insecure() -> None:
    s = settings(winrm_scheme="http")
    assert s.endpoint == "http://10.0.0.42:5985/wsman"
    assert s.insecure_reasons() == ["plain HTTP: the server is not authenticated by a certificate"]
    clear = settings(winrm_scheme="http", winrm_message_encryption="never")
    assert "clear text" in clear.insecure_reasons()[0]


def test_an_explicit_port_is_kept() -> None:
    assert settings(winrm_scheme="http", port=8080).port == 8080


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"winrm_auth": "basic"}, "Basic auth"),
        ({"ansible_winrm_transport": "plaintext"}, "Basic auth"),
        ({"winrm_cert_validation": False}, "certificate validation is off"),
        ({"ansible_winrm_server_cert_validation": "ignore"}, "certificate validation is off"),
    ],
)
def test_weaker_settings_are_named(values: dict[str, Any], reason: str) -> None:
    assert any(reason in r for r in settings(**values).insecure_reasons())


def test_kerberos_and_credssp_are_selectable_per_host() -> None:
    assert settings(winrm_auth="kerberos", winrm_kerberos_delegation="yes").kerberos_delegation
    assert settings(ansible_winrm_transport="credssp").auth == "credssp"
    assert settings(winrm_auth="kerberos").insecure_reasons() == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"winrm_scheme": "ftp"}, "winrm_scheme"),
        ({"winrm_auth": "digest"}, "winrm_auth"),
        ({"winrm_message_encryption": "sometimes"}, "winrm_message_encryption"),
        ({"winrm_ca_bundle": "/nonexistent/ca.pem"}, "does not exist"),
        ({"winrm_path": "/wsman;x"}, "winrm_path"),
        ({"winrm_operation_timeout": 0}, "between 1 and 3600"),
        ({"winrm_codepage_fallback": "klingon"}, "unknown winrm_codepage_fallback"),
        ({"winrm_allow_insecure": "maybe"}, "true or false"),
    ],
)
def test_bad_settings_are_refused_with_the_host_named(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        settings(**values)
    assert caught.value.message.startswith("ws-042: ")


def test_ipv6_endpoint() -> None:
    assert settings(address="fd00::42").endpoint == "https://[fd00::42]:5986/wsman"


def test_ca_bundle_path(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert settings(winrm_ca_bundle=str(bundle)).ca_bundle == str(bundle)


@pytest.mark.parametrize(
    ("data", "fallback", "text"),
    [
        (b"hi\r\n", "cp437", "hi\n"),
        ("こんにちは\r\n".encode(), "cp437", "こんにちは\n"),
        (b"\xef\xbb\xbfBOM\r\n", "cp437", "BOM\n"),
        ("Größe: 3 Dateien\r\n".encode("cp850"), "cp850", "Größe: 3 Dateien\n"),
        ("Ошибка\r\n".encode("cp866"), "cp866", "Ошибка\n"),
        (b"\x82t\x82", "cp437", "été"),
    ],
    ids=["ascii", "utf8", "bom", "cp850", "cp866", "cp437"],
)
def test_decode_output(data: bytes, fallback: str, text: str) -> None:
    assert decode_output(data, fallback) == text


# What powershell.exe writes to stderr for an uncaught error when stderr is redirected
# (Windows PowerShell 5.1), with the progress record it emits first.
CLIXML_51 = (
    "#< CLIXML\r\n"
    '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    '<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules for '
    "first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR><SD> </SD>"
    "</PR></MS></Obj>"
    "<S S=\"Error\">Get-Item : Cannot find path 'C:\\nope' because it does not exist._x000D__x000A_</S>"
    '<S S="Error">At line:1 char:1_x000D__x000A_</S>'
    "<S S=\"Error\">+ Get-Item 'C:\\nope'_x000D__x000A_</S>"
    '<S S="Error">+ ~~~~~~~~~~~~~~~~~~~_x000D__x000A_</S>'
    '<S S="Error">    + CategoryInfo          : ObjectNotFound: (C:\\nope:String) [Get-Item], '
    "ItemNotFoundException_x000D__x000A_</S>"
    '<S S="Error">    + FullyQualifiedErrorId : PathNotFound,Microsoft.PowerShell.Commands.GetItemCommand'
    '_x000D__x000A_</S><S S="Error"> _x000D__x000A_</S></Objs>'
)


def test_clixml_error_record_becomes_console_text() -> None:
    text = clixml_to_text(decode_output(CLIXML_51.encode()))
    lines = text.splitlines()
    assert lines[0] == "Get-Item : Cannot find path 'C:\\nope' because it does not exist."
    assert lines[1] == "At line:1 char:1"
    assert "FullyQualifiedErrorId : PathNotFound" in text
    assert "Preparing modules" not in text and "<Objs" not in text


def test_clixml_streams_escapes_and_surrounding_text() -> None:
    raw = (
        "native tool said this\n#< CLIXML\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<S S="warning">low disk_x000A_</S><S S="verbose">step 2_x000A_</S>'
        '<S S="Error">tab_x0009_and smile _xD83D__xDE00__x000A_</S><S S="information">x</S></Objs>'
    )
    assert clixml_to_text(raw) == (
        "native tool said this\nWARNING: low disk\nVERBOSE: step 2\ntab\tand smile 😀\n"
    )


def test_broken_clixml_is_kept_rather_than_lost() -> None:
    raw = '#< CLIXML\n<Objs><S S="Error">cut off'
    assert "cut off" in clixml_to_text(raw)
    assert clixml_to_text("plain error\n") == "plain error\n"


def test_command_line_encodes_utf16_base64_with_the_prelude() -> None:
    args, stdin = command_line(ps_script("Get-Service -Name {n}", n="Spool'er"))
    assert stdin is None
    assert args[:3] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    script = base64.b64decode(args[3]).decode("utf-16-le")
    assert script.startswith("$ProgressPreference = 'SilentlyContinue'\n")
    assert script.endswith("\nGet-Service -Name 'Spool''er'")


def test_long_scripts_move_to_stdin_but_never_with_a_secret() -> None:
    long = ps_script("Write-Output {v}", v="x" * MAX_COMMAND_LINE)
    args, stdin = command_line(long)
    assert stdin is not None and "x" * 100 not in base64.b64decode(args[3]).decode("utf-16-le")
    assert base64.b64decode(stdin).decode().endswith("x" * 100 + "'")
    with pytest.raises(ValidationError, match="secret"):  # ps_script refuses it first
        command_line(ps_script("$p = {p}; {v}", p=Secret("s3cret"), v="x" * MAX_COMMAND_LINE))


@pytest.mark.parametrize("pad", [0, MAX_COMMAND_LINE])
def test_a_script_hiding_a_masked_value_is_refused_short_or_long(pad: int) -> None:
    """Built by hand (ps_script refuses secrets): whatever its length, a masked value would be on
    powershell.exe's command line or in the stdin bootstrap's script, both logged by auditing."""
    hidden = Command(
        f"$p = 's3cret'; '{'x' * pad}'", f"$p = '********'; '{'x' * pad}'", "powershell"
    )
    with pytest.raises(ValidationError, match="process auditing"):
        command_line(hidden)


def test_only_powershell_commands() -> None:
    from toolkit.remediation.quoting import cmd

    with pytest.raises(TypeError):
        command_line(cmd("ls"))


def _chain(outer: BaseException, inner: BaseException) -> BaseException:
    outer.__context__ = inner
    return outer


@pytest.mark.parametrize(
    ("make", "phase", "kind"),
    [
        (lambda r, w: w.InvalidCredentialsError("rejected"), "connect", AuthFailed),
        (
            lambda r, w: r.SSLError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "connect",
            CertificateError,
        ),
        (
            lambda r, w: r.SSLError("[SSL: WRONG_VERSION_NUMBER] wrong version number"),
            "connect",
            Unreachable,
        ),
        (lambda r, w: r.ConnectTimeout("timed out"), "connect", Unreachable),
        (lambda r, w: r.ReadTimeout("read timed out"), "connect", Unreachable),
        (lambda r, w: r.ReadTimeout("read timed out"), "command", CommandTimeout),
        (lambda r, w: r.ConnectionError("[Errno 111] Connection refused"), "connect", Unreachable),
        (lambda r, w: r.ConnectionError("RemoteDisconnected"), "command", Unreachable),
        (lambda r, w: w.WinRMTransportError("http", 500, "boom"), "command", TransportError),
        (lambda r, w: w.WinRMTransportError("http", 401, ""), "command", AuthFailed),
        (lambda r, w: RuntimeError("odd"), "command", TransportError),
    ],
)
def test_translate(make: Any, phase: str, kind: type[TransportError]) -> None:
    import requests.exceptions as r
    import winrm.exceptions as w

    error = translate("ws-042", make(r, w), phase)
    assert type(error) is kind
    assert error.host == "ws-042"


def test_itops_help_does_not_import_pywinrm() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from toolkit.cli import cli\n"
        "result = CliRunner().invoke(cli, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('winrm', 'requests_ntlm', 'spnego')]\n"
        "assert not bad, bad\n"
        "assert 'toolkit.transports.winrm' not in sys.modules\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_transport_module_loads_pywinrm_whole() -> None:
    """pywinrm's modules import each other in a cycle: two threads importing `winrm.exceptions`
    and `winrm.protocol` for the first time at once deadlock (_DeadlockError, then "cannot import
    name 'Protocol'"), and a fan-out opens its first Windows hosts in parallel threads. So the
    transport module, which the Connector imports once under its lock, imports pywinrm whole;
    nothing on a per-host thread imports it for the first time."""
    code = (
        "import importlib, sys\n"
        "importlib.import_module('toolkit.transports.winrm')\n"
        "need = ('winrm', 'winrm.protocol', 'winrm.exceptions', 'requests.exceptions')\n"
        "print([m for m in need if m not in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
