"""One rest-hook notification: an HTTP POST to an endpoint a patient chose, kept on a short leash.

The endpoint is any URL a client wrote, so the request is bounded on every side: a timeout on
connecting and on each read, a deadline for the whole exchange (an endpoint answering a byte at a
time would otherwise hold the job, and every other patient's alerts, for as long as it likes),
redirects not followed (a 3xx is a failure: the notification was not
taken), the response body ignored beyond a few bytes, and the server's own networks out of reach —
the host name is resolved once, the connection goes to that vetted address only (a second lookup
could answer otherwise), and loopback, private, link-local and other non-global addresses are
refused, unless the operator allowed clear HTTP to loopback for a local relay
(``DMP_SUBSCRIPTION_ALLOW_HTTP``). TLS certificates are verified against the host name.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
from urllib.parse import urlsplit

TIMEOUT = 10.0  # seconds, to connect and for each read
DEADLINE = 30.0  # seconds for the whole exchange
MAX_RESPONSE = 1024  # bytes of the answer read before closing: its content means nothing here
USER_AGENT = "dmp-server alerts"

Address = tuple[str, int]


class DeliveryError(Exception):
    """The endpoint did not take the notification; the outbox keeps it for a later try."""


def post(
    url: str,
    headers: tuple[tuple[str, str], ...],
    body: bytes | None,
    content_type: str | None,
    *,
    allow_loopback: bool,
    timeout: float = TIMEOUT,
    deadline: float = DEADLINE,
) -> None:
    """POST ``body`` (or nothing) to ``url``; :class:`DeliveryError` unless it answers 2xx."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    address = _vetted_address(host, port, allow_loopback)
    connection: http.client.HTTPConnection = (
        _PinnedHttps(host, port, address, timeout) if https else _PinnedHttp(host, port, address, timeout)
    )
    sent = {"User-Agent": USER_AGENT, **dict(headers)}
    if content_type:
        sent["Content-Type"] = content_type
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    overdue = threading.Event()
    watchdog = threading.Timer(deadline, _cut, (connection, overdue))
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target, body=body or b"", headers=sent)
        response = connection.getresponse()
        response.read(MAX_RESPONSE)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        if overdue.is_set():
            raise DeliveryError(f"the endpoint took longer than {deadline:g} s to answer") from exc
        raise DeliveryError(f"the endpoint could not be reached: {exc or type(exc).__name__}") from exc
    finally:
        watchdog.cancel()
        connection.close()
    if not 200 <= status < 300:
        raise DeliveryError(f"the endpoint answered HTTP {status}")


def _cut(connection: http.client.HTTPConnection, overdue: threading.Event) -> None:
    """The deadline passed: shut the socket down, which wakes the blocked read with an error."""
    overdue.set()
    sock = connection.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _vetted_address(host: str, port: int, allow_loopback: bool) -> Address:
    """The first address of ``host`` the server may connect to (see the module's docstring)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryError(f"the endpoint's host could not be resolved: {exc}") from exc
    for _family, _type, _proto, _name, sockaddr in found:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_global or (allow_loopback and ip.is_loopback):
            return str(ip), port
    raise DeliveryError("the endpoint's host has no public address")


class _PinnedHttp(http.client.HTTPConnection):
    """Plain HTTP to the vetted address (only ever loopback, see :func:`_vetted_address`)."""

    def __init__(self, host: str, port: int, address: Address, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection(self._address, self.timeout)


class _PinnedHttps(http.client.HTTPSConnection):
    """TLS to the vetted address, the certificate checked against the URL's host name."""

    def __init__(self, host: str, port: int, address: Address, timeout: float):
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection(self._address, self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
