"""The one password generator every reset task uses (Linux, Windows, directories)."""

from __future__ import annotations

from toolkit.remediation.passwords import CLASSES, generate_password


def test_every_class_asked_for_is_in_every_password_and_nothing_else() -> None:
    for _ in range(200):
        value = generate_password(12)
        assert len(value) == 12
        assert all(any(ch in chars for ch in value) for chars in CLASSES.values())
    digits_only = generate_password(16, ["digit"])
    assert digits_only.isdigit() and len(digits_only) == 16


def test_the_alphabet_has_no_lookalikes_and_nothing_a_shell_or_powershell_expands() -> None:
    alphabet = "".join(CLASSES.values())
    assert not set("l1IO0") & set(alphabet)
    assert not set("'\"`$;&|<>(){}[]*\\ ,") & set(alphabet)
