"""The SQLite layout: current resources, every version, and typed search-index tables.

The index tables follow HAPI FHIR's ``HFJ_SPIDX_*`` idea: one row per indexed value, keyed by the
resource's ``pk``. Each has a "search" index (parameter and value first, ``res`` last, so that
a query can start from the index and fetch few resources) and a ``(res, param)`` index for
probing a candidate resource and for re-indexing on update.

The access trail's index rows live apart, in ``trail_*`` tables of the same shapes (see
:data:`TRAIL`), and so do the documents' and submission sets', in ``rec_*`` (:data:`RECORD`).

The trail lives in a database file of its own, attached to every connection as ``trail``
(:data:`TRAIL_SCHEMA`): its ``resource``, ``version`` and ``trail_*`` tables. Why: SQLite keeps a
page cache per file, and every commit to a file empties every other connection's cache of it; the
trail's commits (an event per request) then emptied the documents' caches many times a second,
and its tens of gigabytes pushed the documents' pages out of the OS's cache.
"""

from dataclasses import dataclass, replace

#: 10: the documents and submission sets of one patient are stored together (:attr:`IndexFamily.clustered`).
SCHEMA_VERSION = 10
#: The first schema whose trail has index tables of its own (:data:`TRAIL`).
FAMILIES_SINCE = 3
#: The first schema whose documents and submission sets have index tables of their own (:data:`RECORD`).
RECORD_SINCE = 7
#: The first schema that deferred index rows (``index_pending``, in the main file until :data:`TRAIL_FILE_SINCE`).
PENDING_SINCE = 5
#: The first schema whose shared ``(res, param)`` indexes cover the values probed (:attr:`IndexFamily.covering`).
COVERING_SINCE = 6
#: The first schema whose trail is in a file of its own (:data:`TRAIL_SCHEMA`).
TRAIL_FILE_SINCE = 8
#: The name the trail's database file is attached under.
TRAIL_SCHEMA = "trail"
#: The trail's first ``pk`` and ``seq`` are above this: a resource's key tells its file, and the
#: keys of both files never meet (an ``_include`` keeps each resource once by its key; a copy to
#: MongoDB keys its documents by them).
TRAIL_KEYS_FROM = 1 << 40
#: A clustered family's keys are above this, in blocks of :data:`CLUSTER_SIZE`, one block a patient's
#: (:data:`CLUSTERS`); the main file's other resources keep counting on below :data:`TRAIL_KEYS_FROM`.
CLUSTERED_KEYS_FROM = 1 << 50
#: The keys of one block: a patient who has more resources of the family gets another block.
CLUSTER_SIZE = 1 << 12
#: The table of the blocks in use: a binding's value (``key``, ``Patient/{id}``), the number of its
#: current block (``home``: its keys start at ``CLUSTERED_KEYS_FROM + home * CLUSTER_SIZE``) and how
#: many of them are taken (``used``). A block left for a new one keeps its keys, and is not reused.
CLUSTERS = "cluster"


def qualifier(schema: str) -> str:
    """What a statement puts before a table's name to name it in ``schema``'s file (nothing for
    the main file: the names the main file has are looked up there first)."""
    return "" if schema == "main" else f"{schema}."


