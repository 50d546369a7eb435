"""LDAP filters and DNs built from values safely: RFC 4515 filter escaping, RFC 4514 DN escaping.

Every value that reaches a directory search goes through `eq()` (or `escape_filter`), never
string formatting, so a user name such as `*)(uid=*` matches nothing instead of everything; every
DN that itops composes from a value goes through `escape_dn_value`. Names are validated first
(`check_account`), so most hostile text is refused before anything connects; the escaping is the
second, independent layer (tests/unit/test_ldapsafe.py tries the injections against both).

The escaping is python-ldap's (`ldap.filter.escape_filter_chars`, `ldap.dn.escape_dn_chars`),
imported on first use through `python_ldap()`; DN syntax checks use `ldap.dn.str2dn`.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from toolkit.errors import ValidationError

# sAMAccountName (≤ 20 chars on AD, none of "/\[]:;|=,+*?<>@), a POSIX uid, or a UPN user@domain.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
ACCOUNT = rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,63}}(@{_LABEL}(\.{_LABEL})*)?"
_ACCOUNT = re.compile(ACCOUNT)
# A group's name (cn / sAMAccountName): words with spaces allowed, no control characters.
_GROUP = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


_IMPORTING = threading.Lock()


def python_ldap() -> Any:
    """python-ldap with `ldap.dn` and `ldap.filter` loaded: every use in itops comes through here.

    Its modules import each other in a cycle (`ldap` → `ldap.functions` → `ldap.dn` → `ldap`), so
    two threads that import it first at the same moment get ImportError from a half-initialized
    module; a fan-out's first directory hosts do exactly that. One lock makes the first import
    whole before any thread uses it; afterwards the imports are dictionary lookups."""
    with _IMPORTING:
        import ldap
        import ldap.dn
        import ldap.filter
    return ldap


def check_account(value: str, what: str = "account") -> str:
    if not _ACCOUNT.fullmatch(value):
        raise ValidationError(
            f"{what} {value!r} is not an account name",
            hint="a sAMAccountName or uid (letters, digits, . _ -) or a UPN such as jdoe@corp.example",
        )
    return value


def check_group(value: str, what: str = "group") -> str:
    if not _GROUP.fullmatch(value) or value != value.strip():
        raise ValidationError(
            f"{what} {value!r} is not a group name",
            hint="the group's cn or sAMAccountName, e.g. 'VPN Users'",
        )
    return value


def escape_filter(value: str) -> str:
    """RFC 4515: `\\`, `*`, `(`, `)` and NUL as `\\hh` (python-ldap's escape_filter_chars)."""
    return str(python_ldap().filter.escape_filter_chars(value, escape_mode=0))


def eq(attribute: str, value: str) -> str:
    """`(attribute=value)` with the value escaped; the attribute must be an attribute name."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*(;[A-Za-z0-9-]+)*|[0-9]+(\.[0-9]+)+", attribute):
        raise ValueError(f"invalid LDAP attribute name {attribute!r}")
    return f"({attribute}={escape_filter(value)})"


# Active Directory's LDAP_MATCHING_RULE_IN_CHAIN: the attribute's DN links followed transitively
IN_CHAIN = "1.2.840.113556.1.4.1941"


def in_chain(attribute: str, dn: str) -> str:
    """`(attribute:1.2.840.113556.1.4.1941:=dn)` with the DN escaped as a filter value: on Active
    Directory, `in_chain("member", user_dn)` matches the groups the user is in through nested
    groups too (not the primary group, which memberOf and member never hold)."""
    return eq(attribute, dn).replace("=", f":{IN_CHAIN}:=", 1)


def all_of(*filters: str) -> str:
    return f"(&{''.join(filters)})"


def any_of(*filters: str) -> str:
    return f"(|{''.join(filters)})"


def escape_dn_value(value: str) -> str:
    """RFC 4514: one attribute value made safe inside a DN (python-ldap's escape_dn_chars)."""
    return str(python_ldap().dn.escape_dn_chars(value))


def check_dn(value: str, what: str = "DN") -> str:
    """Refuse text that is not one well-formed DN (RFC 4514)."""
    ldap = python_ldap()
    try:
        parts = ldap.dn.str2dn(value)
    except ldap.DECODING_ERROR:
        raise ValidationError(f"{what} {value!r} is not a valid distinguished name") from None
    if not parts or "\x00" in value:
        raise ValidationError(f"{what} {value!r} is not a valid distinguished name")
    return value


def rdn_value(dn: str) -> str:
    """The first RDN's value of a DN (`CN=Domain Admins,CN=Users,…` → `Domain Admins`)."""
    ldap = python_ldap()
    try:
        return str(ldap.dn.str2dn(dn)[0][0][1])
    except (ldap.DECODING_ERROR, IndexError):
        return dn
