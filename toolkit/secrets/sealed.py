"""Secrets a worker made for the engineer, sealed to the run that asked for them.

A generated password made on a site's worker must reach the engineer at the controller, but the
broker and the result backend (RabbitMQ, Redis) are shared infrastructure that keep messages
in clear, and the ledger must never hold the secret. So each distributed run makes a key pair in
the controller's memory (`RunKey`; never written anywhere) and sends only its public half with
the jobs. A worker seals each handover to it (`seal_handovers`: libsodium's sealed box through
PyNaCl — X25519, XSalsa20-Poly1305, an ephemeral sender key per box), so what crosses the broker
opens only with the run's private key, which dies with the command. The host, label and file of
a handover travel inside the box, so a box moved onto another host's result still names its own.

A sealed box proves secrecy, not who sealed it (anyone holding the public key can make one): the
worker's ledger record carries the password's salted fingerprint, which the engineer's copy can
be checked against.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.secrets.credentials import Secret
from toolkit.secrets.handover import Handover


class RunKey:
    """The controller's key pair for one distributed run (in memory only)."""

    def __init__(self) -> None:
        from nacl.public import PrivateKey

        self._private = PrivateKey.generate()

    @property
    def public(self) -> str:
        return base64.b64encode(bytes(self._private.public_key)).decode()

    def open(self, row: Mapping[str, Any]) -> Handover:
        """One handover a worker sealed to this run. A box that does not open is an error:
        the engineer must hear that a secret was made and lost, not silence."""
        from nacl.exceptions import CryptoError
        from nacl.public import SealedBox

        try:
            sealed = base64.b64decode(str(row.get("sealed", "")), validate=True)
            inner = json.loads(SealedBox(self._private).decrypt(sealed))
            label = str(inner["label"])
            return Handover(
                str(inner["host"]), label, Secret(str(inner["secret"]), label),
                str(inner["to_file"]) if inner.get("to_file") else None,
            )  # fmt: skip
        except (CryptoError, ValueError, KeyError, TypeError):
            raise ToolkitError(
                f"{row.get('host', '?')}: a secret made on the worker could not be opened here "
                "(not sealed to this run, or damaged on the way); the host has it already",
                hint="reset it again (from this controller, or with -p output_file=…)",
            ) from None


def seal_handovers(handovers: Iterable[Handover], public: str) -> list[dict[str, str]]:
    """Each handover sealed to the run's public key, for the job's result."""
    from nacl.public import PublicKey, SealedBox

    try:
        box = SealedBox(PublicKey(base64.b64decode(public, validate=True)))
    except Exception:
        raise ToolkitError("the job's handover key is not a public key") from None
    sealed = []
    for h in handovers:
        inner = {
            "host": h.host,
            "label": h.label,
            "secret": h.secret.reveal(),
            "to_file": h.to_file,
        }
        blob = box.encrypt(json.dumps(inner).encode())
        sealed.append({"host": h.host, "sealed": base64.b64encode(blob).decode()})
    return sealed
