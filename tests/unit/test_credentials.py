"""Secrets mask themselves; references resolve; the redactor catches every form a secret takes."""

from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import pytest

from toolkit.errors import ValidationError
from toolkit.secrets.credentials import (
    MASK,
    CredentialStore,
    Redactor,
    Secret,
    is_reference,
    resolve,
)

CANARY = "Canary'pw\"$x"


def test_secret_never_shows_itself() -> None:
    s = Secret(CANARY, "db")
    assert CANARY not in repr(s) and CANARY not in str(s) and CANARY not in f"{s}"
    assert s.reveal() == CANARY
    with pytest.raises(TypeError):
        pickle.dumps(s)


def test_references_resolve_from_env_and_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ITOPS_T_SECRET", CANARY)
    assert resolve("env:ITOPS_T_SECRET").reveal() == CANARY
    f = tmp_path / "pw"
    f.write_text(CANARY + "\n")
    f.chmod(0o644)
    with pytest.raises(ValidationError, match="readable by others"):
        resolve(f"file:{f}")
    f.chmod(0o600)
    assert resolve(f"file:{f}").reveal() == CANARY


def test_unresolvable_references_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ITOPS_T_MISSING", raising=False)
    with pytest.raises(ValidationError, match="not set"):
        resolve("env:ITOPS_T_MISSING")
    with pytest.raises(ValidationError, match="not interactive"):
        resolve("prompt")
    with pytest.raises(ValidationError, match="reference"):
        resolve("hunter2")
    assert is_reference("env:X") and is_reference("prompt") and not is_reference("hunter2")


@pytest.mark.parametrize("value", ["stdin", "prompt", "prompt:Admin password", "keyring:it/root"])
def test_references_are_recognised(value: str) -> None:
    assert is_reference(value)


@pytest.mark.parametrize("value", ["stdinS3cret", "promptly-Hunter2", "prompt-1", "env", "file"])
def test_a_password_that_merely_starts_like_a_reference_is_a_password(value: str) -> None:
    # Taken for a reference, it would pass the inventory's plaintext check and reach the ledger
    # (a risky run's approval request records its parameters).
    assert not is_reference(value)
    with pytest.raises(ValidationError, match="not a credential reference"):
        resolve(value)


def test_redactor_masks_raw_quoted_and_json_forms() -> None:
    r = Redactor([Secret(CANARY)])
    for form in (CANARY, shlex.quote(CANARY), json.dumps(CANARY)[1:-1]):
        assert r.mask(f"before {form} after") == f"before {MASK} after"
    nested = r.mask_data({"a": [CANARY, {"b": f"x{CANARY}y"}], "c": Secret("other")})
    assert CANARY not in json.dumps(nested)


def test_stream_masker_catches_a_secret_split_across_chunks() -> None:
    r = Redactor(["SuperSecret42"])
    stream = r.stream()
    out = (
        stream.feed("login: Super")
        + stream.feed("Secr")
        + stream.feed("et42 ok\n")
        + stream.flush()
    )
    assert out == f"login: {MASK} ok\n"


def test_credential_store_registers_every_resolved_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITOPS_T_SECRET", CANARY)
    store = CredentialStore(Redactor())
    store.resolve("env:ITOPS_T_SECRET")
    assert store.redactor.mask(CANARY) == MASK


def test_the_longest_registered_form_is_kept_as_values_are_added() -> None:
    r = Redactor()
    assert r.longest == 0
    r.add(Secret("short"))
    r.add(Secret("a'much-longer-one"))  # its shell-quoted form is longer still
    assert r.longest == len("'a'\"'\"'much-longer-one'")
