"""Resource storage: one interface (:mod:`storage.interface`), one query model
(:mod:`storage.query`), and the backends."""

from __future__ import annotations

from pathlib import Path

from storage.crypto import EnvelopeCipher
from storage.interface import Store
from storage.sqlite.compiler import ParamType
from storage.sqlite.store import Indexer, SqliteStore


def open_store(
    url: str | None,
    *,
    default_sqlite: Path,
    indexer: Indexer,
    param_type: ParamType,
    resource_types: tuple[str, ...],
    cipher: EnvelopeCipher | None = None,
) -> Store:
    """The store a ``DMP_STORE`` URL names (SQLite in the data directory by default); with a
    ``cipher``, contents are encrypted at rest."""
    if url is None or url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :]) if url else default_sqlite
        return SqliteStore(path, indexer, param_type, resource_types, cipher)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from storage.mongo.connect import open_mongo_store

        return open_mongo_store(
            url, indexer=indexer, param_type=param_type, resource_types=resource_types, cipher=cipher
        )
    raise ValueError(f"DMP_STORE: unsupported store URL {url!r} (sqlite:///path or mongodb://...)")
