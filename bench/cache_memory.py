"""What each entry of a worker's access caches takes in memory, to size ``DMP_TOKEN_CACHE`` and
``DMP_STATE_CACHE``.

``python bench/cache_memory.py [--docs N]`` loads a small data set the way ``bench/gate_cost.py``
does (a patient in twenty with the bench doctor's grant, its emergency settings), builds the
server's gatekeeper on it, and fills its caches with one entry per patient: the verified tokens
(the doctor's token about each patient), the actors built from them, the patients' access states.
It prints the Python memory each kind of entry adds (``tracemalloc``: what the entries, their
keys and their place in the cache hold, after a first few entries paid for what is shared), and
what the default sizes come to per worker when full. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from authz.gate import DmpGatekeeper, caller  # noqa: E402  (needs the path fix above)
from authz.settings import AccessSettings  # noqa: E402
from bench.auth import DOCTOR, Tokens  # noqa: E402
from bench.datagen import patient_ins  # noqa: E402
from bench.loader import in_process_patients, load_in_process  # noqa: E402
from fhir_server.app import create_service  # noqa: E402
from fhir_server.runtime.config import Config  # noqa: E402

#: Entries made before measuring: the first ones build what later ones share (issuer keys, scopes).
WARM = 20


def _bytes_per_entry(fill: Callable[[int], object], patients: int) -> float:
    """The memory ``fill(i)`` for every patient but the first :data:`WARM` adds, per patient."""
    for index in range(WARM):
        fill(index)
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for index in range(WARM, patients):
        fill(index)
    gc.collect()
    return (tracemalloc.get_traced_memory()[0] - before) / (patients - WARM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    patients = in_process_patients(args.docs)
    if patients <= WARM:
        raise SystemExit(f"--docs must give more than {WARM} patients (20 documents each)")
    with tempfile.TemporaryDirectory(prefix="cache-memory-") as tmp:
        # Caches larger than the patients: every entry made is kept and counted.
        config = Config(data_dir=Path(tmp) / "data", token_cache=patients, state_cache=patients)
        load_in_process(config, args.docs, args.seed)
        service = create_service(config)
        gate = service.gatekeeper
        assert isinstance(gate, DmpGatekeeper)
        tokens = Tokens.for_data_dir(config.data_dir, config.base_url)
        doctor = [tokens.professional(DOCTOR, index) for index in range(patients)]
        tracemalloc.start()

        def actor(index: int) -> object:
            return caller(gate.verifier, gate.known, f"Bearer {doctor[index]}", gate.actors)

        sizes = {
            "verified token": _bytes_per_entry(lambda i: gate.verifier.verify(doctor[i]), patients),
            "actor": _bytes_per_entry(actor, patients),
            "access state": _bytes_per_entry(lambda i: gate.states.load(patient_ins(i)), patients),
        }
        tracemalloc.stop()
        service.store.close()

    defaults = AccessSettings(config.base_url, config.data_dir, config.ig_dir)
    per_token = sizes["verified token"] + sizes["actor"]
    print(f"\n{patients} patients, one doctor's token about each")
    for name, size in sizes.items():
        print(f"  {name:15} {size:7.0f} bytes per entry")
    print(
        f"  full at the defaults: {defaults.token_cache} tokens {defaults.token_cache * per_token / 2**20:.0f} MiB, "
        f"{defaults.state_cache} states {defaults.state_cache * sizes['access state'] / 2**20:.0f} MiB per worker"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
