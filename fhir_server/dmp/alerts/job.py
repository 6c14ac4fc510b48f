"""The ``alerts`` job: deliver what the outbox holds for patients and subscribers.

Run every ``DMP_JOBS_INTERVAL`` seconds by ``dmp-server serve``, or by ``dmp-server jobs --only
alerts``. A message is acknowledged only once delivered (or once there is nothing left to say), so
a run that stops half-way, or a mail server that is down, loses nothing: the rest is due again at
a later run, after the backoff of :mod:`fhir_server.dmp.alerts.retry` for those that failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.dmp.alerts.documents import deliver_documents
from fhir_server.dmp.alerts.emergency import deliver_emergencies

if TYPE_CHECKING:
    from fhir_server.dmp.jobs import JobContext


def alerts(context: JobContext) -> int:
    """Emergency-access e-mails (R5), then new-document notifications (R22); how many went out."""
    return deliver_emergencies(context) + deliver_documents(context)
