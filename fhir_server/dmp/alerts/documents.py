"""Delivering new-document notifications (R22) to the Subscriptions they were queued for.

Each message names one Subscription and one document. Before anything is sent, everything is
judged again as it stands now: the Subscription still exists and is ``active``; its subscriber
still reaches the DMP (a representative's term may have ended); and the document is among what the
subscriber's own searches return — the policy's filter built for them, so ``INVISIBLE_PATIENT``
(R12) and ``INVISIBLE_REPRESENTANTS_LEGAUX`` (R13) documents, or one deleted since, are never
announced. A message that fails that test is simply dropped: saying nothing is the answer.

Delivery happens outside any store transaction: the database is only touched, briefly, to
acknowledge or defer a message once the network is done with. After a failure, the Subscription's
other messages wait for the next run rather than hitting a dead endpoint again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import orjson

from authz.outbox import SUBSCRIPTION_TOPIC, DocumentEvent
from fhir_server.dmp.alerts import resthook
from fhir_server.dmp.alerts.admission import ACTIVE, ERROR
from fhir_server.dmp.alerts.channel import EMAIL, FHIR_JSON, Channel, ChannelError, channel_of
from fhir_server.dmp.alerts.notices import history_notification, new_document_mail, parse_instant
from fhir_server.dmp.alerts.resthook import DeliveryError
from fhir_server.dmp.alerts.retry import MAX_ATTEMPTS, Retries, epoch
from fhir_server.runtime.mail import Mail, MailError
from storage.interface import Gone, NotFound, Queued, Store, Stored, VersionConflict
from storage.query import ANY_SYSTEM, OPEN_SCOPE, AccessScope, Query, Token

if TYPE_CHECKING:
    from fhir_server.dmp.jobs import JobContext

log = logging.getLogger(__name__)

#: Messages handled per run; the rest are due at the next one.
BATCH = 500

Send = Callable[[], None]


def deliver_documents(context: JobContext) -> int:
    """Send what is due of the ``subscription`` topic; returns how many notifications went out."""
    store, now = context.service.store, context.clock()
    retries = Retries(store, now)
    sent = 0
    failing: set[str] = set()  # Subscriptions whose endpoint failed in this run
    for message in store.pending(SUBSCRIPTION_TOPIC, BATCH, now=epoch(now)):
        try:
            sent += _deliver(context, retries, message, failing)
        except Exception as exc:  # a damaged message or a bug must not block the ones after it
            retries.unexpected(message, exc)
    return sent


def _deliver(context: JobContext, retries: Retries, message: Queued, failing: set[str]) -> int:
    """Handle one message; 1 when a notification went out."""
    event = DocumentEvent.loads(message.payload)
    if event.subscription in failing:
        return 0
    target = _target(context, event, retries.now)
    if target is None:
        retries.done(message)
        return 0
    subscription, send = target
    try:
        send()
    except DeliveryError as exc:
        failing.add(event.subscription)
        if retries.failed(message):
            reason = f"{MAX_ATTEMPTS} deliveries failed, the last one: {exc}"
            _give_up(context.service.store, message, subscription, reason)
        return 0
    retries.done(message)
    return 1


def _target(context: JobContext, event: DocumentEvent, now: datetime) -> tuple[Stored, Send] | None:
    """The Subscription and how to notify it, or None when there is nothing to say (any more)."""
    service = context.service
    try:
        stored = service.store.read("Subscription", event.subscription, OPEN_SCOPE)
    except (NotFound, Gone):
        return None
    subscription = stored.json()
    end = parse_instant(str(subscription.get("end", "")))
    if subscription.get("status") != ACTIVE or (end is not None and end <= now):
        return None
    scope = service.gatekeeper.subscriber_scope(stored.id, now)
    if scope is None or not _visible(service.store, event.document, scope):
        return None
    allow_http = service.config.subscription_allow_http
    try:
        channel = channel_of(subscription, allow_http=allow_http)
    except ChannelError as exc:  # stored under rules since tightened: never usable again
        _give_up(service.store, None, stored, f"the channel is no longer served: {exc}")
        return None
    if channel.type == EMAIL:
        at = parse_instant(event.at) or now
        mail = new_document_mail(channel.endpoint, stored.id, at)
        return stored, lambda: _mail(context, mail)
    body = _hook_body(channel, service.config.base_url, event, now)
    return stored, lambda: resthook.post(
        channel.endpoint,
        channel.headers,
        body,
        FHIR_JSON if body is not None else None,
        allow_loopback=allow_http,
    )


def _visible(store: Store, document_id: str, scope: AccessScope) -> bool:
    """Whether the document is among what the subscriber's own searches return."""
    query = Query("DocumentReference", Token("_id", ANY_SYSTEM, document_id), count=1, total=False)
    return bool(store.search(query, scope).matches)


def _mail(context: JobContext, mail: Mail) -> None:
    try:
        context.mailer.send(mail)
    except MailError as exc:
        raise DeliveryError(str(exc)) from exc


def _hook_body(channel: Channel, base_url: str, event: DocumentEvent, now: datetime) -> bytes | None:
    """R4 rest-hook: no ``payload``, no body (the POST is the notification); with one, the id-only
    ``history`` Bundle."""
    if channel.payload is None:
        return None
    return orjson.dumps(history_notification(base_url, event.document, event.created, now))


def _give_up(store: Store, message: Queued | None, stored: Stored, reason: str) -> None:
    """Drop the message and put the Subscription in ``error`` with the reason, where its owner
    sees it; if they changed it meanwhile, their version stands."""
    subscription = {**stored.json(), "status": ERROR, "error": reason}
    log.warning("Subscription/%s put in error: %s", stored.id, reason)
    with store.transaction():
        if message is not None:
            store.acknowledge(message.id)
        with contextlib.suppress(VersionConflict):
            store.update(subscription, expected_version=stored.version)
