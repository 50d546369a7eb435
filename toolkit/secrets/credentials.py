"""Secrets: references that resolve to values, a Secret type that never shows itself, and the redactor.

Inventory and config hold references (`env:VAR`, `keyring:service/user`, `file:/path`, `prompt`,
and for a run's parameters `stdin`: one line read from a pipe), never values. Every value resolved
during a run is registered with the run's Redactor, which masks it in output, logs and ledger
records, however it got there.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import shlex
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from toolkit.errors import ValidationError

MASK = "********"

REFERENCE_SCHEMES = ("env:", "keyring:", "file:", "prompt:")  # each followed by its argument
REFERENCE_WORDS = ("prompt", "stdin")  # whole values
REFERENCE_HINT = (
    "store a reference instead of the value: env:VAR, keyring:service/user, file:/path/0600-file, "
    "prompt or stdin; for SSH prefer a key file (ssh_key) or ssh-agent"
)

# Inventory / config keys whose values are secrets and must therefore be references.
SECRET_KEY_PATTERN = re.compile(
    r"(^|_)(pass|passwd|password|passphrase|secret|token|community|api_key|private_key_pass)$",
    re.IGNORECASE,
)


class Secret:
    """A secret value: masked in repr/str/format, revealed only by an explicit call."""

    __slots__ = ("_value", "label")

    def __init__(self, value: str, label: str = "secret") -> None:
        self._value = value
        self.label = label

    def reveal(self) -> str:
        """The plain value, for the one place that must send it (stdin, an auth call)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.label}={MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(("Secret", self.label))

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def is_reference(value: str) -> bool:
    """True if the value is a credential reference rather than a literal secret."""
    return value in REFERENCE_WORDS or value.startswith(REFERENCE_SCHEMES)


def is_secret_key(key: str) -> bool:
    """True if a config/inventory key names a secret (password, enable secret, token, …)."""
    return bool(SECRET_KEY_PATTERN.search(key))


Prompter = Callable[[str], str]


def resolve(reference: str, *, label: str = "secret", prompter: Prompter | None = None) -> Secret:
    """Turn a reference into a Secret; errors say which reference and what to fix."""
    if reference.startswith("env:"):
        var = reference[4:]
        value = os.environ.get(var)
        if value is None:
            raise ValidationError(
                f"{label}: environment variable {var} is not set", hint=f"export {var}=… first"
            )
        return Secret(value, label)
    if reference.startswith("file:"):
        path = Path(reference[5:]).expanduser()
        try:
            mode = path.stat().st_mode
            value = path.read_text().rstrip("\n")
        except OSError as exc:
            raise ValidationError(f"{label}: cannot read {path}: {exc.strerror}") from exc
        if mode & 0o077:
            raise ValidationError(
                f"{label}: {path} is readable by others", hint=f"chmod 600 {shlex.quote(str(path))}"
            )
        return Secret(value, label)
    if reference.startswith("keyring:"):
        service, _, user = reference[8:].partition("/")
        if not service or not user:
            raise ValidationError(f"{label}: keyring references look like keyring:service/user")
        try:
            import keyring
        except ImportError as exc:
            raise ValidationError(
                f"{label}: keyring support is not installed",
                hint="pip install 'itops-toolkit[keyring]'",
            ) from exc
        value = keyring.get_password(service, user)
        if value is None:
            raise ValidationError(f"{label}: no keyring entry for {service}/{user}")
        return Secret(value, label)
    if reference == "stdin":
        return Secret(_stdin_line(label), label)
    if reference == "prompt" or reference.startswith("prompt:"):
        if prompter is None:
            raise ValidationError(f"{label}: needs a prompt but this run is not interactive")
        return Secret(prompter(reference[7:] or label), label)
    raise ValidationError(f"{label}: not a credential reference", hint=REFERENCE_HINT)


def _stdin_line(label: str) -> str:
    """One line from a piped stdin (`printf '%s\\n' "$PW" | itops fix … -p password=stdin`)."""
    import sys

    if sys.stdin is None or sys.stdin.isatty():
        raise ValidationError(
            f"{label}: stdin is a terminal, not a pipe", hint="use prompt, or pipe the value in"
        )
    line = sys.stdin.readline()
    if not line:
        raise ValidationError(f"{label}: nothing on stdin")
    return line.rstrip("\r\n")


class Redactor:
    """Masks every registered secret value in text and in nested data. Thread-safe."""

    def __init__(self, secrets: Iterable[Secret | str] = ()) -> None:
        self._values: set[str] = set()
        self._longest = 0
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Secret | str) -> None:
        """Register a value, and the forms it takes once quoted for a shell."""
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if not value:
            return
        variants = {
            value,
            shlex.quote(value),
            value.replace("'", "''"),
            json.dumps(value, ensure_ascii=False)[1:-1],
            json.dumps(value)[1:-1],
        }
        with self._lock:
            if variants <= self._values:
                return
            self._values |= {v for v in variants if v}
            ordered = sorted(self._values, key=len, reverse=True)
            self._longest = len(ordered[0])
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    @property
    def longest(self) -> int:
        """The longest registered form (kept by add(), so readers never walk the changing set)."""
        return self._longest

    def mask(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def mask_data(self, data: Any) -> Any:
        """Mask strings anywhere inside dicts, lists and tuples; Secrets become the mask."""
        if isinstance(data, str):
            return self.mask(data)
        if isinstance(data, Secret):
            return MASK
        if isinstance(data, Mapping):
            return {k: self.mask_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.mask_data(v) for v in data]
        return data

    def stream(self) -> StreamMasker:
        return StreamMasker(self)


class StreamMasker:
    """Masks a stream fed in chunks, holding back a tail so a secret split across reads is caught."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""

    def feed(self, chunk: str) -> str:
        """Return the text that is safe to emit now."""
        text = self._redactor.mask(self._pending + chunk)
        keep = max(self._redactor.longest - 1, 0)
        if keep == 0:
            self._pending = ""
            return text
        self._pending = text[-keep:]
        return text[:-keep] if len(text) > keep else ""

    def flush(self) -> str:
        text, self._pending = self._redactor.mask(self._pending), ""
        return text


class CredentialStore:
    """Resolves references once per run and registers every value with the run's Redactor."""

    def __init__(self, redactor: Redactor, prompter: Prompter | None = None) -> None:
        self.redactor = redactor
        self._prompter = prompter
        self._cache: dict[str, Secret] = {}
        self._lock = threading.Lock()

    def resolve(self, reference: str, label: str = "secret") -> Secret:
        with self._lock:
            secret = self._cache.get(reference)
            if secret is None:
                secret = resolve(reference, label=label, prompter=self._prompter)
                self._cache[reference] = secret
                self.redactor.add(secret)
            return secret

    def adopt(self, secret: Secret) -> Secret:
        """Register a secret that did not come from a reference (a generated password)."""
        self.redactor.add(secret)
        return secret
