"""The access states each worker keeps (:mod:`authz.state_cache`): a change is in force at the
next request, through whichever worker it was made and whichever path it took.

Two servers over one data directory stand for two gunicorn workers (two processes, each with its
own caches, one SQLite database): changes are made through the first, the caller's next request
goes to the second after a first request there filled its cache. Real parts only: the DMP test
world (real server, real ES256 tokens, real SQLite), the majority job as the runner runs it. The
stamps live in the store, so nothing here depends on the backend; on MongoDB the store's part (it
tells of every write) is in ``tests/test_storage_contract.py``, and ``tests/test_dmp_rules.py``
runs there with the cache (mongomock cannot share one database between two clients).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import authz.state_cache
from authz.consents import new_consent
from authz.state import Decision, PatientState, decode_state, encode_state, load_state
from authz.state_cache import COMMON, STAMP_KIND, STATE_TAG, AccessStates
from authz.terms import ACCESS, BLOCK, IDNATPS_SYSTEM, REPRESENTATIVE
from fhir_server.app import JOBS
from fhir_server.dmp.jobs import JobContext, run_jobs
from fhir_server.runtime.config import Config
from fhir_server.runtime.mail import DisabledMailer
from fhirmodel.dates import MAX_US, MIN_US, add_years
from storage.query import OPEN_SCOPE
from tests.dmp import INS_SYSTEM, As, World, closed, ins_of

INS_A = "180017512345660"
INS_B = "285037512345787"
INS_MINOR = "115037512345874"
PARENT = "275017500000135"
DR = "810000000001"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def other(world: World, tmp_path: Path) -> Iterator[World]:
    """A second server on the data directory of ``world`` (the conftest's), on its clock."""
    w = World(tmp_path)
    w.clock = world.clock
    w.service.gatekeeper.clock = world.clock  # type: ignore[attr-defined]
    yield w
    w.close()


def reads_documents(client: As, pid: str) -> bool:
    response = client.get(f"DocumentReference?patient={pid}")
    assert response.status_code in (200, 403), response.get_data(as_text=True)
    return response.status_code == 200


def stored(world: World, rtype: str, rid: str) -> dict[str, Any]:
    return world.store.read(rtype, rid, OPEN_SCOPE).json()


def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def _revoke_by_delete(world: World, pid: str, grant: str) -> None:
    assert world.patient(INS_A).delete(f"Consent/{grant}").status_code in (200, 204)


def _revoke_by_put(world: World, pid: str, grant: str) -> None:
    response = world.patient(INS_A).put(f"Consent/{grant}", {**stored(world, "Consent", grant), "status": "inactive"})
    assert response.status_code == 200, response.get_data(as_text=True)


def _revoke_by_patch(world: World, pid: str, grant: str) -> None:
    patch = [{"op": "replace", "path": "/status", "value": "inactive"}]
    response = world.patient(INS_A).request("PATCH", f"Consent/{grant}", patch, headers=JSON_PATCH)
    assert response.status_code == 200, response.get_data(as_text=True)


def _block_by_post(world: World, pid: str, grant: str) -> None:
    block = new_consent(BLOCK, ins_of(INS_A), world.clock.now, permit=False, actor=(IDNATPS_SYSTEM, DR))
    response = world.patient(INS_A).post("Consent", block)
    assert response.status_code == 201, response.get_data(as_text=True)


def _revoke_in_a_transaction(world: World, pid: str, grant: str) -> None:
    entry = {
        "resource": {**stored(world, "Consent", grant), "status": "inactive"},
        "request": {"method": "PUT", "url": f"Consent/{grant}"},
    }
    response = world.patient(INS_A).post("", bundle(entry))
    assert response.status_code == 200, response.get_data(as_text=True)


def _close_the_dmp(world: World, pid: str, grant: str) -> None:
    response = world.patient(INS_A).put(f"Patient/{pid}", closed(stored(world, "Patient", pid), world.clock.now.date()))
    assert response.status_code == 200, response.get_data(as_text=True)


def _expunge_in_the_store(world: World, pid: str, grant: str) -> None:
    """What a purge or a data migration does: below the API, through the store."""
    world.store.expunge("Consent", grant)


CHANGES: dict[str, Callable[[World, str, str], None]] = {
    "DELETE Consent": _revoke_by_delete,
    "PUT Consent": _revoke_by_put,
    "PATCH Consent": _revoke_by_patch,
    "POST Consent (block)": _block_by_post,
    "transaction Bundle": _revoke_in_a_transaction,
    "PUT Patient (closure)": _close_the_dmp,
    "store expunge": _expunge_in_the_store,
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_through_one_worker_is_in_force_at_the_other_s_next_request(
    world: World, other: World, change: str
) -> None:
    pid = world.seed_patient(INS_A)
    world.seed_document(pid)
    grant = world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))
    doctor_elsewhere = other.doctor(DR, INS_A)
    assert reads_documents(doctor_elsewhere, pid)  # the other worker now keeps this DMP's state
    assert reads_documents(doctor_elsewhere, pid)
    CHANGES[change](world, pid, grant)
    assert not reads_documents(doctor_elsewhere, pid)


