"""The SQLite layout: current resources, every version, and typed search-index tables.

The index tables follow HAPI FHIR's ``HFJ_SPIDX_*`` idea: one row per indexed value, keyed by the
resource's ``pk``. Each has a "search" index (parameter and value first, ``res`` last, so that
a query can start from the index and fetch few resources) and a ``(res, param)`` index for
probing a candidate resource and for re-indexing on update.

The access trail's index rows live apart, in ``trail_*`` tables of the same shapes (see
:data:`TRAIL`), and so do the documents' and submission sets', in ``rec_*`` (:data:`RECORD`).
"""

from dataclasses import dataclass

SCHEMA_VERSION = 7
#: The first schema whose trail has index tables of its own (:data:`TRAIL`).
FAMILIES_SINCE = 3
#: The first schema whose documents and submission sets have index tables of their own (:data:`RECORD`).
RECORD_SINCE = 7
#: The first schema that defers index rows (``index_pending``, :attr:`IndexFamily.deferred`).
PENDING_SINCE = 5
#: The first schema whose shared ``(res, param)`` indexes cover the values probed (:attr:`IndexFamily.covering`).
COVERING_SINCE = 6

#: The value columns of each kind of index table, after ``res`` and ``param``.
_VALUE_COLUMNS = {
    "token": "system TEXT, code TEXT, text TEXT",
    "string": "norm TEXT NOT NULL, exact TEXT NOT NULL",
    "date": "low INTEGER NOT NULL, high INTEGER NOT NULL",
    "number": "value REAL NOT NULL",
    "quantity": "value REAL NOT NULL, system TEXT, code TEXT",
    "reference": "target_type TEXT, target_id TEXT, url TEXT, id_system TEXT, id_value TEXT",
    "uri": "value TEXT NOT NULL",
}
#: The value columns a *covering* ``(res, param)`` index carries after them (:attr:`IndexFamily.covering`):
#: the ones a condition on a candidate compares, but a token's text and strings and URIs, long and
#: seldom probed.
_PROBED_COLUMNS = {
    "token": "code, system",
    "date": "low, high",
    "number": "value",
    "quantity": "value, system, code",
    "reference": "target_id, target_type, id_value, id_system",
}
#: The kinds of index table whose covering ``(res, param)`` index differs from a plain one.
COVERED_KINDS = tuple(_PROBED_COLUMNS)
#: The kinds of index table, one per kind of value (a composite's values are tokens).
INDEX_KINDS = tuple(_VALUE_COLUMNS)
#: The value columns' names of each kind of index table, as a statement lists them.
COLUMN_NAMES = {
    kind: ", ".join(column.split()[0] for column in columns.split(", ")) for kind, columns in _VALUE_COLUMNS.items()
}


