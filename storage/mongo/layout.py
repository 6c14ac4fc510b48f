"""The MongoDB layout: collections, the documents they hold, their indexes and shard keys.

One document per resource in ``resources`` holds the current version (sealed content) and, like
the SQLite index tables, its typed search-index values: one array per value type (``tok``,
``str``, ``date``, ``num``, ``qty``, ``ref``, ``uri``), one sub-document per value, each starting
with the parameter name ``p``. A query matches one value with ``$elemMatch`` on a compound
multikey index (parameter first, then the value), which is the SQLite "search" index turned
into a MongoDB one. ``versions`` holds every version. Both carry the **patient key** ``pkey``
(see :func:`patient_key`) and are meant to be sharded on ``{pkey: "hashed"}``: a patient's record
lives on one shard, and a search that names the patient goes to that shard only.
"""

from __future__ import annotations

from typing import Any

from fhirmodel.indexing import (
    DateValue,
    IndexValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)

SCHEMA_VERSION = 1

RESOURCES = "resources"
VERSIONS = "versions"
COUNTERS = "counters"
PAGING = "paging"
OUTBOX = "outbox"
RECORDS = "records"
META = "meta"

#: Collections sharded on the patient key; the others are small or per-server and stay unsharded.
SHARDED = (RESOURCES, VERSIONS)

#: The array of index values for each search-parameter type.
FIELD_OF_TYPE = {
    "token": "tok",
    "string": "str",
    "date": "date",
    "number": "num",
    "quantity": "qty",
    "reference": "ref",
    "uri": "uri",
}
#: Each resource's sort keys: ``srt.<param>.a`` (the lowest value: ascending order) and
#: ``srt.<param>.d`` (the highest: descending), R4 §3.1.1.5.6, computed when it is written so that
#: ``_sort`` is a plain indexed sort rather than an aggregation over the index arrays.
SORT_KEYS = "srt"
INDEX_FIELDS = (*FIELD_OF_TYPE.values(), SORT_KEYS)

#: Where the sort value is in an entry of each index array: (ascending, descending).
SORT_FIELD: dict[str, tuple[str, str]] = {
    "tok": ("c", "c"),
    "str": ("n", "n"),
    "date": ("lo", "hi"),
    "num": ("v", "v"),
    "qty": ("v", "v"),
    "ref": ("ti", "ti"),
    "uri": ("v", "v"),
}

#: The patient key of resources outside any patient's record (the directory: Practitioner,
#: Organization...): one value, so that with a hashed shard key they all live in one chunk on
#: one shard, as an unsharded collection would, and a chain to a practitioner reads one shard.
DIRECTORY_KEY = ""

#: The reference parameters that put a resource in a patient's record, in order of preference
#: (R4 CompartmentDefinition ``patient``: every served type but the Patient itself links to it
#: through one of these). A resource with neither is placed by its own key (content) or in the
#: directory (see :func:`patient_key`).
PATIENT_PARAMS = ("patient", "subject")

#: Types stored under their own key rather than in the directory: content (documents' bytes),
#: too large and too many to gather on one shard.
SELF_KEYED_TYPES = frozenset({"Binary", "Bundle"})

#: Indexes of each collection: (name, keys, options). Written once here so that the store creates
#: them and ``docs/mongodb.md`` lists the same.
INDEXES: dict[str, list[tuple[str, list[tuple[str, Any]], dict[str, Any]]]] = {
    RESOURCES: [
        ("by_type", [("type", 1), ("deleted", 1), ("pk", 1)], {}),
        ("by_pk", [("pk", 1)], {}),
        ("tok_search", [("tok.p", 1), ("tok.c", 1), ("tok.s", 1)], {}),
        ("tok_text", [("tok.p", 1), ("tok.t", 1)], {}),
        ("str_search", [("str.p", 1), ("str.n", 1)], {}),
        ("str_exact", [("str.p", 1), ("str.e", 1)], {}),
        ("date_search", [("date.p", 1), ("date.lo", 1), ("date.hi", 1)], {}),
        ("num_search", [("num.p", 1), ("num.v", 1)], {}),
        ("qty_search", [("qty.p", 1), ("qty.v", 1)], {}),
        ("ref_search", [("ref.p", 1), ("ref.ti", 1), ("ref.tt", 1)], {}),
        ("ref_target", [("ref.k", 1), ("ref.p", 1)], {}),
        ("ref_url", [("ref.p", 1), ("ref.u", 1)], {}),
        ("ref_ident", [("ref.p", 1), ("ref.iv", 1)], {}),
        ("uri_search", [("uri.p", 1), ("uri.v", 1)], {}),
        ("kid", [("kid", 1)], {}),
    ],
    VERSIONS: [
        ("by_resource", [("res", 1), ("version", 1)], {}),
        ("by_time", [("updated", 1)], {}),
        ("kid", [("kid", 1)], {}),
    ],
    PAGING: [("expiry", [("expire_at", 1)], {"expireAfterSeconds": 0})],
    OUTBOX: [("pending", [("topic", 1), ("_id", 1)], {})],
    RECORDS: [("by_kind", [("kind", 1), ("key", 1)], {}), ("expires", [("expires", 1)], {"sparse": True})],
}


