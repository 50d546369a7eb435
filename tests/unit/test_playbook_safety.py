"""Playbooks: inventory variables that would undo itops's host-key and certificate checks."""

from __future__ import annotations

from typing import Any

import pytest

from toolkit.automation.playbooks import PlaybookError, refuse_loosened_checks
from toolkit.inventory import make_host


def host(**vars: Any) -> Any:
    return make_host("h1", {"ansible_host": "127.0.0.9", **vars}, ("all",), "test:1")


@pytest.mark.parametrize(
    ("vars", "words"),
    [
        ({"ansible_ssh_args": "-o StrictHostKeyChecking=no"}, "ansible_ssh_args"),
        ({"ansible_host_key_checking": False}, "host_key_checking off"),
        ({"ansible_host_key_checking": "no"}, "host_key_checking off"),
        ({"ansible_winrm_server_cert_validation": "ignore"}, "cert_validation: ignore"),
    ],
)
def test_a_host_that_would_loosen_the_checks_is_refused(vars: dict[str, Any], words: str) -> None:
    with pytest.raises(PlaybookError, match=words):
        refuse_loosened_checks([host(), host(**vars)])


@pytest.mark.parametrize(
    "vars",
    [
        {},
        {"ansible_ssh_common_args": "-o ServerAliveInterval=5"},  # ours come first: ssh keeps them
        {"ansible_host_key_checking": True},
        {"ansible_winrm_server_cert_validation": "validate"},
        {"ansible_winrm_server_cert_validation": "ignore", "winrm_allow_insecure": True},
    ],
)
def test_settings_that_keep_the_checks_pass(vars: dict[str, Any]) -> None:
    refuse_loosened_checks([host(**vars)])
