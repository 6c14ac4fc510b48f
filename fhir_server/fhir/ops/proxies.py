"""The client's address behind reverse proxies, believed only from the proxies configured.

``X-Forwarded-For`` is written by whoever sends the request, so taken at face value it lets any
client put any address in the trail (AuditEvent ``source``) and the logs. The address is taken
from it only when the peer is one of ``DMP_TRUSTED_PROXIES``, walking the header from the right
(each proxy appends the address it received from) and stopping at the first address that is not
a trusted proxy: that is the client as the outermost trusted proxy saw it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


class TrustedProxies:
    """WSGI middleware: rewrites ``REMOTE_ADDR`` from ``X-Forwarded-For`` when the peer is trusted,
    so every reader of the client address (the trail, the logs) sees the same one."""

    def __init__(self, app: Any, networks: Iterable[str]):
        self.app = app
        self.networks: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusted(self, text: str | None) -> bool:
        address = _address(text) if text else None
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        if not forwarded_for or not self.trusted(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            if _address(hop) is None:
                break  # a hop that is no address: what lies left of it cannot be trusted either
            client = hop.strip()
            if not self.trusted(client):
                break
        return client

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        client = self.client(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"))
        if client is not None:
            environ["REMOTE_ADDR"] = client
        return self.app(environ, start_response)
