"""Where arqond may send a webhook: only to destinations an administrator listed.

A webhook makes arqond itself open a connection, so without a rule any client could aim it at
arqond's own ports, at a service on 127.0.0.1, or at 169.254.169.254 (server-side request
forgery). ``webhooks.allowed_destinations`` lists what may be reached:

- an origin pattern, ``scheme://host:port`` with ``*`` wildcards (``https://*.example.com:*``;
  without a port the scheme's default port is meant);
- a network, ``10.1.0.0/16`` or ``fd00::/8``: any destination whose addresses are all in it.

A destination that resolves to a loopback, private, link-local, multicast, reserved or
unspecified address passes only when it is named exactly (an origin pattern without wildcards
in its host) or its addresses are in a listed network: a wildcard never opens the inside. The
check runs at registration with what is known then (an address literal, ``localhost``) and
again at every delivery with the addresses the name resolves to, and the POST goes to the
address that was checked, so a name cannot be re-pointed in between.
"""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase
from typing import Iterable, Sequence
from urllib.parse import SplitResult

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
LOCAL_NAMES = ("localhost", "localhost.localdomain")


def _pattern(entry: str) -> tuple[str, str, str]:
    """An origin pattern as (scheme, host, port), its port made explicit."""
    scheme, _, rest = entry.lower().rstrip("/").partition("://")
    host, colon, port = rest.rpartition(":")
    if not colon or not (port.isdigit() or port == "*"):
        host, port = rest, str(DEFAULT_PORTS.get(scheme, "*"))
    return scheme, host.strip("[]"), port


def check_entries(entries: Sequence[str]) -> str | None:
    """A complaint about the first unusable allow-list entry, or None (for the config)."""
    for entry in entries:
        if "://" in entry:
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return f"{entry!r} is neither scheme://host:port nor a network such as 10.0.0.0/8"
    return None


def _is_inside(address: Address) -> bool:
    return not address.is_global or address.is_multicast


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def refusal(parts: SplitResult, addresses: Iterable[Address],
            allowed: Sequence[str]) -> str | None:
    """Why arqond may not POST to ``parts`` at ``addresses`` (None: it may). ``addresses``
    is empty at registration for a name not yet resolved."""
    host = (parts.hostname or "").lower()
    port = str(parts.port or DEFAULT_PORTS[parts.scheme])
    origin = f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    addresses = list(addresses)
    literal = _literal(host)
    if literal is not None:
        addresses.append(literal)
    networks = [ipaddress.ip_network(e, strict=False) for e in allowed if "://" not in e]
    matched = [pattern for pattern in map(_pattern, (e for e in allowed if "://" in e))
               if fnmatchcase(parts.scheme, pattern[0]) and fnmatchcase(host, pattern[1])
               and fnmatchcase(port, pattern[2])]
    in_networks = bool(addresses) and all(any(a in n for n in networks) for a in addresses)
    if not matched and not in_networks:
        return (f"{origin} is not in webhooks.allowed_destinations; an administrator must "
                "list it")
    exact = any("*" not in pattern[1] for pattern in matched)
    inside = host in LOCAL_NAMES or host.endswith(".localhost") or \
        any(_is_inside(a) for a in addresses)
    if inside and not exact and not in_networks:
        return (f"{origin} is a loopback, private or link-local destination; it must be "
                "listed exactly (no wildcard) or by network in webhooks.allowed_destinations")
    return None