@dataclass(frozen=True)
class IndexFamily:
    """A set of index tables, one per kind: ``{prefix}_{kind}``.

    ``binding``: the reference parameter that binds every search of the family to one patient. Its
    family is *lean*: only what starts such a search has a value index — that parameter's
    references, by target or by identifier (partial indexes on its rows), the ``keys`` (partial
    indexes, each on one parameter's rows: ``(kind, param)``), and dates when ``dated``; any other
    parameter is checked on the candidates those give, by their own rows (the ``(res, param)``
    index every table has). ``None``: every value has one.

    ``deferred``: a resource's index rows are not written with it but kept in ``index_pending``
    and written in batches, before any statement reads the family's tables (the store's
    ``_settle``). Why: one event's rows went into eleven B-trees, each commit wrote a page of
    each, and each reader of another connection found its cache dropped by that commit.

    ``covering``: each ``(res, param)`` index carries the values the conditions on a candidate
    compare (:data:`_PROBED_COLUMNS`), so a probe reads the index alone. Why: the resources of one
    patient are spread over the whole file, and each probe of a candidate read a page of the index
    and a page of the table, neither in the page cache at 1 000 000 documents — a search by
    patient's page query read ~115 pages (each a system call and a page's decryption), ~68 this way.

    ``since``: the first schema that has the family; a database of an earlier one keeps its
    types' rows in :data:`SHARED` until it is upgraded.
    """

    prefix: str
    binding: str | None = None
    keys: tuple[tuple[str, str], ...] = ()
    dated: bool = True
    deferred: bool = False
    covering: bool = False
    since: int = 0

    @property
    def lean(self) -> bool:
        return self.binding is not None

    def table(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    def index(self, name: str) -> str:
        """The name of one of the family's value indexes."""
        return f"{self.prefix}_{name}"

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(self.table(kind) for kind in INDEX_KINDS)

    def keyed(self, param: str) -> bool:
        """Whether a lean family's ``param`` rows have a partial value index of their own."""
        return param == self.binding or any(key == param for _, key in self.keys)

    def target_index(self, param: str) -> str | None:
        """The index from a target to the family's references of ``param``, None when there is none."""
        if not self.lean:
            return self.index("reference_target")
        if param == self.binding:
            return self.index("binding_target")
        return self.index(f"key_{param}") if ("reference", param) in self.keys else None

    def res_index(self, kind: str) -> str:
        """The statement creating the ``(res, param)`` index of the table of ``kind``."""
        probed = _PROBED_COLUMNS.get(kind) if self.covering else None
        columns = f"res, param, {probed}" if probed else "res, param"
        return f"CREATE INDEX IF NOT EXISTS {self.table(kind)}_res ON {self.table(kind)} ({columns});\n"

    def value_indexes(self) -> str:
        """The statements creating a lean family's value indexes (:attr:`binding`, :attr:`keys`, dates)."""
        assert self.binding is not None
        references = self.table("reference")
        where = f"WHERE param = '{self.binding}'"
        statements = [
            f"CREATE INDEX IF NOT EXISTS {self.index('binding_target')} ON {references} (target_id, target_type, res)"
            f" {where};",
            f"CREATE INDEX IF NOT EXISTS {self.index('binding_ident')} ON {references} (id_value, res) {where};",
        ]
        if self.dated:
            search, dates = self.index("date_search"), self.table("date")
            statements.append(f"CREATE INDEX IF NOT EXISTS {search} ON {dates} (param, low, high, res);")
        for kind, param in self.keys:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {self.index(f'key_{param}')} ON {self.table(kind)}"
                f" ({_KEY_COLUMNS[kind]}) WHERE param = '{param}';"
            )
        return "\n".join(statements) + "\n"


#: The columns of a lean family's partial value index on one parameter's rows (:attr:`IndexFamily.keys`).
_KEY_COLUMNS = {"token": "code, system, res", "reference": "target_id, target_type, res"}

#: The index of every resource type but the trail's and the documents'.
SHARED = IndexFamily("idx", covering=True)
#: The index of the access trail (R17: one AuditEvent per request about a record). Why apart:
#: most of the rows a busy server writes are the trail's (23 index values per event), and in the
#: shared tables each went into a value index where it landed on a page of its own — a read wrote
#: 66 pages to the WAL, 56 of them for its event's index. The trail is append-only and always
#: searched within one patient's record (the policy binds every AuditEvent query to a patient by
#: ``patient``), so it needs value indexes for that binding and for dates only; and the shared
#: tables stay the size of the documents, however long the trail grows. The binding's own are
#: partial: an event's other references (the document it names, the professional's identifier)
#: landed each on a random page of the reference indexes, 10 of the 34 pages a read wrote. And
#: its rows are deferred: an event's eleven B-trees are written once per batch of events, not
#: once per request's commit.
TRAIL = IndexFamily("trail", binding="patient", deferred=True, since=FAMILIES_SINCE)
#: The index of the documents and their submission sets (IHE MHD's DocumentReference and List).
#: Why apart and lean: in the shared tables each of a document's ~26 index values (and a List's
#: ~14) went into a value index where it landed on a random page — of the 115 pages an ITI-65
#: Bundle of one document wrote to the log, about 60 were those, each encrypted and checksummed
#: at the commit. Every search of these types is bound to one patient by ``subject`` (the policy's,
#: CONTRACT §7), so they start from it; the two searches the server makes across patients have
#: keys of their own: a uniqueId already registered (``identifier``, IHE ITI-65) and the document
#: that holds a Binary (``attachment``, R1 on a Binary's read). Dates start nothing: a patient's
#: documents are few enough to be checked one by one, on the covering ``(res, param)`` index.
RECORD = IndexFamily(
    "rec",
    binding="subject",
    keys=(("token", "identifier"), ("reference", "attachment")),
    dated=False,
    covering=True,
    since=RECORD_SINCE,
)
#: Deferred index rows (:attr:`IndexFamily.deferred`) written together once this many wait.
DEFERRED_BATCH = 64
#: The resource types whose index is not in :data:`SHARED`.
FAMILY_OF_TYPE = {"AuditEvent": TRAIL, "DocumentReference": RECORD, "List": RECORD}
#: The families apart from :data:`SHARED`.
FAMILIES = tuple(dict.fromkeys(FAMILY_OF_TYPE.values()))


