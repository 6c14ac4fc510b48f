"""Open the MongoDB store a ``DMP_STORE=mongodb://…`` URL names.

The client asks for ``majority`` writes and reads and retryable writes whatever the URL says
(a Bundle acknowledged by the primary alone can be rolled back by an election), and the server
refuses a standalone ``mongod``: it has no transactions, so a failing Bundle could leave half of
itself behind. ``DMP_MONGO_ALLOW_STANDALONE=1`` is the operator saying they accept that.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient
from pymongo.errors import PyMongoError
from pymongo.uri_parser import parse_uri

from storage.crypto import EnvelopeCipher
from storage.mongo.compiler import ParamType
from storage.mongo.store import Indexer, MongoStore

#: Where the store lives when the URL names no database.
DEFAULT_DATABASE = "dmp"
ALLOW_STANDALONE = "DMP_MONGO_ALLOW_STANDALONE"

#: Builds the client of a URL (``MongoClient`` unless given: the tests' double replaces it).
ClientFactory = Callable[..., MongoClient[Any]]


class MongoUnavailable(RuntimeError):
    """No MongoDB answers at the URL: the server cannot start without its store."""


class StandaloneRefused(MongoUnavailable):
    """The URL names a standalone ``mongod`` and the operator did not accept non-atomic Bundles."""


def client_options() -> dict[str, Any]:
    """What the store needs of every connection, over whatever the URL says."""
    return {"w": "majority", "readConcernLevel": "majority", "retryWrites": True, "tz_aware": True}


def topology(client: MongoClient[Any]) -> str:
    """``replicaset``, ``sharded`` or ``standalone``, from the server's ``hello``."""
    hello = client.admin.command("hello")
    if hello.get("msg") == "isdbgrid":
        return "sharded"
    return "replicaset" if hello.get("setName") else "standalone"


def open_mongo_store(
    url: str,
    *,
    indexer: Indexer,
    param_type: ParamType,
    resource_types: tuple[str, ...],
    cipher: EnvelopeCipher | None = None,
    client_factory: ClientFactory | None = None,
    environ: dict[str, str] | None = None,
) -> MongoStore:
    env = os.environ if environ is None else environ
    database = parse_uri(url).get("database") or DEFAULT_DATABASE
    where = url.split("@")[-1]  # never the credentials
    client = (client_factory or MongoClient)(url, **client_options())
    try:
        kind = topology(client)
    except PyMongoError as exc:
        client.close()
        raise MongoUnavailable(f"DMP_STORE: no MongoDB answers at {where}: {exc}") from None
    if kind == "standalone" and env.get(ALLOW_STANDALONE) != "1":
        client.close()
        raise StandaloneRefused(
            f"DMP_STORE names a standalone mongod ({where}): it has no transactions, so a"
            f" failing Bundle could be half-written. Run a replica set (even of one member), or set"
            f" {ALLOW_STANDALONE}=1 to accept non-atomic Bundles."
        )
    return MongoStore(client, database, indexer, param_type, resource_types, cipher, transactions=kind != "standalone")
