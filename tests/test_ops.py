"""Operations: health and readiness probes, Prometheus metrics, the JSON request log and its
request id, and the client address behind trusted proxies (fhir_server/ops/)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from authz.keys import server_key_path
from fhir_server.fhir.ops.access_log import JsonLines
from fhir_server.fhir.ops.proxies import TrustedProxies
from storage.crypto import KEY_DIR_NAME, MASTER_KEYS_FILE
from tests.dmp import INS_SYSTEM, World
from tests.test_dmp_rules import audit_events

INS = "180017512345660"
IDNATPS = "810002673899"


@pytest.fixture
def access_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="dmp_server.access")
    return caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The request log as it is written: each record through the JSON formatter."""
    formatter = JsonLines()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "dmp_server.access"]


# -- probes ----------------------------------------------------------------------------------------


def test_healthz_and_readyz_answer_without_a_token(world: World) -> None:
    live = world.client.get("/healthz")
    assert live.status_code == 200 and live.get_json() == {"status": "ok"}
    ready = world.client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json() == {"status": "ready", "checks": ["store", "signing-key", "master-keys"]}
    assert ready.headers["Cache-Control"] == "no-store"


def test_readyz_is_503_when_a_key_file_is_gone_and_creates_none(world: World) -> None:
    signing = server_key_path(world.config.data_dir)
    master = world.config.data_dir / KEY_DIR_NAME / MASTER_KEYS_FILE
    for path, check in ((signing, "signing-key"), (master, "master-keys")):
        hidden = path.with_name(path.name + ".away")
        path.rename(hidden)
        try:
            answer = world.client.get("/readyz")
            assert answer.status_code == 503
            assert answer.get_json()["failing"] == {check: "FileNotFoundError"}
            assert not path.exists()  # the probe did not make a new key in its place
            assert world.client.get("/healthz").status_code == 200  # alive all the same
        finally:
            hidden.rename(path)
    assert world.client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_store_fails(world: World) -> None:
    world.store.close()
    world.service.store.exists = _broken  # type: ignore[method-assign]
    answer = world.client.get("/readyz")
    assert answer.status_code == 503 and answer.get_json()["failing"] == {"store": "RuntimeError"}


def _broken(*args: object) -> None:
    raise RuntimeError("database is gone")


# -- metrics ---------------------------------------------------------------------------------------


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0] if "{" in line else ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_by_interaction_and_status_with_timings(world: World) -> None:
    pid = world.seed_granted(INS, IDNATPS)
    doctor = world.doctor(IDNATPS, INS)
    before = world.client.get("/metrics").get_data(as_text=True)
    assert doctor.get(f"Patient/{pid}").status_code == 200
    assert doctor.get(f"Patient?identifier={INS_SYSTEM}|{INS}").status_code == 200
    assert world.client.get("/fhir/Patient").status_code == 401  # no token
    answer = world.client.get("/metrics")  # no token needed
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    after = answer.get_data(as_text=True)

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return _sample(after, name, **labels) - _sample(before, name, **labels) >= by

    assert grew("dmp_http_requests_total", interaction="read", type="Patient", status="200")
    assert grew("dmp_http_requests_total", interaction="search-type", type="Patient", status="200")
    assert grew("dmp_http_requests_total", interaction="search-type", type="Patient", status="401")
    assert grew("dmp_http_request_duration_seconds_count", 2, interaction="search-type")
    assert grew("dmp_store_operation_duration_seconds_count", 1, operation="read")
    assert grew("dmp_store_operation_duration_seconds_count", 1, operation="search")
    assert grew("dmp_audit_write_duration_seconds_count", 2)  # the read's and the search's AuditEvents
    assert INS not in after and pid not in after  # labels hold no record


def test_a_guard_handed_out_again_is_timed_once(client: FlaskClient) -> None:
    """The open gatekeeper (the FHIR core's) hands every request the same guard: each request's
    trail is still timed once, not once more per request before it (which ended, after a
    thousand requests, in a RecursionError and a 500 for every request)."""
    created = client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Martin"}]})
    assert created.status_code == 201
    path = created.headers["Location"].split("/fhir/", 1)[1].split("/_history")[0]
    before = _sample(client.get("/metrics").get_data(as_text=True), "dmp_audit_write_duration_seconds_count")
    for _ in range(3):
        assert client.get(f"/fhir/{path}").status_code == 200
    after = _sample(client.get("/metrics").get_data(as_text=True), "dmp_audit_write_duration_seconds_count")
    assert after - before == 3


def test_metrics_can_be_switched_off(tmp_path: Path) -> None:
    world = World(tmp_path, metrics=False)
    try:
        assert world.client.get("/metrics").status_code == 404
        assert world.client.get("/healthz").status_code == 200
    finally:
        world.close()


# -- request log and id ------------------------------------------------------------------------


