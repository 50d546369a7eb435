"""Secrets made on a worker come back sealed to the run's key (toolkit.secrets.sealed)."""

from __future__ import annotations

import base64
import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.secrets.credentials import Secret
from toolkit.secrets.handover import Handover
from toolkit.secrets.sealed import RunKey, seal_handovers

CANARY = "Canary-7Qx!sealed-handover"


def made(host: str = "ws-042", to_file: str | None = None) -> Handover:
    return Handover(host, "new password for jdoe", Secret(CANARY, "generated password"), to_file)


def test_a_sealed_handover_opens_with_the_run_key_only() -> None:
    key = RunKey()
    rows = seal_handovers([made(to_file="/root/jdoe.pw")], key.public)
    wire = json.dumps(rows)  # what crosses the broker and sits in the result backend
    assert CANARY not in wire and "jdoe" not in wire
    assert CANARY.encode() not in base64.b64decode(rows[0]["sealed"])
    opened = key.open(rows[0])
    assert (opened.host, opened.label, opened.to_file) == (
        "ws-042",
        "new password for jdoe",
        "/root/jdoe.pw",
    )
    assert opened.secret.reveal() == CANARY
    with pytest.raises(ToolkitError, match="ws-042: a secret made on the worker could not be"):
        RunKey().open(rows[0])  # another run's key: nothing to read


def test_each_box_is_fresh_and_names_its_own_host() -> None:
    """Two seals of one secret differ (an ephemeral sender key per box), and a box moved onto
    another host's row still opens as the host sealed inside it."""
    key = RunKey()
    a, b = seal_handovers([made("ws-001"), made("ws-001")], key.public)
    assert a["sealed"] != b["sealed"]
    moved = {"host": "ws-999", "sealed": a["sealed"]}
    assert key.open(moved).host == "ws-001"


@pytest.mark.parametrize("sealed", ["", "not base64!", base64.b64encode(b"x" * 80).decode()])
def test_a_damaged_box_is_an_error_not_silence(sealed: str) -> None:
    with pytest.raises(ToolkitError, match="could not be opened here"):
        RunKey().open({"host": "ws-042", "sealed": sealed})


def test_a_bad_public_key_is_refused() -> None:
    with pytest.raises(ToolkitError, match="not a public key"):
        seal_handovers([made()], "AAAA")
