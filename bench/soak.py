"""Soak test: does the server stay flat — memory, open files, no 5xx — however long it runs?

It starts the server exactly as the README's first command does — ``dmp-server serve``, in a
fresh folder so its data go to ``./data`` there, with no ``DMP_`` setting — except for
``--port`` (the default 8080 may be taken on a shared machine). Then it sends ``--requests``
mixed requests from ``--clients`` keep-alive connections, each with a real token signed by the
server's key (read from ``./data/keys``, as ``dmp-server token`` does), and every
``--every`` requests prints the resident memory and open descriptors of all the server's
processes (the gunicorn master and its workers), the requests per second since the last line,
and the 5xx seen so far. Nothing is asserted: the curve is the result.

The mix, per request: reads (``GET Patient/{id}``, ``GET DocumentReference/{id}`` of one created
earlier), searches (``GET Patient?identifier=``), ITI-67 (``GET DocumentReference?patient.
identifier=...&status=current``), creates (``POST DocumentReference``) and ITI-65 (a Provide
Document Bundle of one CDA document), about ``--patients`` DMPs made first by a doctor.

    nice -n 10 python -m bench.soak                      # 200 000 requests
    nice -n 10 python -m bench.soak --requests 20000 --every 2000
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import orjson

from bench.auth import DOCTOR, Tokens
from bench.datagen import INS_NIR, Population, ins, make_document, make_patient, make_practitioner, patient_id
from bench.httpload import transaction_bundle
from bench.mhd import provide_bundle_bytes
from bench.servers import HOST, free_port

FHIR_JSON = "application/fhir+json"
#: (kind, weight): what one request of the mix is, and how often.
MIX = (("read", 30), ("search", 20), ("iti67", 25), ("create", 20), ("iti65", 5))


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)  # the first few 5xx and connection failures
    created: dict[int, list[str]] = field(default_factory=dict)  # patient -> DocumentReference ids
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_request(self, limit: int) -> int | None:
        with self.lock:
            if self.sent >= limit:
                return None
            self.sent += 1
            return self.sent

    def answered(self, status: int, what: str, body: bytes) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status >= 500 and len(self.errors) < 20:
                self.errors.append(f"{status} {what}: {body[:300]!r}")

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)


# -- the server's processes ----------------------------------------------------------------------


def _processes(pid: int) -> list[int]:
    """The server's process and its descendants (gunicorn's master and workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
    return found


