"""Who set up a Subscription, kept where no client can write it.

A notification says "a document was added to the DMP": it must never be sent about a document its
recipient could not read (R12 hides some from the patient and the representatives, R13 others
from the representatives only), so delivery judges visibility *as that person*. That needs their
role (``PAT`` or ``LEGREP``) and their identity (the ``sub`` of their token, their INS), which the
Subscription itself cannot be trusted to say: every element of it, extensions included, is what
the last client wrote. The guard therefore keeps them in a private record of the store
(:meth:`storage.interface.Store.put_record`), keyed by the Subscription's id and written in the
transaction of each write of the Subscription. Private records are sealed and unreachable through
the API, so the subscriber cannot be forged; and keeping them out of the resource spares its other
readers (the patient, other representatives) identifiers they did not write.

The subscriber is whoever wrote the Subscription last: they chose where its notifications go. A
representative who points the patient's Subscription at their own address thereby makes it
theirs, and from then on it names only what a representative may see.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from authz.actor import Actor
from authz.scopes import Scopes
from authz.state import Ident
from authz.terms import NORMAL
from storage.interface import Store

KIND = "subscriber"


@dataclass(frozen=True)
class Subscriber:
    role: str  # PAT or LEGREP
    issuer: str
    subject: str  # the ``sub`` of their token: their INS (CONTRACT §2)
    patient: Ident  # the INS of the DMP they subscribed to

    def as_actor(self) -> Actor:
        """The subscriber as the policy judges them: a plain (non-emergency) reader of the DMP,
        with no powers beyond reading its documents."""
        return Actor(
            role=self.role,
            issuer=self.issuer,
            subject=self.subject,
            name=None,
            idnatps=None,
            profession=None,
            specialty=None,
            organization=None,
            purpose=NORMAL,
            patient=self.patient,
            client_id=None,
            scopes=Scopes.parse("patient/DocumentReference.rs"),
            token_id="",
        )


def remember(store: Store, subscription_id: str, actor: Actor) -> None:
    """Record ``actor`` as the subscriber of a Subscription they just wrote (inside its transaction)."""
    assert actor.patient is not None
    value = {"role": actor.role, "issuer": actor.issuer, "subject": actor.subject, "patient": list(actor.patient)}
    store.put_record(KIND, subscription_id, orjson.dumps(value))


def forget(store: Store, subscription_id: str) -> None:
    store.delete_record(KIND, subscription_id)


def recall(store: Store, subscription_id: str) -> Subscriber | None:
    """The subscriber of a Subscription; None when the server never saw one write it."""
    found = store.get_record(KIND, subscription_id)
    if found is None:
        return None
    value = orjson.loads(found[0])
    system, ins = value["patient"]
    return Subscriber(value["role"], value["issuer"], value["subject"], (system, ins))