def trail_file(database: str) -> str:
    """The trail's database file beside the main one (:data:`TRAIL_SCHEMA`)."""
    return database if database == ":memory:" else f"{database}.trail"


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

    ``deferred``: the family's resources are not written where they are read when created, but
    kept aside — a request's event in the trail's journal, a write's in the main file with the
    write — and moved in, with their index rows, in batches and before any statement reads the
    family's resources or tables (the store's ``_settle``). Why: one event's rows went into eleven
    B-trees, each commit wrote a page of each, and each reader of another connection found its
    cache dropped by that commit.

    ``covering``: each ``(res, param)`` index carries the values the conditions on a candidate
    compare (:data:`_PROBED_COLUMNS`), so a probe reads the index alone. Why: the resources of one
    patient are spread over the whole file, and each probe of a candidate read a page of the index
    and a page of the table, neither in the page cache at 1 000 000 documents — a search by
    patient's page query read ~115 pages (each a system call and a page's decryption), ~68 this way.

    ``since``: the first schema that has the family; a database of an earlier one keeps its
    types' rows in :data:`SHARED` until it is upgraded.

    ``schema``: the attached database file that holds the family's tables and its types'
    resources and versions (``main``, or :data:`TRAIL_SCHEMA`).

    ``lazy`` (a deferred family's): a resource moved in gets the rows that start a search
    (:meth:`eager`: the binding's, the keys', dates) and is listed in :attr:`pending`; its other
    rows are written when a statement is about to read them, for the resources it may read only
    (the store's ``_complete``). Why: every request leaves an event, and its moving in took about
    0.3 ms of the worker's CPU (a read's whole request about 1.3 ms), two thirds of it the
    indexing and writing of rows that a search of the trail — a patient looking at who read their
    record, rarely — reads: about 18 of an event's 22 rows.

    ``clustered``: a resource's key (``pk``) is taken from a block of keys of its binding's value,
    its patient (:data:`CLUSTERS`), so that one patient's resources sit together in the resource
    table and in every ``(res, param)`` index. Why: keys in the order of creation spread a
    patient's ~20 documents over as many pages of each B-tree, and once the file is much larger
    than a connection's cache each is a system call and a page decrypted: a search by patient on a
    connection of its own read 146 pages at 100 000 documents, 50 this way (``bench/search_pages.py``).
    The price is at the write: a document's rows land on its patient's pages, not at the B-trees'
    ends (33 pages written per create, 26 before). Its keys are no longer in the order of creation:
    a search's watermark bounds them by the ``seq`` of their first version.
    """

    prefix: str
    binding: str | None = None
    keys: tuple[tuple[str, str], ...] = ()
    dated: bool = True
    deferred: bool = False
    covering: bool = False
    since: int = 0
    schema: str = "main"
    lazy: bool = False
    clustered: bool = False

    @property
    def lean(self) -> bool:
        return self.binding is not None

    @property
    def _qualifier(self) -> str:
        return qualifier(self.schema)

    def _own(self, kind: str) -> str:
        """The table of ``kind`` as its file names it (``CREATE INDEX`` names it so)."""
        return f"{self.prefix}_{kind}"

    def table(self, kind: str) -> str:
        """The table of ``kind``, named as a statement names it (with its file's name)."""
        return self._qualifier + self._own(kind)

    def probe_index(self, kind: str) -> str:
        """The ``(res, param)`` index of the table of ``kind``, named as ``INDEXED BY`` names it."""
        return f"{self.prefix}_{kind}_res"

    def index(self, name: str) -> str:
        """The name of one of the family's value indexes (as ``INDEXED BY`` names it)."""
        return f"{self.prefix}_{name}"

    @property
    def resources(self) -> str:
        """The table of the family's types' resources."""
        return f"{self._qualifier}resource"

    @property
    def versions(self) -> str:
        """The table of the family's types' versions."""
        return f"{self._qualifier}version"

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(self.table(kind) for kind in INDEX_KINDS)

    @property
    def pending(self) -> str:
        """The table listing a lazy family's resources whose other rows are not written yet."""
        return f"{self._qualifier}{self.prefix}_pending"

    def eager(self, param: str, param_type: str) -> bool:
        """Whether ``param``'s rows start a search of the family: a lazy family writes them when a
        resource is moved in (a search finds its candidates by them), the others later. A
        contained resource's (named ``param:Type.code``) start none."""
        if ":" in param:
            return False
        return param == self.binding or (self.dated and param_type == "date") or any(p == param for _, p in self.keys)

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
        index, table = self._qualifier + self.probe_index(kind), self._own(kind)
        return f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({columns});\n"

    def value_indexes(self) -> str:
        """The statements creating a lean family's value indexes (:attr:`binding`, :attr:`keys`, dates)."""
        assert self.binding is not None
        q, references = self._qualifier, self._own("reference")
        where = f"WHERE param = '{self.binding}'"
        statements = [
            f"CREATE INDEX IF NOT EXISTS {q}{self.index('binding_target')} ON {references}"
            f" (target_id, target_type, res) {where};",
            f"CREATE INDEX IF NOT EXISTS {q}{self.index('binding_ident')} ON {references} (id_value, res) {where};",
        ]
        if self.dated:
            search, dates = self.index("date_search"), self._own("date")
            statements.append(f"CREATE INDEX IF NOT EXISTS {q}{search} ON {dates} (param, low, high, res);")
        for kind, param in self.keys:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {q}{self.index(f'key_{param}')} ON {self._own(kind)}"
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
#: Its tables and resources are in a file of their own since :data:`TRAIL_FILE_SINCE`; in the main
#: file before (:data:`TRAIL_IN_MAIN`).
TRAIL = IndexFamily("trail", binding="patient", deferred=True, since=TRAIL_FILE_SINCE, schema=TRAIL_SCHEMA, lazy=True)
#: The trail's tables in a database of schemas 3 to 7, in the main file.
TRAIL_IN_MAIN = replace(TRAIL, since=FAMILIES_SINCE, schema="main", lazy=False)
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
    clustered=True,
)
#: The resource types whose index is not in :data:`SHARED`.
FAMILY_OF_TYPE = {"AuditEvent": TRAIL, "DocumentReference": RECORD, "List": RECORD}
#: The types of the deferred families (the trail's), as SQL literals: names of the schema, never input.
TRAIL_TYPES = tuple(rtype for rtype, family in FAMILY_OF_TYPE.items() if family.deferred)
TRAIL_TYPES_SQL = ", ".join(f"'{rtype}'" for rtype in TRAIL_TYPES)


def family_of(resource_type: str, schema: int = SCHEMA_VERSION) -> IndexFamily:
    """The index tables of ``resource_type``'s values in a database of ``schema``."""
    family = FAMILY_OF_TYPE.get(resource_type, SHARED)
    if schema >= family.since:
        return family
    return TRAIL_IN_MAIN if family is TRAIL and schema >= TRAIL_IN_MAIN.since else SHARED


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


def _resource_tables(schema: str) -> str:
    """The tables of one file's resources and their versions (``schema``: the file's name). The
    trail's keys count on (``AUTOINCREMENT``) from :data:`TRAIL_KEYS_FROM`, so that they are
    never reused and never those of the main file's resources."""
    q = qualifier(schema)
    autoincrement = "" if schema == "main" else " AUTOINCREMENT"
    tables = f"""
CREATE TABLE IF NOT EXISTS {q}meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS {q}resource (
    pk INTEGER PRIMARY KEY{autoincrement},
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    content BLOB,
    UNIQUE (type, id)
);
CREATE INDEX IF NOT EXISTS {q}resource_type ON resource (type, deleted, pk);

CREATE TABLE IF NOT EXISTS {q}version (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    method TEXT NOT NULL,
    content BLOB,
    UNIQUE (res, version)
);
CREATE INDEX IF NOT EXISTS {q}version_time ON version (last_updated);
"""
    if schema == "main":
        return tables
    return tables + "".join(
        f"INSERT INTO {q}sqlite_sequence (name, seq) SELECT '{table}', {TRAIL_KEYS_FROM}"
        f" WHERE NOT EXISTS (SELECT 1 FROM {q}sqlite_sequence WHERE name = '{table}');\n"
        for table in ("resource", "version")
    )


#: The main file: every resource but the trail's, and what is not a resource.
DDL = (
    _resource_tables("main")
    + "".join(_index_tables(family) for family in (SHARED, RECORD))
    + _SHARED_VALUE_INDEXES
    + RECORD.value_indexes()
    + """
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
    + f"""
CREATE TABLE IF NOT EXISTS {CLUSTERS} (
    key TEXT PRIMARY KEY, home INTEGER NOT NULL UNIQUE, used INTEGER NOT NULL
) WITHOUT ROWID;
"""
)

#: The trail's file (:data:`TRAIL_SCHEMA`): its events, their versions and their index.
TRAIL_DDL = (
    _resource_tables(TRAIL_SCHEMA)
    + _index_tables(TRAIL)
    + TRAIL.value_indexes()
    + f"CREATE TABLE IF NOT EXISTS {TRAIL.pending}"
    + " (res INTEGER PRIMARY KEY REFERENCES resource (pk) ON DELETE CASCADE);\n"
)
#: What the main file held of the trail before :data:`TRAIL_FILE_SINCE`, dropped once its events moved.
#: Named with their file's: unqualified, a name the main file lacks is looked up in the others.
MAIN_TRAIL_TABLES = tuple(f"main.{table}" for table in (*TRAIL_IN_MAIN.tables, "index_pending"))


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
