"""X.509 distinguished names in the grid's slash form, and a proxy's owner.

Grid configurations write DNs as ``/DC=ch/DC=cern/OU=Users/CN=someone``
(OpenSSL's old one-line form, most significant part first). TLS stacks and
reverse proxies give them differently: Python's ``getpeercert()`` as nested
tuples, nginx's ``$ssl_client_s_dn`` and Apache's ``SSL_CLIENT_S_DN`` as RFC
2253/4514 text (least significant first, comma separated). Everything is
brought to the slash form and compared for equality, never by prefix: the old
vcycle's prefix match let ``/CN=someone`` vouch for ``/CN=someone else``.

A proxy certificate (RFC 3820, or Globus legacy) has its owner's DN plus one
more CN, and is issued by its owner; the identity of a client presenting one
is its issuer. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Attribute names as OpenSSL's one-line form writes them.
_SHORT = {
    "commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
    "localityName": "L", "stateOrProvinceName": "ST", "domainComponent": "DC", "emailAddress": "emailAddress",
    "userId": "UID", "serialNumber": "serialNumber",
}


def from_peercert_name(name: Sequence[Sequence[tuple[str, str]]]) -> str:
    """``getpeercert()['subject']`` (or ``['issuer']``) as a slash-form DN."""
    parts = []
    for rdn in name:
        parts.append("+".join(f"{_SHORT.get(key, key)}={value}" for key, value in rdn))
    return "".join("/" + part for part in parts)


def identity(peercert: dict[str, Any]) -> str | None:
    """The DN a verified client certificate speaks for: its issuer if it is a proxy, else its subject."""
    subject = peercert.get("subject")
    if not subject:
        return None
    dn = from_peercert_name(subject)
    issuer = peercert.get("issuer")
    if issuer:
        owner = from_peercert_name(issuer)
        last = dn[len(owner):]
        if dn.startswith(owner + "/CN=") and "/" not in last[1:]:
            return owner  # a proxy: the owner's DN plus one CN, issued by the owner
    return dn


def _split_unescaped(text: str, separator: str) -> list[str]:
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            pair = value[i + 1:i + 3]
            if len(pair) == 2 and all(c in "0123456789abcdefABCDEF" for c in pair):
                out.append(chr(int(pair, 16)))
                i += 3
                continue
            out.append(value[i + 1])
            i += 2
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def normalise(dn: str) -> str:
    """A DN in slash form, from slash form or RFC 2253/4514 text; '' for an empty one."""
    dn = dn.strip()
    if not dn or dn.startswith("/"):
        return dn
    rdns = [part.strip() for part in _split_unescaped(dn, ",") if part.strip()]
    return "".join("/" + _unescape(rdn) for rdn in reversed(rdns))