def test_each_request_is_one_json_line_without_health_data(world: World, access_log: pytest.LogCaptureFixture) -> None:
    pid = world.seed_granted(INS, IDNATPS)
    doctor = world.doctor(IDNATPS, INS)
    assert doctor.get(f"Patient/{pid}").status_code == 200
    assert doctor.get(f"Patient?identifier={INS_SYSTEM}|{INS}&family=Patient3456").status_code == 200
    read, search = _lines(access_log)
    assert read["interaction"] == "read" and read["type"] == "Patient" and read["status"] == 200
    assert read["method"] == "GET" and read["client"] == "127.0.0.1"
    assert search["interaction"] == "search-type" and isinstance(search["duration_ms"], float)
    assert re.fullmatch(r"[0-9a-f]{32}", str(read["request_id"])) and read["request_id"] != search["request_id"]
    written = "\n".join(JsonLines().format(r) for r in access_log.records)
    for secret in (pid, INS, "Patient3456", "identifier", "Bearer"):
        assert secret not in written


def test_the_request_id_is_echoed_or_made(world: World, access_log: pytest.LogCaptureFixture) -> None:
    given = world.client.get("/fhir/metadata", headers={"X-Request-ID": "lb-7f3a.42"})
    assert given.headers["X-Request-ID"] == "lb-7f3a.42"
    made = world.client.get("/fhir/metadata")
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    forged = world.client.get("/healthz", headers={"X-Request-ID": 'x" level=error injected'})
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["X-Request-ID"])  # not a plain token: replaced
    too_long = world.client.get("/healthz", headers={"X-Request-ID": "a" * 129})
    assert too_long.headers["X-Request-ID"] != "a" * 129
    ids = [line["request_id"] for line in _lines(access_log)]
    assert ids == [r.headers["X-Request-ID"] for r in (given, made, forged, too_long)]
    interactions = [line["interaction"] for line in _lines(access_log)]
    assert interactions == ["capabilities", "capabilities", "healthz", "healthz"]


def test_errors_are_logged_and_counted_too(world: World, access_log: pytest.LogCaptureFixture) -> None:
    doctor = world.doctor(IDNATPS, INS)
    assert doctor.get("Patient/not..valid/_history/x/y").status_code == 404
    assert world.client.get("/nowhere").status_code == 404
    unrouted, unmatched = _lines(access_log)
    assert unrouted["status"] == 404 and unrouted["interaction"] == "unknown"
    assert unmatched["status"] == 404 and unmatched["interaction"] == "unmatched"


def test_a_log_line_holds_any_field_and_every_character() -> None:
    """A field JSON has no type for is written as its text, a key that is no string as one; the
    line stays one line, accents as they are."""
    record = logging.LogRecord("dmp_server.jobs", logging.WARNING, __file__, 1, "échec %s", ("job",), None)
    record.fields = {"path": Path("/data/dmp"), 7: "seven", "note": "première\nligne"}
    line = JsonLines().format(record)
    assert "\n" not in line and "échec" in line
    parsed = json.loads(line)
    assert parsed["message"] == "échec job" and parsed["level"] == "warning" and parsed["logger"] == "dmp_server.jobs"
    assert parsed["path"] == "/data/dmp" and parsed["7"] == "seven" and parsed["note"] == "première\nligne"


# -- trusted proxies -------------------------------------------------------------------------------


def test_x_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(None, ["10.0.0.0/8", "::1"])
    assert proxies.client("198.51.100.7", "203.0.113.9") == "198.51.100.7"  # the peer is no proxy of ours
    assert proxies.client("10.1.2.3", "203.0.113.9") == "203.0.113.9"
    # from the right: our proxies' hops are skipped; what the client itself wrote (left) is not believed
    assert proxies.client("10.1.2.3", "1.2.3.4, 203.0.113.9, 10.9.9.9") == "203.0.113.9"
    assert proxies.client("::1", "10.0.0.5") == "10.0.0.5"  # only trusted hops: the outermost one
    assert proxies.client("10.1.2.3", "203.0.113.9, junk") == "10.1.2.3"  # a garbled hop: nothing beyond
    assert proxies.client("10.1.2.3", None) == "10.1.2.3"


def test_the_trail_and_log_take_the_client_from_a_trusted_proxy(
    tmp_path: Path, access_log: pytest.LogCaptureFixture
) -> None:
    world = World(tmp_path, trusted_proxies=("127.0.0.1",))
    try:
        pid = world.seed_granted(INS, IDNATPS)
        doctor = world.doctor(IDNATPS, INS)
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        assert doctor.get(f"Patient/{pid}", headers=forwarded).status_code == 200
        assert _lines(access_log)[-1]["client"] == "203.0.113.9"
        (event,) = audit_events(world, INS)
        assert {agent.get("network", {}).get("address") for agent in event["agent"]} == {None, "203.0.113.9"}
    finally:
        world.close()


def test_x_forwarded_for_is_ignored_without_trusted_proxies(world: World, access_log: pytest.LogCaptureFixture) -> None:
    assert world.client.get("/healthz", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    assert _lines(access_log)[-1]["client"] == "127.0.0.1"
