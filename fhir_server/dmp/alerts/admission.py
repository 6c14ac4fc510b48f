"""What the server does to a Subscription a client writes (R4 subscription.html, "status").

The client asks (``status`` ``requested``); the server decides: once the channel is one it serves
(:mod:`fhir_server.dmp.alerts.channel`), the Subscription is stored ``active`` straight away, since
there is nothing to wait for (an e-mail address or an https URL is used as given; a failing one
ends in ``error`` after the retries). ``off`` is the client's pause and stays. ``error`` and the
``error`` text are the server's to set: a client sending ``error`` is told to ask again with
``requested``, and an ``error`` text it sends is dropped.

Who may subscribe, and to what criteria, is access control's business (the guard's write check).
"""

from __future__ import annotations

from typing import Any

from fhir_server.dmp.alerts.channel import ChannelError, channel_of
from fhir_server.fhir.service import WriteRule
from fhirmodel.errors import unprocessable

ACTIVE = "active"
OFF = "off"
ERROR = "error"
REQUESTED = "requested"


class SubscriptionAdmission(WriteRule):
    """Every Subscription written is stored as :func:`admit_subscription` makes it."""

    def __init__(self, allow_http: bool):
        self.allow_http = allow_http  # DMP_SUBSCRIPTION_ALLOW_HTTP

    def admit(self, resource: dict[str, Any]) -> dict[str, Any]:
        if resource.get("resourceType") != "Subscription":
            return resource
        return admit_subscription(resource, allow_http=self.allow_http)


def admit_subscription(resource: dict[str, Any], *, allow_http: bool) -> dict[str, Any]:
    """The Subscription as the server stores it; 422 naming the element it cannot serve."""
    try:
        channel_of(resource, allow_http=allow_http)
    except ChannelError as exc:
        raise unprocessable(str(exc), expression=[exc.element]) from None
    status = resource.get("status")
    if status == ERROR:
        raise unprocessable(
            "status error is set by the server; send requested to activate the Subscription again",
            expression=["Subscription.status"],
        )
    admitted = {k: v for k, v in resource.items() if k != "error"}
    admitted["status"] = OFF if status == OFF else ACTIVE
    return admitted
