"""Contract tests of the WinRM transport: the real pywinrm client, real HTTP(S), real NTLM.

The server side replays WS-Management exchanges recorded from a real Windows Server (pypsrp's test
data, fetched at test time). These prove our transport handles the protocol as Windows speaks it:
they are contract tests, not Windows tests — no PowerShell runs here (see docs/windows.md).
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import time
from typing import Any

import pytest
from wsman_replay import (
    PASSWORD,
    PKI,
    USER,
    ReplayServer,
    Reply,
    ServerFactory,
    leaks_outside_stdin,
    load,
)

from toolkit.errors import (
    AuthFailed,
    CertificateError,
    CommandInterrupted,
    CommandTimeout,
    Unreachable,
    ValidationError,
)
from toolkit.inventory import Host, make_host
from toolkit.remediation.quoting import Command, StdinSecret, ps_encoded, ps_script
from toolkit.secrets.credentials import CredentialStore, Redactor, Secret
from toolkit.transports.base import ConnectOptions
from toolkit.transports.winrm import InsecureRefused, WinRMFactory, WinRMTransport

pytestmark = pytest.mark.integration


def winhost(port: int, pki: PKI | None = None, **extra: Any) -> Host:
    values: dict[str, Any] = {
        "platform": "windows",
        "address": "127.0.0.1",
        "port": port,
        "user": USER,
        "password": "env:ITOPS_TEST_REPLAY_PASSWORD",
    }
    if pki is not None:
        values["winrm_ca_bundle"] = str(pki.ca)
    values.update(extra)
    return make_host(f"win-{port}", values, ("windows",), "test")


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITOPS_TEST_REPLAY_PASSWORD", PASSWORD)


def factory(connect: float = 3.0, command: float = 20.0) -> WinRMFactory:
    return WinRMFactory(
        ConnectOptions(connect_timeout=connect, command_timeout=command),
        CredentialStore(Redactor()),
    )


def run_once(server: ReplayServer, pki: PKI, script: str = "Write-Output {x}", **kw: Any) -> Any:
    transport = factory().open(winhost(server.port, pki))
    try:
        return transport.run(ps_script(script, x="hi"), **kw)
    finally:
        transport.close()


# --------------------------------------------------------------------------- recorded exchanges


def test_stdout_recorded_exchange(replay: ServerFactory, pki: PKI) -> None:
    server = replay("test_winrs_standard")
    result = run_once(server, pki)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "hi\n", "")
    assert result.command == "Write-Output 'hi'"
    actions = [entry.action for entry in server.log]
    assert actions == ["Create", "Command", "Receive", "Signal", "Delete"]
    assert all(entry.encrypted for entry in server.log), "NTLM message encryption is the default"
    command = server.log[1]
    assert command.command == "powershell.exe"
    assert (command.arguments or "").split()[:3] == [
        "-NoProfile",
        "-NonInteractive",
        "-EncodedCommand",
    ]
    assert (command.script or "").endswith("\nWrite-Output 'hi'")
    assert server.exchanges == [], "every recorded message was used"


def test_stderr_and_exit_code(replay: ServerFactory, pki: PKI) -> None:
    result = run_once(replay("test_winrs_stderr_rc"), pki)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "out \n", "err \n")
    assert not result.ok


def test_unicode_output(replay: ServerFactory, pki: PKI) -> None:
    assert run_once(replay("test_winrs_unicode"), pki).stdout == "こんにちは\n"


def test_operation_timeouts_are_waited_through(replay: ServerFactory, pki: PKI) -> None:
    server = replay("test_winrs_operation_timeout")
    result = run_once(server, pki)
    assert (result.exit_code, result.stdout) == (0, "hi\nhi again\n")
    assert [e.action for e in server.log].count("Receive") == 4


def test_command_timeout_is_typed_and_signals_the_command(replay: ServerFactory, pki: PKI) -> None:
    server = replay("test_winrs_operation_timeout")
    for exchange in server.exchanges:
        if exchange.status == 500:  # the recorded OperationTimeout faults: make them take 1 s
            exchange.delay = 1.0
    transport = factory(command=1.5).open(winhost(server.port, pki))
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        transport.run(ps_script("Start-Sleep 30"))
    elapsed = time.monotonic() - started
    transport.close()
    assert 1.5 <= elapsed < 4.0
    assert caught.value.kind == "command-timeout"
    assert [e.action for e in server.log][-2:] == ["Signal", "Delete"]
    # the record says what the host confirmed: the terminate signal and the shell's deletion
    assert "signalled to terminate and its shell deleted on the host" in caught.value.detail
    assert server.skipped == ["Receive"]  # the timeout cut the recorded receive loop short
    server.skipped.clear()


def test_ctrl_c_signals_the_command_and_deletes_its_shell(replay: ServerFactory, pki: PKI) -> None:
    # Ctrl-C (Runner.interrupt → transport.interrupt, from another thread) stops the command on
    # the host at its next Receive: the same Signal and Delete as a timeout.
    import threading

    server = replay("test_winrs_operation_timeout")
    for exchange in server.exchanges:
        if exchange.status == 500:
            exchange.delay = 1.0
    transport = factory(command=30).open(winhost(server.port, pki))
    threading.Timer(0.5, transport.interrupt).start()
    started = time.monotonic()
    with pytest.raises(CommandInterrupted) as caught:
        transport.run(ps_script("Start-Sleep 30"))
    assert time.monotonic() - started < 4.0
    assert caught.value.kind == "interrupted"
    assert [e.action for e in server.log][-2:] == ["Signal", "Delete"]
    assert "signalled to terminate" in caught.value.detail
    server.skipped.clear()


def test_recorded_wsman_fault_is_a_transport_error(replay: ServerFactory, pki: PKI) -> None:
    from toolkit.errors import TransportError

    server = replay("test_winrs_bad_cmd_id")
    transport = factory().open(winhost(server.port, pki))
    with pytest.raises(TransportError, match="invalid selectors"):
        transport.run(ps_script("Write-Output 1"))
    transport.close()
    assert [e.action for e in server.log][:3] == ["Create", "Command", "Receive"]


# --------------------------------------------------------------------------- typed connect errors


def test_wrong_password_is_auth_failed(
    replay: ServerFactory, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = replay("test_winrs_standard")
    monkeypatch.setenv("ITOPS_TEST_REPLAY_PASSWORD", "not-the-password")
    with pytest.raises(AuthFailed, match="401"):
        factory().open(winhost(server.port, pki))
    assert server.auth_failures >= 1
    assert [e.action for e in server.log] == [], "nothing got past authentication"
    server.exchanges.clear()


@pytest.mark.parametrize(
    ("cert", "bundle", "why"),
    [
        ("cert", None, "no CA configured: the environment's REQUESTS_CA_BUNDLE must not count"),
        ("cert", "other_ca", "a CA that did not issue the certificate"),
        ("expired_cert", "ca", "an expired certificate"),
        ("wrong_name_cert", "ca", "a certificate for another name"),
    ],
)
def test_untrusted_certificate_is_refused_before_credentials(
    replay: ServerFactory, pki: PKI, cert: str, bundle: str | None, why: str
) -> None:
    server = replay("test_winrs_standard", tls=pki.context(getattr(pki, cert)))
    extra = {"winrm_ca_bundle": str(getattr(pki, bundle))} if bundle else {}
    with pytest.raises(CertificateError) as caught:
        factory().open(winhost(server.port, **extra))
    assert caught.value.kind == "certificate", why
    assert server.log == [] and server.auth_failures == 0, "no request was sent"
    server.exchanges.clear()


def test_trusted_ca_works_without_environment_variables(
    replay: ServerFactory, pki: PKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    assert run_once(replay("test_winrs_standard"), pki).stdout == "hi\n"


def test_connection_refused_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(Unreachable, match="refused"):
        factory().open(winhost(port))
    assert time.monotonic() - started < 2


def test_silent_host_is_unreachable_within_the_connect_timeout(tarpit: int, pki: PKI) -> None:
    started = time.monotonic()
    with pytest.raises(Unreachable):
        factory(connect=1.0).open(winhost(tarpit, pki))
    assert time.monotonic() - started < 2.5


def test_http_is_refused_unless_the_inventory_allows_it(replay: ServerFactory) -> None:
    server = replay("test_winrs_standard", tls=False)
    with pytest.raises(InsecureRefused, match="plain HTTP"):
        factory().open(winhost(server.port, winrm_scheme="http"))
    with pytest.raises(InsecureRefused, match="Basic auth"):
        factory().open(winhost(server.port, winrm_auth="basic"))
    assert server.log == [], "refused before connecting"
    server.exchanges.clear()


def test_allowed_http_warns_and_still_encrypts_with_ntlm(
    replay: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = replay("test_winrs_standard", tls=False)
    host = winhost(server.port, winrm_scheme="http", winrm_allow_insecure=True)
    with caplog.at_level(logging.WARNING, logger="itops.transports.winrm"):
        transport = factory().open(host)
        result = transport.run(ps_script("Write-Output 1"))
        transport.close()
    assert result.stdout == "hi\n"
    assert isinstance(transport, WinRMTransport)
    assert any("plain HTTP" in notice for notice in transport.notices)
    assert any("insecure WinRM" in r.getMessage() for r in caplog.records)
    assert all(entry.encrypted for entry in server.log)


def test_allowed_basic_over_http(replay: ServerFactory) -> None:
    server = replay("test_winrs_standard", tls=False, auth="basic", users={USER: PASSWORD})
    host = winhost(server.port, winrm_scheme="http", winrm_auth="basic", winrm_allow_insecure=True)
    transport = factory().open(host)
    assert transport.run(ps_script("Write-Output 1")).stdout == "hi\n"
    transport.close()
    assert len(transport.notices) == 2
    assert not any(entry.encrypted for entry in server.log)


def test_basic_with_a_wrong_password_is_auth_failed(
    replay: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = replay("test_winrs_standard", tls=False, auth="basic", users={USER: "other"})
    host = winhost(server.port, winrm_scheme="http", winrm_auth="basic", winrm_allow_insecure=True)
    with pytest.raises(AuthFailed):
        factory().open(host)
    server.exchanges.clear()


# --------------------------------------------------------------------------- templated replies


def fixed(stdout: bytes, stderr: bytes = b"", rc: int = 0) -> Any:
    def reply(script: str) -> Reply:
        return stdout, stderr, rc

    return reply


CLIXML = (
    b"#< CLIXML\r\n"
    b'<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
    b'<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject</T>'
    b'<T>System.Object</T></TN><MS><I64 N="SourceId">1</I64><PR N="Record"><AV>Preparing modules '
    b"for first use.</AV><AI>0</AI><Nil /><PI>-1</PI><PC>-1</PC><T>Completed</T><SR>-1</SR>"
    b"<SD> </SD></PR></MS></Obj>"
    b"<S S=\"Error\">Get-Service : Cannot find any service with service name 'nope'._x000D__x000A_</S>"
    b'<S S="Error">At line:3 char:1_x000D__x000A_</S>'
    b'<S S="Warning">disk almost full_x000D__x000A_</S></Objs>'
)


def test_clixml_error_stream_becomes_text(replay: ServerFactory, pki: PKI) -> None:
    server = replay(reply=fixed(b"", CLIXML, 1))
    result = run_once(server, pki)
    assert result.exit_code == 1
    assert result.stderr == (
        "Get-Service : Cannot find any service with service name 'nope'.\n"
        "At line:3 char:1\n"
        "WARNING: disk almost full\n"
    )


def test_console_code_page_output_is_decoded(replay: ServerFactory, pki: PKI) -> None:
    # `ipconfig` on a German Windows writes the OEM code page when not switched to UTF-8.
    oem = "Windows-IP-Konfiguration\r\n\r\n   Verbindungsspezifisches DNS-Suffix: \r\n"
    oem += "Die DNS-Auflösungscache wurde geleert.\r\n"
    server = replay(reply=fixed(oem.encode("cp850")))
    transport = factory().open(winhost(server.port, pki, winrm_codepage_fallback="cp850"))
    result = transport.run(ps_script("ipconfig /flushdns"))
    transport.close()
    assert "Auflösungscache" in result.stdout and "\r" not in result.stdout


def test_long_script_travels_on_stdin(replay: ServerFactory, pki: PKI) -> None:
    seen: list[str] = []

    def echo_length(script: str) -> Reply:
        seen.append(script)
        return str(len(script)).encode(), b"", 0

    server = replay(reply=echo_length)
    long_value = "x" * 6000
    transport = factory().open(winhost(server.port, pki))
    result = transport.run(ps_script("Write-Output {v}", v=long_value))
    transport.close()
    assert seen and seen[0].endswith(f"Write-Output '{long_value}'")
    assert int(result.stdout) == len(seen[0])
    assert [e.action for e in server.log].count("Send") >= 2  # data, then end of stream
    bootstrap = server.log[1].script or ""
    assert "[Console]::In.ReadToEnd()" in bootstrap and long_value not in bootstrap


@pytest.mark.parametrize("length", [10, 6000], ids=["short", "too-long-for-a-command-line"])
def test_a_masked_value_never_reaches_a_powershell_command_line(
    replay: ServerFactory, pki: PKI, length: int
) -> None:
    """ps_script refuses a secret; a PowerShell command built by hand whose text hides something
    from its display is refused by the transport too, short or long: powershell.exe's command line
    (or the stdin bootstrap's payload) is what process auditing and script-block logging record."""
    server = replay(reply=fixed(b""))
    transport = factory().open(winhost(server.port, pki))
    pad = "y" * length
    hidden = Command(f"$p = 'Canary-Long-9d1c'; '{pad}'", f"$p = '********'; '{pad}'", "powershell")
    with pytest.raises(ValidationError, match="secret"):
        transport.run(hidden)
    transport.close()
    assert "Command" not in [e.action for e in server.log]
    assert leaks_outside_stdin(server.log, "Canary-Long-9d1c") == []


def test_stalled_receive_times_out_within_its_limit(replay: ServerFactory, pki: PKI) -> None:
    server = replay(reply=fixed(b"late"), delay_receive=8.0)
    transport = factory(command=1.0).open(winhost(server.port, pki))
    started = time.monotonic()
    with pytest.raises(CommandTimeout):
        transport.run(ps_script("Write-Output 1"))
    assert time.monotonic() - started < 1.0 + 2 + 1.5  # limit + receive grace + slack
    transport.close()


def test_secret_reaches_the_host_only_on_stdin(replay: ServerFactory, pki: PKI) -> None:
    """Not on powershell.exe's command line (process auditing logs that): in a WS-Man Send."""
    canary = "Canary-Pw-4b2e';$(x)`ü"
    server = replay(reply=fixed(b"done"))
    transport = factory().open(winhost(server.port, pki))
    password = StdinSecret(Secret(canary))
    sent = password.stdin()
    result = transport.run(
        ps_script("$pw = {pw}\nSet-Thing -Password $pw", pw=password), stdin=sent
    )
    transport.close()
    assert result.stdout.strip() == "done"
    assert canary not in repr(result)
    script = server.scripts()[0]
    assert "[Console]::In.ReadToEnd()" in script and "ConvertTo-SecureString" in script
    encoded = base64.b64encode(canary.encode()).decode()
    assert canary not in script and encoded not in script
    assert all(canary not in (e.arguments or "") for e in server.log)
    sends = [e for e in server.log if e.action == "Send"]
    assert sends and b"".join(e.stdin for e in sends) == encoded.encode()
    assert base64.b64decode(b"".join(e.stdin for e in sends)).decode() == canary


def test_a_secret_on_stdin_follows_a_real_hosts_recorded_send_exchange(
    replay: ServerFactory, pki: PKI
) -> None:
    """Recorded mode, no template: test_winrs_send is a real Windows host taking two WS-Man Sends
    on a running command's stdin (data with End="false", then End="true") before its output is
    read. Our reset's request sequence follows that exchange request for request (the fixture
    fails on any skipped or unmatched one) and reads its recorded output; the secret is only in
    the Sends. What PowerShell does with the bytes is not shown by this (no Windows runs here)."""
    canary = "Canary-Rec-Pw-0c7e';$(x)`ü"
    recorded = next(e for e in load("test_winrs_send") if e.action == "Command").response
    command_id = re.search(r"<rsp:CommandId>([^<]+)<", recorded)
    assert command_id is not None
    server = replay("test_winrs_send")
    password = StdinSecret(Secret(canary))
    transport = factory().open(winhost(server.port, pki))
    result = transport.run(
        ps_script("$pw = {pw}\nSet-LocalUser -Name 'jdoe' -Password $pw", pw=password),
        stdin=password.stdin(),
    )
    transport.close()
    assert result.exit_code == 0 and result.stdout == "output 1\noutput 2\n"
    assert server.exchanges == [], "every recorded request was made"
    actions = [e.action for e in server.log]
    assert actions == ["Create", "Command", "Send", "Send", "Receive", "Signal", "Delete"]
    sends = [e for e in server.log if e.action == "Send"]
    recorded_id = command_id.group(1)
    assert [(s.command_id, s.end) for s in sends] == [(recorded_id, False), (recorded_id, True)]
    assert base64.b64decode(b"".join(s.stdin for s in sends)).decode("utf-8") == canary
    assert leaks_outside_stdin(server.log, canary) == []
    assert "ConvertTo-SecureString" in (server.log[1].script or "")


def test_the_replay_takes_stdin_only_as_windows_would(replay: ServerFactory, pki: PKI) -> None:
    """The templated replay's Send checks, driven with pywinrm's own Protocol: a Send must name the
    command in flight and its stdin stream, and none may follow End="true"; a script that reads
    stdin gets no output until its stdin is closed (powershell.exe would wait for ever)."""
    from winrm.exceptions import WSManFaultError
    from winrm.protocol import Protocol

    server = replay(reply=fixed(b"read"))
    client = Protocol(
        f"https://127.0.0.1:{server.port}/wsman",
        transport="ntlm",
        username=USER,
        password=PASSWORD,
        server_cert_validation="validate",
        ca_trust_path=str(pki.ca),
    )
    shell = client.open_shell()
    reads = ps_encoded(ps_script("[Console]::In.ReadToEnd()"))
    command = client.run_command(shell, "powershell.exe", ["-EncodedCommand", reads])
    with pytest.raises(WSManFaultError):
        client.send_command_input(shell, "00000000-0000-0000-0000-000000000000", b"x")
    with pytest.raises(WSManFaultError):
        client.get_command_output_raw(shell, command)  # stdin still open
    client.send_command_input(shell, command, b"abc")
    client.send_command_input(shell, command, b"", end=True)
    with pytest.raises(WSManFaultError):
        client.send_command_input(shell, command, b"late")
    client.cleanup_command(shell, command)
    client.close_shell(shell)
    refused, server.errors[:] = list(server.errors), []
    assert refused == [
        "Send to no command in flight, or not to its stdin stream",
        "Receive while the command waits on a stdin never closed",
        "Send after the command's stdin was closed (End=true)",
    ]
    assert [e.stdin for e in server.log if e.action == "Send"] == [b"x", b"abc", b"", b"late"]
    assert next(e for e in server.log if e.action == "Command").stdin == b"abc"


def test_a_secret_is_refused_inside_a_powershell_command_line() -> None:
    with pytest.raises(ValidationError, match="process auditing"):
        ps_script("$pw = {pw}", pw=Secret("Canary-Pw-4b2e"))


@pytest.mark.parametrize("auth", ["kerberos", "credssp"])
def test_kerberos_and_credssp_without_their_packages_say_how_to_install(
    replay: ServerFactory, pki: PKI, auth: str
) -> None:
    from toolkit.errors import TransportError

    server = replay("test_winrs_standard")
    with pytest.raises(TransportError, match=f"{auth} support is not installed") as caught:
        factory().open(winhost(server.port, pki, winrm_auth=auth))
    assert caught.value.hint == f"pip install 'itops-toolkit[winrm-{auth}]'"
    assert server.log == [], "nothing was sent"
    server.exchanges.clear()
