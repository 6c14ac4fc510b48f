"""The periodic-job runner: one process at a time, a failing job does not stop the others."""

from __future__ import annotations

import pytest

from fhir_server.app import JOBS
from fhir_server.dmp.jobs import Job, JobContext, _only_one_runner, run_jobs
from fhir_server.fhir.service import FhirService
from fhir_server.runtime.config import Config
from fhir_server.runtime.mail import DisabledMailer


@pytest.fixture
def context(service: FhirService) -> JobContext:
    return JobContext(service, DisabledMailer())


class TwoJobs(dict[str, Job]):
    """A failing job then a counting one; ``ran`` says which ran, in order."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        super().__init__(broken=self.broken, counting=self.counting)

    def broken(self, context: JobContext) -> int:
        self.ran.append("broken")
        raise RuntimeError("this job fails")

    def counting(self, context: JobContext) -> int:
        self.ran.append("counting")
        return 3


@pytest.fixture
def two_jobs() -> TwoJobs:
    return TwoJobs()


def test_a_failing_job_does_not_stop_the_others(context: JobContext, two_jobs: TwoJobs) -> None:
    assert run_jobs(context, two_jobs) == {"broken": -1, "counting": 3}
    assert two_jobs.ran == ["broken", "counting"]
    assert run_jobs(context, two_jobs, ["counting"]) == {"counting": 3}
    with pytest.raises(ValueError, match="nope"):
        run_jobs(context, two_jobs, ["nope"])


def test_jobs_do_not_run_while_another_runner_holds_the_lock(
    context: JobContext, two_jobs: TwoJobs, config: Config
) -> None:
    with _only_one_runner(config.data_dir) as mine:
        assert mine
        assert run_jobs(context, two_jobs) is None
    assert two_jobs.ran == []
    assert run_jobs(context, two_jobs) is not None


def test_expired_records_are_forgotten(context: JobContext, service: FhirService) -> None:
    now = int(context.clock().timestamp())
    service.store.put_record("login-challenge", "old", b"", expires=now - 1)
    service.store.put_record("login-challenge", "live", b"", expires=now + 300)
    service.store.put_record("account", "kept", b"")
    assert run_jobs(context, JOBS, ["purge-records"]) == {"purge-records": 1}
    assert service.store.record_keys("login-challenge") == ["live"]
    assert service.store.record_keys("account") == ["kept"]