def family_of(resource_type: str, schema: int = SCHEMA_VERSION) -> IndexFamily:
    """The index tables of ``resource_type``'s values in a database of ``schema``."""
    family = FAMILY_OF_TYPE.get(resource_type, SHARED)
    return family if schema >= family.since else SHARED


def _index_tables(family: IndexFamily) -> str:
    """A family's tables, each with its ``(res, param)`` index; their value indexes are written out."""
    return "".join(
        f"CREATE TABLE IF NOT EXISTS {family.table(kind)} (\n"
        f"    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,\n"
        f"    param TEXT NOT NULL, {columns}\n);\n" + family.res_index(kind)
        for kind, columns in _VALUE_COLUMNS.items()
    )


#: What a search can start from in the shared tables: every parameter's values.
_SHARED_VALUE_INDEXES = """
CREATE INDEX IF NOT EXISTS idx_token_search ON idx_token (param, code, system, res);
CREATE INDEX IF NOT EXISTS idx_token_text ON idx_token (param, text) WHERE text IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_string_search ON idx_string (param, norm, res);
CREATE INDEX IF NOT EXISTS idx_date_search ON idx_date (param, low, high, res);
CREATE INDEX IF NOT EXISTS idx_number_search ON idx_number (param, value, res);
CREATE INDEX IF NOT EXISTS idx_quantity_search ON idx_quantity (param, value, res);
CREATE INDEX IF NOT EXISTS idx_reference_search ON idx_reference (param, target_id, target_type, res);
CREATE INDEX IF NOT EXISTS idx_reference_target ON idx_reference (target_id, target_type, param);
CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (param, url) WHERE url IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_reference_ident ON idx_reference (param, id_value) WHERE id_value IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_uri_search ON idx_uri (param, value, res);
"""
#: The shared tables and their indexes, one statement each: made anew when an upgrade moves most
#: of their rows to another family (the store's ``_refile``).
SHARED_STATEMENTS = tuple(
    statement.strip() for statement in (_index_tables(SHARED) + _SHARED_VALUE_INDEXES).split(";\n") if statement.strip()
)
#: Indexes of earlier schemas, dropped by the first open of a database that has them.
DROPPED_INDEXES = ("trail_reference_target", "trail_reference_ident")

DDL = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS resource (
    pk INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    content BLOB,
    UNIQUE (type, id)
);
CREATE INDEX IF NOT EXISTS resource_type ON resource (type, deleted, pk);

CREATE TABLE IF NOT EXISTS version (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    method TEXT NOT NULL,
    content BLOB,
    UNIQUE (res, version)
);
CREATE INDEX IF NOT EXISTS version_time ON version (last_updated);

"""
    + "".join(_index_tables(family) for family in (SHARED, *FAMILIES))
    + _SHARED_VALUE_INDEXES
    + "".join(family.value_indexes() for family in FAMILIES)
    + """
-- rows: JSON, per kind of index table, that table's rows without res: [param, value columns...]
CREATE TABLE IF NOT EXISTS index_pending (
    res INTEGER PRIMARY KEY REFERENCES resource (pk) ON DELETE CASCADE,
    rows BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS search_session (
    key TEXT PRIMARY KEY, expires INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS search_session_expires ON search_session (expires);

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL, created TEXT NOT NULL, payload BLOB NOT NULL, delivered TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, due INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (topic, id) WHERE delivered IS NULL;

CREATE TABLE IF NOT EXISTS record (
    kind TEXT NOT NULL, key TEXT NOT NULL, expires INTEGER, value BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE INDEX IF NOT EXISTS record_expires ON record (expires) WHERE expires IS NOT NULL;
"""
)


#: Columns added since version 1, per table: (name, definition). A database written by an older
#: server gets them on open (``ALTER TABLE ... ADD COLUMN``, only where missing), so an upgrade
#: needs no migration step of its own and existing rows keep their meaning (no failed attempt,
#: due now).
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "outbox": (("attempts", "INTEGER NOT NULL DEFAULT 0"), ("due", "INTEGER")),
}

#: A version's content, in a query joining ``version v`` to its ``resource r``. The current
#: version's is the resource row's (its version row holds none: one copy, not two); a version
#: replaced by an update or a delete holds its own, moved there by the write that replaced it,
#: as do all the rows of a database written before this rule. A deleted version has none.
VERSION_CONTENT = "COALESCE(v.content, CASE WHEN v.version = r.version THEN r.content END)"
