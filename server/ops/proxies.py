"""The client's address behind trusted reverse proxies (``COLLAB_TRUSTED_PROXIES``).

A request that arrives from a trusted proxy (its peer address is in one of the listed
networks) is attributed to the address that proxy put in ``X-Forwarded-For``: the
rightmost address of the header that is not itself a trusted proxy. A request from any
other peer keeps its peer address, whatever its headers say (a client cannot choose the
address its audit rows record). With no trusted proxy (the default) the header is ignored.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    """Parse ``trusted`` (addresses or CIDR networks); ValueError names a bad entry."""
    parsed: list[Network] = []
    for entry in trusted:
        try:
            parsed.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP address or network: {entry!r}") from exc
    return tuple(parsed)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted: Sequence[str]
) -> str | None:
    """The address to record for a request from ``peer`` carrying ``X-Forwarded-For``."""
    if not trusted or not forwarded_for or peer is None:
        return peer
    nets = networks(tuple(trusted))
    if not _trusted(peer, nets):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, nets):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed header: keep what is known
    return hops[0] if hops else peer


def forwarded_scheme(
    peer: str | None, forwarded_proto: str | None, trusted: Sequence[str]
) -> str | None:
    """The scheme a trusted proxy says the client used (``X-Forwarded-Proto``: ``http`` or
    ``https``; the first of a list), None when the peer is not trusted or says nothing
    usable. Decides the session cookie's Secure flag behind a TLS-terminating proxy."""
    if not trusted or not forwarded_proto or peer is None:
        return None
    if not _trusted(peer, networks(tuple(trusted))):
        return None
    scheme = forwarded_proto.split(",")[0].strip().lower()
    return scheme if scheme in ("http", "https") else None
