"""The one quoting module: POSIX and PowerShell quoting, and the validators every task shares."""

from __future__ import annotations

import base64
import subprocess
from pathlib import PurePosixPath

import pytest

from toolkit.errors import ValidationError
from toolkit.remediation.quoting import (
    StdinSecret,
    become,
    check_path,
    check_text,
    check_token,
    cmd,
    ps_encoded,
    ps_quote,
    ps_script,
    script,
)
from toolkit.secrets.credentials import Secret

NASTY = [
    "a b",
    "$(touch /tmp/x)",
    "`id`",
    "a;b",
    "a'b",
    'a"b',
    "a\\b",
    "*",
    "~root",
    "a|b",
    "&&",
    "$HOME",
]


@pytest.mark.parametrize("value", NASTY)
def test_cmd_quotes_every_argument_so_the_shell_sees_it_literally(value: str) -> None:
    command = cmd("printf", "%s", value)
    out = subprocess.run(
        ["/bin/sh", "-c", command.text], capture_output=True, text=True, check=True
    )
    assert out.stdout == value


@pytest.mark.parametrize("value", NASTY)
def test_script_placeholders_are_quoted_but_the_template_is_code(value: str) -> None:
    command = script("printf %s {v} | cat", v=value)
    out = subprocess.run(
        ["/bin/sh", "-c", command.text], capture_output=True, text=True, check=True
    )
    assert out.stdout == value


def test_script_refuses_format_specs_and_conversions() -> None:
    with pytest.raises(ValueError):
        script("echo {v!r}", v="x")
    with pytest.raises(ValueError):
        script("echo {v:>10}", v="x")


def test_paths_and_ints_are_quoted_and_bools_refused() -> None:
    assert cmd("ls", PurePosixPath("/tmp/a b"), 3).text == "ls '/tmp/a b' 3"
    with pytest.raises(TypeError):
        cmd("x", True)  # type: ignore[arg-type]


def test_a_secret_never_goes_on_a_posix_command_line() -> None:
    with pytest.raises(ValidationError, match="command line") as info:
        cmd("chpasswd", Secret("hunter2"))  # type: ignore[arg-type]
    assert "stdin" in (info.value.hint or "")


def test_nul_bytes_are_refused() -> None:
    with pytest.raises(ValidationError):
        cmd("echo", "a\x00b")


def test_pipe_and_then_join_commands() -> None:
    joined = cmd("lpstat", "-o") | cmd("wc", "-l")
    assert joined.text == "lpstat -o | wc -l"
    assert cmd("true").then(cmd("echo", "a b")).text == "true && echo 'a b'"


def test_become_wraps_the_whole_command_for_sudo_without_prompt() -> None:
    wrapped = become(script("cat {f} | wc -l", f="/etc/shadow"))
    assert wrapped.text == "sudo -n -u root -- /bin/sh -c 'cat /etc/shadow | wc -l'"
    with pytest.raises(ValidationError):
        become(cmd("id"), user="root;id")
    with pytest.raises(ValidationError):
        become(cmd("id"), method="su")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("-rf", "starts with '-'"),
        ("a b", "a space"),
        ("a\nb", "a newline"),
        ("a;b", "';'"),
        ("$(id)", "'$'"),
        ("a`b", "'`'"),
        ("a'b", '"\'"'),
    ],
)
def test_check_token_refuses_and_says_why(value: str, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_token(value, "queue")
    assert reason in info.value.message


@pytest.mark.parametrize(
    "value", ["office", "hp-4th_floor.2", "user@DOMAIN", "KB5034441", "a:b,c=d/e+f%"]
)
def test_check_token_accepts_names(value: str) -> None:
    assert check_token(value, "name") == value


@pytest.mark.parametrize("value", ["../etc/passwd", "/var/../etc", "a\nb", "-x", "a\rb", "a\x00b"])
def test_check_path_refuses(value: str) -> None:
    with pytest.raises(ValidationError):
        check_path(value, "path")


def test_check_path_allows_spaces_and_can_require_absolute() -> None:
    assert check_path("/home/u/My Documents", "path") == "/home/u/My Documents"
    with pytest.raises(ValidationError, match="absolute"):
        check_path("relative/x", "path", absolute=True)


def test_check_text_allows_metacharacters_but_not_newlines() -> None:
    assert check_text("paper jam; $(reboot) `now`", "reason")
    with pytest.raises(ValidationError, match="newline"):
        check_text("a\nb", "reason")


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "'plain'"),
        ("it's", "'it''s'"),
        ("$(Remove-Item C:\\)", "'$(Remove-Item C:\\)'"),
        ("a`b", "'a`b'"),
        ("smart\u2019quote", "'smart\u2019\u2019quote'"),
    ],
)
def test_ps_quote_makes_inert_single_quoted_literals(value: str, quoted: str) -> None:
    assert ps_quote(value) == quoted


def test_ps_script_refuses_a_secret_on_its_command_line_and_reads_it_from_stdin() -> None:
    with pytest.raises(ValidationError, match="process auditing"):
        ps_script("Set-LocalUser -Name {u} -Password {p}", u="bob", p=Secret("Canary-123"))
    password = StdinSecret(Secret("Canary-123ü", "pw"))
    command = ps_script("Set-LocalUser -Name {u} -Password {p}", u="bob", p=password)
    assert "Canary-123" not in command.text and "[Console]::In.ReadToEnd()" in command.text
    sent = password.stdin()
    assert isinstance(sent, Secret) and sent.label == "pw" and "Canary" not in str(sent)
    assert base64.b64decode(sent.reveal()).decode("utf-8") == "Canary-123ü"
    decoded = base64.b64decode(ps_encoded(command)).decode("utf-16-le")
    assert decoded == command.text
    with pytest.raises(TypeError):
        ps_encoded(cmd("id"))


def test_become_wraps_only_sh_commands() -> None:
    from toolkit.remediation.quoting import become, cli, cmd, ps_script

    assert become(cmd("id", "-u")).text.startswith("sudo -n -u root -- /bin/sh -c ")
    for other in (ps_script("Get-Service"), cli("show version")):
        with pytest.raises(ValidationError, match="not"):
            become(other)