def resource_key(resource_type: str, resource_id: str) -> str:
    """The ``_id`` of a resource's document, also what a reference value's ``k`` holds."""
    return f"{resource_type}/{resource_id}"


def record_key(kind: str, key: str) -> str:
    """The ``_id`` of a private record: kinds are short names without a line break."""
    return f"{kind}\n{key}"


def resource_document(
    pk: int, rtype: str, rid: str, version: int, updated: str, deleted: bool, key: str, sealed: dict[str, Any]
) -> dict[str, Any]:
    """A resource's document, but for its index (``sealed``: ``content`` and its ``kid``)."""
    head = {"_id": resource_key(rtype, rid), "pk": pk, "type": rtype, "id": rid, "version": version}
    return {**head, "updated": updated, "deleted": deleted, "pkey": key, **sealed}


def version_document(
    seq: int, pk: int, rtype: str, rid: str, version: int, updated: str, method: str, key: str, sealed: dict[str, Any]
) -> dict[str, Any]:
    """One version's document, kept with its resource's patient key."""
    head = {"_id": seq, "res": pk, "type": rtype, "id": rid, "version": version}
    return {**head, "updated": updated, "method": method, "pkey": key, **sealed}


def index_document(index: dict[str, list[IndexValue]]) -> dict[str, Any]:
    """The index arrays and sort keys of a resource's document, from the indexer's typed values."""
    arrays: dict[str, Any] = {name: [] for name in FIELD_OF_TYPE.values()}
    sort: dict[str, dict[str, Any]] = {}
    for param, values in index.items():
        lows, highs = [], []
        for value in values:
            name, entry = _entry(value)
            arrays[name].append({"p": param, **entry})
            low, high = SORT_FIELD[name]
            lows += [entry[low]] if entry[low] is not None else []
            highs += [entry[high]] if entry[high] is not None else []
        if lows and "." not in param and not param.startswith("$"):  # contained names are never sorted on
            sort[param] = {"a": min(lows), "d": max(highs)}
    arrays[SORT_KEYS] = sort
    return arrays


def _entry(value: IndexValue) -> tuple[str, dict[str, Any]]:
    match value:
        case TokenValue(system, code, text):
            return "tok", {"s": system, "c": code, "t": text}
        case StringValue(norm, exact):
            return "str", {"n": norm, "e": exact}
        case DateValue(low, high):
            return "date", {"lo": low, "hi": high}
        case NumberValue(number):
            return "num", {"v": number}
        case QuantityValue(number, system, code):
            return "qty", {"v": number, "s": system, "c": code}
        case ReferenceValue(target_type, target_id, url, id_system, id_value):
            key = resource_key(target_type, target_id) if target_type and target_id else None
            return "ref", {"tt": target_type, "ti": target_id, "k": key, "u": url, "is": id_system, "iv": id_value}
        case UriValue(uri):
            return "uri", {"v": uri}
    raise TypeError(f"not an index value: {value!r}")


#: The patient key of a resource that references several patients (a shared List...): such
#: resources gather under it, and a search naming one patient asks that key's shard too.
SEVERAL_PATIENTS = "*"


def patient_key(resource_type: str, resource_id: str, index: dict[str, list[IndexValue]]) -> str:
    """The shard key of a resource: the id of the patient whose record holds it.

    A Patient is its own record; another resource belongs to the Patient its ``patient`` or
    ``subject`` parameter references: by its id when the reference is literal, else by the
    identifier (``system|value``, as DMP documents may name the INS only: those gather under it,
    apart from the Patient itself). A resource referencing several patients is keyed
    :data:`SEVERAL_PATIENTS`. Content (Binary, Bundle) names no patient and is keyed by itself,
    spread over the shards; the rest (Practitioner, Organization...) is the directory.

    The key is exact so that a search can be routed by it (:func:`shard_hint`): a resource whose
    ``subject`` is ``Patient/x`` is keyed ``x`` or :data:`SEVERAL_PATIENTS`, never anything else.
    """
    if resource_type == "Patient":
        return resource_id
    named = [value for param in PATIENT_PARAMS for value in index.get(param, ()) if isinstance(value, ReferenceValue)]
    # A literal reference decides; the identifier beside it (the same patient's INS) does not count.
    patients = {v.target_id for v in named if v.target_type == "Patient" and v.target_id} or {
        f"{v.identifier_system}|{v.identifier_value}" for v in named if v.target_id is None and v.identifier_value
    }
    if len(patients) == 1:
        return str(patients.pop())
    if patients:
        return SEVERAL_PATIENTS
    if resource_type in SELF_KEYED_TYPES:
        return resource_key(resource_type, resource_id)
    return DIRECTORY_KEY
