"""The periodic-job runner: one process at a time, a failing job does not stop the others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fhir_server.config import Config
from fhir_server.jobs import JobContext, _only_one_runner, run_jobs
from fhir_server.mail import DisabledMailer
from fhir_server.service import FhirService


@pytest.fixture
def context(service: FhirService) -> JobContext:
    return JobContext(service, DisabledMailer())


@pytest.fixture
def two_jobs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    ran: list[str] = []

    def broken(context: JobContext) -> int:
        ran.append("broken")
        raise RuntimeError("this job fails")

    def counting(context: JobContext) -> int:
        ran.append("counting")
        return 3

    monkeypatch.setattr("fhir_server.jobs.JOBS", {"broken": broken, "counting": counting})
    yield ran


def test_a_failing_job_does_not_stop_the_others(context: JobContext, two_jobs: list[str]) -> None:
    assert run_jobs(context) == {"broken": -1, "counting": 3}
    assert two_jobs == ["broken", "counting"]
    assert run_jobs(context, ["counting"]) == {"counting": 3}
    with pytest.raises(ValueError, match="nope"):
        run_jobs(context, ["nope"])


def test_jobs_do_not_run_while_another_runner_holds_the_lock(
    context: JobContext, two_jobs: list[str], config: Config
) -> None:
    with _only_one_runner(config.data_dir) as mine:
        assert mine
        assert run_jobs(context) is None
    assert two_jobs == []
    assert run_jobs(context) is not None



def test_expired_records_are_forgotten(context: JobContext, service: FhirService) -> None:
    now = int(context.clock().timestamp())
    service.store.put_record("login-challenge", "old", b"", expires=now - 1)
    service.store.put_record("login-challenge", "live", b"", expires=now + 300)
    service.store.put_record("account", "kept", b"")
    assert run_jobs(context, ["purge-records"]) == {"purge-records": 1}
    assert service.store.record_keys("login-challenge") == ["live"]
    assert service.store.record_keys("account") == ["kept"]