def test_a_grant_through_one_worker_opens_the_record_at_the_other(world: World, other: World) -> None:
    pid = world.seed_patient(INS_A)
    doctor_elsewhere = other.doctor(DR, INS_A)
    assert not reads_documents(doctor_elsewhere, pid)
    grant = new_consent(
        ACCESS, ins_of(INS_A), world.clock.now, actor=(IDNATPS_SYSTEM, DR), until=world.clock.now + timedelta(days=30)
    )
    assert world.patient(INS_A).post("Consent", grant).status_code == 201
    assert reads_documents(doctor_elsewhere, pid)


def test_a_new_dmp_is_found_by_the_worker_that_knew_there_was_none(world: World, other: World) -> None:
    doctor_elsewhere = other.doctor(DR, INS_B)
    assert doctor_elsewhere.get(f"Patient?identifier={INS_SYSTEM}|{INS_B}").get_json()["total"] == 0
    pid = world.seed_patient(INS_B)
    world.seed_consent(ACCESS, INS_B, (IDNATPS_SYSTEM, DR))
    assert reads_documents(doctor_elsewhere, pid)


def test_the_majority_job_s_changes_are_in_force_at_the_other_worker(world: World, other: World) -> None:
    """A representation with no end (ended by the job, not by its period, at 18)."""
    majority = world.clock.now.date() + timedelta(days=10)
    pid = world.seed_patient(INS_MINOR, birth_date=add_years(majority, -18).isoformat())
    world.seed_document(pid)
    representation = new_consent(
        REPRESENTATIVE, ins_of(INS_MINOR), world.clock.now - timedelta(days=3000), actor=(INS_SYSTEM, PARENT)
    )
    world.store.create(representation)
    parent_elsewhere = other.as_("LEGREP", patient=INS_MINOR, sub=PARENT)
    world.clock.now += timedelta(days=10, hours=1)
    assert reads_documents(parent_elsewhere, pid)  # at 18, still represented until the job runs
    done = run_jobs(JobContext(world.service, DisabledMailer(), world.clock), JOBS, ["majority"])
    assert done is not None and done["majority"] >= 1
    assert stored(world, "Consent", representation["id"])["status"] == "inactive"
    assert not reads_documents(parent_elsewhere, pid)


def test_a_grant_ends_with_its_period_without_any_write(world: World) -> None:
    """Time is judged at each request: the state kept is facts, not a decision."""
    pid = world.seed_patient(INS_A)
    world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR), until=world.clock.now + timedelta(hours=1))
    doctor = world.doctor(DR, INS_A)
    assert reads_documents(doctor, pid)
    world.clock.now += timedelta(minutes=59)
    assert reads_documents(doctor, pid)
    world.clock.now += timedelta(minutes=2)
    assert not reads_documents(doctor, pid)


# -- the cache itself, on the store of a world ------------------------------------------------------


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The states a request made again, not finding them kept (the real making runs)."""
    seen: list[tuple[str, str]] = []
    real = AccessStates._fresh

    def counting(self: AccessStates, ins: tuple[str, str], stamp: bytes | None) -> PatientState | None:
        seen.append(ins)
        return real(self, ins, stamp)

    monkeypatch.setattr(AccessStates, "_fresh", counting)
    return seen


@pytest.fixture
def store_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The states read from the Patient and the Consents, by a write or a request."""
    seen: list[tuple[str, str]] = []
    real = authz.state_cache.load_state

    def counting(store: Any, ins: tuple[str, str]) -> PatientState | None:
        seen.append(ins)
        return real(store, ins)

    monkeypatch.setattr(authz.state_cache, "load_state", counting)
    return seen


