"""HTTP pieces the desk adapters share: Retry-After read, a TLS failure's reason, a requests
adapter that pins every request's timeout and certificate verification, and the DeskError for a
request that got no answer.

Imports nothing heavy at module level (requests only when `pinned_adapter` is called).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.itsm import DeskError


def retry_after(value: str) -> float | None:
    """Retry-After: delta-seconds or an HTTP date → seconds from now (None if unreadable)."""
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def tls_reason(exc: BaseException) -> str:
    """What the TLS handshake said (not requests' whole retry message with the URL)."""
    import ssl

    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen)
        inner = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
        seen = getattr(seen, "reason", None) or (inner[0] if inner else None) or seen.__context__
    return "certificate verify failed"


def unanswered(
    desk: str, url: str, what: str, exc: BaseException, *, began: float, send: bool
) -> DeskError:
    """A requests failure that is no answer from the desk (`desk`: its product name) as the
    DeskError it is: a certificate not trusted, no answer in time (`began`: time.monotonic() when
    the call started; `send`: the call changes the ticket, so the desk may have done it), or
    unreachable."""
    import requests

    from toolkit.itsm import DeskError, DeskUnavailable

    if isinstance(exc, requests.exceptions.SSLError):
        return DeskError(
            f"{desk} at {url}: its TLS certificate is not trusted ({tls_reason(exc)})",
            hint="for a private CA set [itsm] ca_bundle to its PEM file",
        )
    if isinstance(exc, requests.exceptions.Timeout):
        took = time.monotonic() - began
        return DeskUnavailable(
            f"{desk} at {url} did not answer within {took:.0f} s ({what})",
            maybe_committed=send and not isinstance(exc, requests.exceptions.ConnectTimeout),
        )
    return DeskUnavailable(f"{desk} at {url} is unreachable ({what}): {exc}")


def pinned_adapter(timeout: float, verify: str | bool | None) -> Any:
    """A requests adapter that gives every request a timeout (pysnc and zammad_py pass none) and,
    unless `verify` is None, that certificate verification: requests lets REQUESTS_CA_BUNDLE
    override a session's `verify` when the call passes none (pysnc, jira and zammad_py pass
    none), so `ca_bundle` would be ignored wherever that variable is set. No retries: the outbox
    retries."""
    from requests.adapters import HTTPAdapter

    class Pinned(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = timeout
            if verify is not None:
                kwargs["verify"] = verify
            return super().send(request, **kwargs)

    return Pinned(max_retries=0)
