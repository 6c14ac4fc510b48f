"""Paging links that carry their own state, sealed (``fhir_server.fhir.sessions``): a search of
more than a page writes nothing; the link opens for the server only, not after it expires, not
once altered, not once its master key is retired; a state too large for a link is stored."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhir_server.fhir.messages import FhirRequest
from fhir_server.fhir.service import FhirService
from fhir_server.fhir.sessions import SEALED, PagingSessions
from fhirmodel.errors import FhirError
from storage.crypto import EnvelopeCipher, MasterKeys
from tests.conftest import Fhir
from tests.dbfiles import open_database
from tests.support import OpenGuard
from tests.test_search import _many_patients, follow, link, match_ids, search

STATE: dict[str, Any] = {"kind": "search", "type": "Patient", "params": [["family", "page"]], "principal": "alice"}


class Clock:
    """The sessions' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(tmp_path: Path) -> MasterKeys:
    return MasterKeys.load_or_create(tmp_path)


def _stored_sessions(service: FhirService) -> int:
    with closing(open_database(service.config.sqlite_path)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM search_session").fetchone()[0])


def test_a_search_of_several_pages_writes_no_session(fhir: Fhir, service: FhirService) -> None:
    ids = _many_patients(fhir, 5)
    bundle = search(fhir, "Patient?family=page&_sort=family&_count=2")
    next_url = link(bundle, "next") or ""
    assert dict(parse_qsl(urlsplit(next_url).query))["_getpages"].startswith(SEALED)
    seen = match_ids(bundle)
    while next_url:
        bundle = follow(fhir, next_url)
        seen += match_ids(bundle)
        next_url = link(bundle, "next") or ""
    assert seen == ids
    assert _stored_sessions(service) == 0


def test_an_altered_link_answers_410(fhir: Fhir, service: FhirService) -> None:
    _many_patients(fhir, 3)
    params = parse_qsl(urlsplit(link(search(fhir, "Patient?_count=1"), "next") or "").query)
    key = dict(params)["_getpages"]
    altered = key[:-6] + ("AAAAAA" if not key.endswith("AAAAAA") else "BBBBBB")
    for bad in (altered, SEALED, SEALED + "not base64!", SEALED + "QUJD", key + "x"):
        request = [(n, bad if n == "_getpages" else v) for n, v in params]
        with pytest.raises(FhirError) as refused:
            service.handle(FhirRequest(method="GET", path="", params=request, guard=OpenGuard("alice")))
        assert refused.value.status == 410, bad


def test_a_sealed_session_expires(service: FhirService, keys: MasterKeys) -> None:
    clock = Clock()
    sessions = PagingSessions(service.store, EnvelopeCipher(keys), ttl_seconds=60, clock=clock)
    key = sessions.save(STATE)
    clock.now += 60
    assert sessions.load(key) == STATE
    clock.now += 1
    assert sessions.load(key) is None


def test_a_sealed_session_does_not_open_under_another_servers_keys(service: FhirService, tmp_path: Path) -> None:
    mine = PagingSessions(service.store, EnvelopeCipher(MasterKeys.load_or_create(tmp_path / "mine")), 60)
    theirs = PagingSessions(service.store, EnvelopeCipher(MasterKeys.load_or_create(tmp_path / "theirs")), 60)
    assert theirs.load(mine.save(STATE)) is None


def test_a_sealed_session_stops_opening_once_its_master_key_is_retired(service: FhirService, keys: MasterKeys) -> None:
    sessions = PagingSessions(service.store, EnvelopeCipher(keys), 60)
    key = sessions.save(STATE)
    old = keys.active.kid
    new = keys.rotate()
    assert sessions.load(key) == STATE  # rotated, not retired: still opens
    keys.retire(old, in_use={new})
    assert sessions.load(key) is None


def test_a_state_too_large_for_a_link_is_stored(service: FhirService, keys: MasterKeys) -> None:
    sessions = PagingSessions(service.store, EnvelopeCipher(keys), 60, inline_limit=200)
    large = {**STATE, "params": [["_id", ",".join(f"id{i}" for i in range(100))]]}
    key = sessions.save(large)
    assert not key.startswith(SEALED) and sessions.load(key) == large
    assert sessions.load(sessions.save(STATE)) == STATE
    assert _stored_sessions(service) == 1
