"""Where a Subscription's notifications go (R4 ``Subscription.channel``), as the server accepts it.

Two channel types are served: ``email`` (``endpoint`` ``mailto:``, one address) and ``rest-hook``
(``endpoint`` an ``https://`` URL). Notifications carry ids only, whatever the channel, so that a
document's content never leaves the server by this road: ``payload`` is absent (a bare
notification) or ``application/fhir+json`` (an id-only ``history`` Bundle, rest-hook only; an
e-mail is the same generic French text either way).

The same parse runs when a Subscription is written (a refusal names the element) and again before
each delivery, so a Subscription stored before a rule tightened is not used against it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

EMAIL = "email"
REST_HOOK = "rest-hook"
FHIR_JSON = "application/fhir+json"
#: One plain address: no display name, no list, no header fields (``?subject=``) smuggled in.
_MAILTO = re.compile(r"mailto:([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)")
#: ``Name: value`` (RFC 9110 token, then a value on one line).
_HEADER = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\r\n\x00]*)")
#: Headers the server sets itself, or that would change how the request is framed or routed.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "proxy-authorization",
        "proxy-connection",
    }
)
MAX_HEADERS = 10
MAX_HEADER_LENGTH = 2048
MAX_ENDPOINT_LENGTH = 2048


class ChannelError(ValueError):
    """A channel the server does not serve; ``element`` is the FHIRPath of the culprit."""

    def __init__(self, message: str, element: str):
        super().__init__(message)
        self.element = element


@dataclass(frozen=True)
class Channel:
    type: str  # email | rest-hook
    endpoint: str  # the address (email) or the URL (rest-hook)
    payload: str | None  # None: a bare notification; else application/fhir+json
    headers: tuple[tuple[str, str], ...]  # rest-hook only


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def channel_of(subscription: dict[str, Any], *, allow_http: bool) -> Channel:
    """The channel of ``subscription``, or :class:`ChannelError` naming what the server refuses."""
    channel = subscription.get("channel")
    if not isinstance(channel, dict):
        raise ChannelError("a Subscription needs a channel", "Subscription.channel")
    kind = channel.get("type")
    payload = channel.get("payload")
    if payload not in (None, FHIR_JSON):
        raise ChannelError(
            f"notifications carry ids only: channel.payload is absent or {FHIR_JSON}, not {payload!r}",
            "Subscription.channel.payload",
        )
    endpoint = channel.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint or len(endpoint) > MAX_ENDPOINT_LENGTH:
        raise ChannelError("channel.endpoint is required (mailto: or https://)", "Subscription.channel.endpoint")
    headers = channel.get("header") or []
    if kind == EMAIL:
        match = _MAILTO.fullmatch(endpoint)
        if match is None:
            raise ChannelError(
                "an email channel's endpoint is mailto: and one plain address", "Subscription.channel.endpoint"
            )
        if headers:
            raise ChannelError("an email channel takes no header", "Subscription.channel.header")
        return Channel(EMAIL, match.group(1), payload, ())
    if kind == REST_HOOK:
        _check_url(endpoint, allow_http)
        return Channel(REST_HOOK, endpoint, payload, _headers(headers))
    raise ChannelError(f"channel.type {kind!r} is not served here: email or rest-hook", "Subscription.channel.type")


def _check_url(endpoint: str, allow_http: bool) -> None:
    where = "Subscription.channel.endpoint"
    try:
        url = urlsplit(endpoint)
        url.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        raise ChannelError("channel.endpoint is not a URL", where) from None
    host = url.hostname or ""
    if url.username is not None or url.password is not None:
        raise ChannelError("channel.endpoint carries no credentials: use channel.header", where)
    if not host or url.fragment or any(c in endpoint for c in " \r\n\t"):
        raise ChannelError("channel.endpoint is not a usable URL", where)
    if url.scheme == "https":
        return
    if url.scheme == "http" and allow_http and is_loopback(host):
        return
    raise ChannelError("a rest-hook endpoint is an https:// URL", where)


def _headers(values: Any) -> tuple[tuple[str, str], ...]:
    where = "Subscription.channel.header"
    if not isinstance(values, list) or len(values) > MAX_HEADERS:
        raise ChannelError(f"at most {MAX_HEADERS} channel.header values", where)
    out = []
    for value in values:
        match = _HEADER.fullmatch(value) if isinstance(value, str) and len(value) <= MAX_HEADER_LENGTH else None
        if match is None:
            raise ChannelError("each channel.header is one 'Name: value' line", where)
        name = match.group(1)
        if name.lower() in _RESERVED_HEADERS:
            raise ChannelError(f"channel.header may not set {name}", where)
        out.append((name, match.group(2).strip()))
    return tuple(out)