def test_a_state_is_read_once_until_it_changes(world: World, loads: list[tuple[str, str]]) -> None:
    world.seed_patient(INS_A)
    states = AccessStates(world.store)
    first = states.load(ins_of(INS_A))
    assert states.load(ins_of(INS_A)) is first and loads == [ins_of(INS_A)]
    world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))
    changed = states.load(ins_of(INS_A))
    assert changed is not None and first is not None and len(changed.decisions) == len(first.decisions) + 1
    assert len(loads) == 2


def test_the_states_kept_are_bounded(world: World, loads: list[tuple[str, str]]) -> None:
    for ins in (INS_A, INS_B, INS_MINOR):
        world.seed_patient(ins)
    states = AccessStates(world.store, size=2)
    for ins in (INS_A, INS_B, INS_MINOR):
        states.load(ins_of(ins))
    loads.clear()
    states.load(ins_of(INS_MINOR))
    states.load(ins_of(INS_B))
    assert loads == []
    states.load(ins_of(INS_A))
    assert loads == [ins_of(INS_A)]  # forgotten, to keep two


@pytest.mark.parametrize(("token_cache", "state_cache"), [("1", "1"), (None, None)])
def test_the_server_keeps_as_many_tokens_and_states_as_configured(
    tmp_path: Path,
    loads: list[tuple[str, str]],
    signatures: list[str],
    token_cache: str | None,
    state_cache: str | None,
) -> None:
    """``DMP_TOKEN_CACHE`` and ``DMP_STATE_CACHE`` reach the caches of the server the app factory
    builds: one of each kept, a doctor going back to a first patient after a second has that
    token's signature checked and that patient's state read again; by default, neither."""
    env = {"DMP_TOKEN_CACHE": token_cache, "DMP_STATE_CACHE": state_cache}
    config = Config.from_env({name: value for name, value in env.items() if value is not None})
    world = World(tmp_path, token_cache=config.token_cache, state_cache=config.state_cache)
    try:
        pids = {ins: world.seed_granted(ins, DR) for ins in (INS_A, INS_B)}
        doctors = {ins: world.doctor(DR, ins) for ins in (INS_A, INS_B)}
        for ins in (INS_A, INS_B, INS_A):
            assert reads_documents(doctors[ins], pids[ins])
    finally:
        world.close()
    once = [ins_of(INS_A), ins_of(INS_B)]
    assert loads == ([*once, ins_of(INS_A)] if token_cache else once)
    assert len(signatures) == (3 if token_cache else 2)


def test_a_state_seen_inside_a_rolled_back_transaction_is_not_kept(world: World) -> None:
    """A request may re-decide after its own writes, and then fail: what it saw never was."""
    world.seed_patient(INS_A)
    states = AccessStates(world.store)
    before = states.load(ins_of(INS_A))
    with pytest.raises(RuntimeError), world.store.transaction():
        world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))
        inside = states.load(ins_of(INS_A))
        assert inside is not None and before is not None and len(inside.decisions) == len(before.decisions) + 1
        raise RuntimeError("the request fails")
    assert states.load(ins_of(INS_A)) == before


def test_a_dmp_stored_before_stamps_existed_is_kept_under_the_common_stamp(
    world: World, loads: list[tuple[str, str]]
) -> None:
    world.seed_patient(INS_A)
    world.store.delete_record(STAMP_KIND, f"{INS_SYSTEM}|{INS_A}")  # as written by an older server
    states = AccessStates(world.store)
    states.load(ins_of(INS_A))
    states.load(ins_of(INS_A))
    assert len(loads) == 1
    pid_b = world.seed_patient(INS_B)
    world.store.delete("Patient", pid_b)  # a Patient gone changes the common stamp
    assert world.store.get_record(STAMP_KIND, COMMON) is not None
    states.load(ins_of(INS_A))
    assert len(loads) == 2
    world.seed_consent(ACCESS, INS_A, (IDNATPS_SYSTEM, DR))  # and a change gives it its own
    assert world.store.get_record(STAMP_KIND, f"{INS_SYSTEM}|{INS_A}") is not None
    changed = states.load(ins_of(INS_A))
    assert len(loads) == 3 and changed is not None and any(d.category == ACCESS for d in changed.decisions)


