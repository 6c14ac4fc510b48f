"""A document's uniqueId is unique: IHE ITI-65 submissions checked against the registry.

MHD maps ``DocumentReference.masterIdentifier`` to the XDS DocumentEntry.uniqueId, which the XDS
Document Registry keeps unique (ITI TF-3 4.2.3.2.26). The registry's rule for a DocumentEntry
whose uniqueId is already registered (ITI-42, error codes of ITI TF-3 Table 4.2.4.1-2) is followed
here as an ITI-65 Document Recipient grouped with a registry would:

- same uniqueId, **different** content: refused — ``XDSNonIdenticalHash`` when the SHA-1 differs,
  ``XDSNonIdenticalSize`` when the size does; two documents of one submission with one uniqueId:
  ``XDSRegistryDuplicateUniqueIdInMessage``;
- same uniqueId, **identical** content (same hash and size): accepted, as XDS accepts the same
  document registered again (e.g. in another submission set).

The refusal is 422, issue code ``duplicate`` (the FHIR issue type for "an attempt was made to
create a duplicate record"), the XDS error code in ``details.text`` and the diagnostics. It never
names the registered document nor its patient: the caller learns that the uniqueId is taken, which
the source that minted it is the one to know, and nothing more.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fhirmodel.errors import FhirError, outcome_issue
from storage.interface import Gone, NotFound, Store
from storage.query import OPEN_SCOPE, Query, Token

#: Registered documents looked at per uniqueId: one in practice, a few re-registrations at most.
MAX_SAME_ID = 20


@dataclass(frozen=True)
class Submitted:
    """One document of a submission: where it is, its uniqueId, its content's SHA-1 and size."""

    where: str  # Bundle.entry[i].resource
    system: str
    value: str
    sha1: str  # base64, as R4 Attachment.hash
    size: int


def submitted(where: str, document: dict[str, Any], data: bytes) -> Submitted | None:
    """The uniqueId facts of a document whose content is ``data``; None without a uniqueId."""
    master = document.get("masterIdentifier")
    if not isinstance(master, dict) or not isinstance(master.get("value"), str):
        return None
    sha1 = base64.b64encode(hashlib.sha1(data).digest()).decode()
    return Submitted(where, str(master.get("system", "")), master["value"], sha1, len(data))


def check_unique_ids(store: Store, documents: Iterable[Submitted]) -> None:
    """Refuse (422) a submission whose documents reuse a uniqueId with other content."""
    issues = []
    seen: dict[tuple[str, str], Submitted] = {}
    for doc in documents:
        key = (doc.system, doc.value)
        first = seen.setdefault(key, doc)
        if first is not doc and (first.sha1, first.size) != (doc.sha1, doc.size):
            issues.append(_issue(doc, "XDSRegistryDuplicateUniqueIdInMessage", f"{first.where} has it too"))
            continue
        for registered in _registered(store, doc):
            code = _difference(store, registered, doc)
            if code:
                issues.append(_issue(doc, code, "a document registered here has it, with other content"))
                break
    if issues:
        first_issue = issues[0]
        raise FhirError(
            422, first_issue["diagnostics"], "duplicate", expression=first_issue["expression"], issues=issues
        )


def _registered(store: Store, doc: Submitted) -> list[dict[str, Any]]:
    """The documents already registered under this uniqueId, whoever's (uniqueness is global)."""
    found = store.search(
        Query("DocumentReference", Token("identifier", doc.system, doc.value), count=MAX_SAME_ID, total=False),
        OPEN_SCOPE,
    )
    return [stored.json() for stored in found.matches]


def _difference(store: Store, registered: dict[str, Any], doc: Submitted) -> str | None:
    """The XDS error code telling ``registered``'s content from ``doc``'s; None when identical.
    Where the registered attachment gives no hash or size, its stored Binary says."""
    for content in registered.get("content") or []:
        attachment = (content or {}).get("attachment") or {}
        sha1, size = attachment.get("hash"), attachment.get("size")
        if sha1 is None or size is None:
            inline = attachment.get("data")
            data = _decoded(inline) if inline is not None else _binary_data(store, str(attachment.get("url", "")))
            if data is not None:
                sha1 = sha1 or base64.b64encode(hashlib.sha1(data).digest()).decode()
                size = len(data) if size is None else size
        if sha1 is not None and sha1 != doc.sha1:
            return "XDSNonIdenticalHash"
        if size is not None and size != doc.size:
            return "XDSNonIdenticalSize"
    return None


def _binary_data(store: Store, url: str) -> bytes | None:
    """The bytes of the stored Binary an attachment url ends with, if any."""
    parts = url.rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != "Binary":
        return None
    try:
        return _decoded(store.read("Binary", parts[-1], OPEN_SCOPE).json().get("data"))
    except (NotFound, Gone):
        return None


def _decoded(raw: Any) -> bytes | None:
    try:
        return base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
    except ValueError:
        return None


def _issue(doc: Submitted, code: str, why: str) -> dict[str, Any]:
    where = f"{doc.where}.masterIdentifier"
    message = f"{where}: the uniqueId {doc.value} is already used ({why}): {code} (IHE ITI-42, MHD ITI-65)"
    issue = outcome_issue("error", "duplicate", message, [where])
    issue["details"] = {"text": code}
    return issue