def _kb(path: str, key: str) -> int:
    """A ``key: N kB`` line of a /proc file (``status``'s VmRSS, ``smaps_rollup``'s Pss)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def footprint(pid: int) -> tuple[int, float, float, int]:
    """(processes, RSS MB summed, PSS MB summed, open descriptors summed). RSS counts the pages
    the workers share with the master once per process; PSS splits them, so it adds up."""
    pids = _processes(pid)
    rss = sum(_kb(f"/proc/{p}/status", "VmRSS") for p in pids) / 1024
    pss = sum(_kb(f"/proc/{p}/smaps_rollup", "Pss") for p in pids) / 1024
    return len(pids), rss, pss, sum(_fds(p) for p in pids)


# -- the clients ---------------------------------------------------------------------------------


class Client:
    def __init__(self, port: int, tokens: Tokens, patients: int, tally: Tally, seed: int):
        self.port = port
        self.tokens = tokens
        self.patients = patients
        self.tally = tally
        self.rng = random.Random(seed)
        self.conn = http.client.HTTPConnection(HOST, port, timeout=120)
        self.kinds = [kind for kind, weight in MIX for _ in range(weight)]

    def call(self, method: str, path: str, patient: int, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {self.tokens.professional(DOCTOR, patient)}"}
        if body is not None:
            headers |= {"Content-Type": FHIR_JSON, "Prefer": "return=minimal"}
        for attempt in (1, 2):
            try:
                self.conn.request(method, f"/fhir/{path}", body=body, headers=headers)
                resp = self.conn.getresponse()
                return resp.status, dict(resp.getheaders()), resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()  # a dropped keep-alive connection: reconnect once
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
                if attempt == 2:
                    return 599, {}, repr(exc).encode()
        raise AssertionError("unreachable")

    def one(self) -> None:
        kind = self.rng.choice(self.kinds)
        patient = self.rng.randrange(self.patients)
        nir = ins(patient)
        body: bytes | None = None
        if kind == "read":
            known = self.tally.created.get(patient)
            if known and self.rng.random() < 0.5:
                method, path = "GET", f"DocumentReference/{self.rng.choice(known)}"
            else:
                method, path = "GET", f"Patient/{patient_id(patient)}"
        elif kind == "search":
            method, path = "GET", f"Patient?identifier={quote(f'{INS_NIR}|{nir}')}"
        elif kind == "iti67":
            method, path = "GET", f"DocumentReference?patient.identifier={quote(f'{INS_NIR}|{nir}')}&status=current"
        elif kind == "create":
            doc = make_document(self.rng, Population(self.patients, PRACTITIONERS), patient=patient)
            method, path, body = "POST", "DocumentReference", orjson.dumps(doc)
        else:
            method, path, body = "POST", "", provide_bundle_bytes(self.rng, patient, DOCTOR.idnatps)
        status, headers, answer = self.call(method, path, patient, body)
        self.tally.answered(status, f"{kind} {method}", answer)
        if kind == "create" and status == 201:
            location = headers.get("Location", "").split("/")
            if len(location) >= 4:
                with self.tally.lock:
                    self.tally.created.setdefault(patient, []).append(location[-3])

    def run(self, limit: int) -> None:
        while self.tally.next_request(limit) is not None:
            self.one()
        self.conn.close()


# -- the run -------------------------------------------------------------------------------------

PRACTITIONERS = 20


def start_server(folder: Path, port: int) -> subprocess.Popen[bytes]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("DMP_")}
    log = (folder / "server.log").open("ab")
    server = shutil.which("dmp-server") or sys.exit("dmp-server is not installed in this environment")
    return subprocess.Popen([server, "serve", "--port", str(port)], cwd=folder, env=env, stdout=log, stderr=log)


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.5)
    sys.exit("the server did not become ready")


def seed(port: int, tokens: Tokens, patients: int) -> None:
    """The directory of professionals (ADM), then each DMP, created by the doctor."""
    conn = http.client.HTTPConnection(HOST, port, timeout=120)
    headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
    body = transaction_bundle([make_practitioner(i) for i in range(PRACTITIONERS)])
    conn.request("POST", "/fhir", body=body, headers={**headers, "Authorization": f"Bearer {tokens.admin()}"})
    resp = conn.getresponse()
    if resp.status != 200:
        sys.exit(f"seeding the directory failed: {resp.status} {resp.read()[:500]!r}")
    resp.read()
    for index in range(patients):
        patient = make_patient(index)
        auth = {"Authorization": f"Bearer {tokens.professional(DOCTOR, index)}"}
        conn.request("PUT", f"/fhir/Patient/{patient['id']}", body=orjson.dumps(patient), headers={**headers, **auth})
        resp = conn.getresponse()
        if resp.status not in (200, 201):
            sys.exit(f"creating DMP {index} failed: {resp.status} {resp.read()[:500]!r}")
        resp.read()
    conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--every", type=int, default=10_000, help="print a line every N requests")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive connections")
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dmp-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    proc = start_server(folder, port)
    try:
        wait_ready(proc, port)
        tokens = Tokens.for_data_dir(folder / "data", f"http://{HOST}:{port}/fhir")
        seed(port, tokens, args.patients)
        return soak(proc, port, tokens, args)
    finally:
        proc.send_signal(signal.SIGTERM)  # gunicorn's graceful stop
        try:
            code = proc.wait(timeout=60)
            print(f"server stopped on SIGTERM with exit code {code}", flush=True)
        except subprocess.TimeoutExpired:
            proc.kill()
            print("server did not stop within 60 s of SIGTERM: killed", flush=True)
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def soak(proc: subprocess.Popen[bytes], port: int, tokens: Tokens, args: argparse.Namespace) -> int:
    tally = Tally()
    clients = [Client(port, tokens, args.patients, tally, args.seed * 1000 + i) for i in range(args.clients)]
    threads = [threading.Thread(target=c.run, args=(args.requests,), daemon=True) for c in clients]
    started = last_time = time.monotonic()
    last_done = 0
    print("requests  seconds  req/s  processes  RSS_MB  PSS_MB  fds  5xx", flush=True)

    def line(done: int) -> None:
        nonlocal last_time, last_done
        now = time.monotonic()
        rate = (done - last_done) / max(now - last_time, 1e-9)
        count, rss, pss, fds = footprint(proc.pid)
        figures = f"{count:10d} {rss:7.0f} {pss:7.0f} {fds:4d} {tally.server_errors:4d}"
        print(f"{done:8d} {now - started:8.0f} {rate:6.1f} {figures}", flush=True)
        last_time, last_done = now, done

    line(0)
    for thread in threads:
        thread.start()
    next_mark = args.every
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        done = sum(tally.statuses.values())
        while done >= next_mark:
            line(next_mark)
            next_mark += args.every
    done = sum(tally.statuses.values())
    if done != last_done:
        line(done)
    print(f"statuses: {dict(sorted(tally.statuses.items()))}")
    for error in tally.errors:
        print(f"  {error}")
    return 1 if tally.server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
