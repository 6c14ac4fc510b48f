"""What authentication and the access decision cost per request, in-process, next to a read.

``python bench/gate_cost.py [--docs N] [--requests R] [--rounds K]`` loads a small data set the
way ``bench/run.py --load direct`` does (patients with their emergency settings and the bench
doctor's grant, documents), then times, one request after the other in this process:

* ``verify``: the bearer token's verification (:meth:`authz.tokens.TokenVerifier.verify`);
* ``guard``: the gatekeeper's work before the interaction runs (``DmpGatekeeper.guard``: the token,
  the actor, the patient's access state, the policy's decision);
* ``read``: ``GET /fhir/DocumentReference/{id}`` through the Flask test client (no HTTP socket, no
  gunicorn): the whole request, its AuditEvent included;
* ``ceiling``: ``GET /ping`` of ``bench/ceiling_app.py`` through its own test client, the same way.

Each request uses the token of a random patient (the doctor's, as in ``bench/run.py``). Figures are
the best of ``--rounds`` rounds, in microseconds: the median wall time per request and the mean
CPU time of this process per request (the read's wall time also waits for the disk: its
AuditEvent is committed with ``synchronous=FULL``), and the read as a fraction of the ceiling
measured in the same run: on a shared machine only ratios of figures taken together mean
anything. Nothing is asserted.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.auth import DOCTOR, Tokens, bearer  # noqa: E402  (needs the path fix above)
from bench.ceiling_app import app as ceiling_app  # noqa: E402
from bench.loader import in_process_arguments, in_process_patients, load_in_process  # noqa: E402
from fhir_server.app import create_app, create_service  # noqa: E402
from fhir_server.fhir.messages import FhirRequest  # noqa: E402
from fhir_server.runtime.config import Config  # noqa: E402


def _measure_us(action: Callable[[int], object], count: int) -> tuple[float, float]:
    """The median wall time of ``count`` calls of ``action(i)`` and their mean CPU time (this
    process's: what the server would spend), in microseconds."""
    times = []
    cpu = time.process_time()
    for i in range(count):
        started = time.perf_counter()
        action(i)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6, (time.process_time() - cpu) / count * 1e6


def main(argv: list[str] | None = None) -> int:
    args = in_process_arguments(__doc__ or "", 1000, argv)

    with tempfile.TemporaryDirectory(prefix="gate-cost-") as tmp:
        config = Config(data_dir=Path(tmp) / "data")
        sample = load_in_process(config, args.docs, args.seed)
        service = create_service(config)
        client = create_app(service=service).test_client()
        ceiling = ceiling_app.test_client()
        gate = service.gatekeeper
        tokens = Tokens.for_data_dir(config.data_dir, config.base_url)
        rng = random.Random(args.seed)
        picks = [rng.choice(sample.ids) for _ in range(args.requests)]
        headers = [bearer(tokens.professional(DOCTOR, patient)) for _, patient in picks]

        def verify(i: int) -> object:
            return gate.verifier.verify(headers[i]["Authorization"].split(" ", 1)[1])  # type: ignore[attr-defined]

        def guard(i: int) -> object:
            return gate.guard(FhirRequest("GET", f"DocumentReference/{picks[i][0]}", headers=headers[i]), "read")

        def read(i: int) -> object:
            response = client.get(f"/fhir/DocumentReference/{picks[i][0]}", headers=headers[i])
            assert response.status_code == 200, response.get_data(as_text=True)
            return response

        def ping(i: int) -> object:
            return ceiling.get("/ping")

        measures = {"verify": verify, "guard": guard, "read": read, "ceiling": ping}
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, action in measures.items():
                median, mean_cpu = _measure_us(action, args.requests)
                wall[name] = min(wall.get(name, median), median)
                cpu[name] = min(cpu.get(name, mean_cpu), mean_cpu)
        service.store.close()

    patients = in_process_patients(args.docs)
    print(f"\n{args.docs} documents, {patients} patients, {args.requests} requests x {args.rounds} rounds (best round)")
    print(f"  {'':8} {'wall p50':>10} {'CPU mean':>10}")
    for name in measures:
        print(f"  {name:8} {wall[name]:8.0f} µs {cpu[name]:7.0f} µs")
    print(f"  read / ceiling: {wall['ceiling'] / wall['read']:.1%} (wall), {cpu['ceiling'] / cpu['read']:.1%} (CPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