def test_a_state_is_decoded_from_its_stamp_not_read_again(
    world: World, loads: list[tuple[str, str]], store_reads: list[tuple[str, str]]
) -> None:
    """A worker that never kept the state (a first request about the patient) has it from the
    stamp the write left, without the two searches; and it is the state the store holds."""
    world.seed_granted(INS_A, DR)
    world.seed_consent(BLOCK, INS_A, (IDNATPS_SYSTEM, "810000000002"))
    store_reads.clear()
    state = AccessStates(world.store).load(ins_of(INS_A))
    assert loads == [ins_of(INS_A)] and store_reads == []
    assert state is not None and {d.category for d in state.decisions} >= {ACCESS, BLOCK}
    assert state == load_state(world.store, ins_of(INS_A))


def test_a_state_encodes_whole() -> None:
    state = PatientState(
        ins=(INS_SYSTEM, INS_A),
        patient_ids=("p1", "p2"),
        active=False,
        birth_date="2010-04-01",
        decisions=(
            Decision(ACCESS, True, ((IDNATPS_SYSTEM, DR),), MIN_US, MAX_US, (), "c1"),
            Decision(BLOCK, False, ((IDNATPS_SYSTEM, DR), ("urn:x", "y")), 5, 10**15, ("a", "b"), "c2"),
        ),
    )
    assert decode_state(encode_state(state)) == state
    assert decode_state(encode_state(None)) is None
    with pytest.raises(ValueError, match="not an encoded access state"):
        decode_state(b'["only", "two"]')


def test_a_random_stamp_of_an_older_server_reads_the_state_from_the_store(
    world: World, loads: list[tuple[str, str]], store_reads: list[tuple[str, str]]
) -> None:
    world.seed_granted(INS_A, DR)
    world.store.put_record(STAMP_KIND, f"{INS_SYSTEM}|{INS_A}", secrets.token_bytes(16))
    store_reads.clear()
    states = AccessStates(world.store)
    first = states.load(ins_of(INS_A))
    assert states.load(ins_of(INS_A)) is first
    assert loads == store_reads == [ins_of(INS_A)]
    assert first is not None and any(d.category == ACCESS for d in first.decisions)


def test_a_stamp_that_does_not_decode_reads_the_state_from_the_store(
    world: World, store_reads: list[tuple[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    world.seed_granted(INS_A, DR)
    world.store.put_record(STAMP_KIND, f"{INS_SYSTEM}|{INS_A}", STATE_TAG + b"{damaged")
    store_reads.clear()
    state = AccessStates(world.store).load(ins_of(INS_A))
    assert store_reads == [ins_of(INS_A)] and "does not decode" in caplog.text
    assert state is not None and any(d.category == ACCESS for d in state.decisions)


def test_a_consent_naming_the_patient_by_reference_changes_the_state(world: World) -> None:
    pid = world.seed_patient(INS_A)
    states = AccessStates(world.store)
    before = states.load(ins_of(INS_A))
    consent = new_consent(ACCESS, ins_of(INS_A), world.clock.now, actor=(IDNATPS_SYSTEM, DR))
    consent["patient"] = {"reference": f"{world.config.base_url}/Patient/{pid}"}
    world.store.create(consent)
    after = states.load(ins_of(INS_A))
    assert before is not None and after is not None
    assert {d.consent_id for d in after.decisions} - {d.consent_id for d in before.decisions} == {consent["id"]}


def test_the_job_gives_the_patients_of_an_older_server_stamps_holding_their_state(
    world: World, loads: list[tuple[str, str]], store_reads: list[tuple[str, str]]
) -> None:
    """After an upgrade, once: the random stamps an older server wrote, and the missing ones, are
    made to hold the state; a first request about those patients then reads no Consent."""
    for ins in (INS_A, INS_B):
        world.seed_granted(ins, DR)
    world.store.put_record(STAMP_KIND, f"{INS_SYSTEM}|{INS_A}", secrets.token_bytes(16))
    world.store.delete_record(STAMP_KIND, f"{INS_SYSTEM}|{INS_B}")
    run = JobContext(world.service, DisabledMailer(), world.clock)
    assert run_jobs(run, JOBS, ["access-stamps"]) == {"access-stamps": 2}
    store_reads.clear()
    states = AccessStates(world.store)
    for ins in (INS_A, INS_B):
        state = states.load(ins_of(ins))
        assert state is not None and any(
            d.category == ACCESS and d.names((IDNATPS_SYSTEM, DR)) for d in state.decisions
        )
    assert loads == [ins_of(INS_A), ins_of(INS_B)] and store_reads == []
    world.store.delete_record(STAMP_KIND, f"{INS_SYSTEM}|{INS_A}")
    assert run_jobs(run, JOBS, ["access-stamps"]) == {"access-stamps": 0}  # done once, for good
