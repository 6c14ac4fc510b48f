"""The SQLite layout: current resources, every version, and typed search-index tables.

The index tables follow HAPI FHIR's ``HFJ_SPIDX_*`` idea: one row per indexed value, keyed by the
resource's ``pk``. Each has a "search" index (parameter and value first, ``res`` last, so that
a query can start from the index and fetch few resources) and a ``(res, param)`` index for
probing a candidate resource and for re-indexing on update.
"""

SCHEMA_VERSION = 2

DDL = """
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

CREATE TABLE IF NOT EXISTS idx_token (
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    param TEXT NOT NULL, system TEXT, code TEXT, text TEXT
);
CREATE INDEX IF NOT EXISTS idx_token_search ON idx_token (param, code, system, res);
CREATE INDEX IF NOT EXISTS idx_token_text ON idx_token (param, text) WHERE text IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_token_res ON idx_token (res, param);

CREATE TABLE IF NOT EXISTS idx_string (
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    param TEXT NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_string_search ON idx_string (param, norm, res);
CREATE INDEX IF NOT EXISTS idx_string_res ON idx_string (res, param);

CREATE TABLE IF NOT EXISTS idx_date (
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    param TEXT NOT NULL, low INTEGER NOT NULL, high INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_date_search ON idx_date (param, low, high, res);
CREATE INDEX IF NOT EXISTS idx_date_res ON idx_date (res, param);

CREATE TABLE IF NOT EXISTS idx_number (
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    param TEXT NOT NULL, value REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_number_search ON idx_number (param, value, res);
CREATE INDEX IF NOT EXISTS idx_number_res ON idx_number (res, param);

CREATE TABLE IF NOT EXISTS idx_quantity (
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    param TEXT NOT NULL, value REAL NOT NULL, system TEXT, code TEXT
);
CREATE INDEX IF NOT EXISTS idx_quantity_search ON idx_quantity (param, value, res);
CREATE INDEX IF NOT EXISTS idx_quantity_res ON idx_quantity (res, param);

CREATE TABLE IF NOT EXISTS idx_reference (
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    param TEXT NOT NULL, target_type TEXT, target_id TEXT, url TEXT, id_system TEXT, id_value TEXT
);
CREATE INDEX IF NOT EXISTS idx_reference_search ON idx_reference (param, target_id, target_type, res);
CREATE INDEX IF NOT EXISTS idx_reference_target ON idx_reference (target_id, target_type, param);
CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (param, url) WHERE url IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_reference_ident ON idx_reference (param, id_value) WHERE id_value IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_reference_res ON idx_reference (res, param);

CREATE TABLE IF NOT EXISTS idx_uri (
    res INTEGER NOT NULL REFERENCES resource (pk) ON DELETE CASCADE,
    param TEXT NOT NULL, value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_uri_search ON idx_uri (param, value, res);
CREATE INDEX IF NOT EXISTS idx_uri_res ON idx_uri (res, param);

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

#: Columns added since version 1, per table: (name, definition). A database written by an older
#: server gets them on open (``ALTER TABLE ... ADD COLUMN``, only where missing), so an upgrade
#: needs no migration step of its own and existing rows keep their meaning (no failed attempt,
#: due now).
ADDED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "outbox": (("attempts", "INTEGER NOT NULL DEFAULT 0"), ("due", "INTEGER")),
}

INDEX_TABLES = (
    "idx_token",
    "idx_string",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_uri",
)

#: A version's content, in a query joining ``version v`` to its ``resource r``. The current
#: version's is the resource row's (its version row holds none: one copy, not two); a version
#: replaced by an update or a delete holds its own, moved there by the write that replaced it,
#: as do all the rows of a database written before this rule. A deleted version has none.
VERSION_CONTENT = "COALESCE(v.content, CASE WHEN v.version = r.version THEN r.content END)"
