"""Start and stop the servers under test as real processes on a free loopback port.

The FHIR server is started exactly as an operator would (``python -m fhir_server.cli serve``),
so the figures include gunicorn, Flask and the real configuration path, not a test client.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT = 120.0


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def free_port() -> int:
    """A port the kernel says is free now (a tiny race with other programs is acceptable here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _spawn(name: str, cmd: list[str], env: dict[str, str], log: Path, port: int) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:  # appended: the FHIR server may be started twice in one run
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(name, proc, port, log)


def fhir_base_url(port: int) -> str:
    return f"http://{HOST}:{port}/fhir"


def _fhir_env(data_dir: Path, port: int) -> dict[str, str]:
    return dict(os.environ, DMP_DATA_DIR=str(data_dir), DMP_BASE_URL=fhir_base_url(port))


def start_fhir_server(data_dir: Path, port: int, workers: int, threads: int, log_dir: Path) -> Server:
    """``port`` is chosen by the caller: the in-process loader must index with the same base URL."""
    cmd = [sys.executable, "-m", "fhir_server.cli", "serve", "--host", HOST, "--port", str(port)]
    cmd += ["--workers", str(workers), "--threads", str(threads)]
    return _spawn("fhir", cmd, _fhir_env(data_dir, port), log_dir / "fhir-server.log", port)


def _gunicorn(app: str, port: int, workers: int, threads: int) -> list[str]:
    """The gunicorn settings ``dmp-server serve`` uses (gthread workers, no access log), for the other apps."""
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads), "-k", "gthread"]
    return [*cmd, "-b", f"{HOST}:{port}", app]


def start_open_app(data_dir: Path, port: int, workers: int, threads: int, log_dir: Path) -> Server:
    """``bench/open_app.py`` (no access control) on the same data, port and base URL as the server."""
    cmd = _gunicorn("bench.open_app:app", port, workers, threads)
    return _spawn("open", cmd, _fhir_env(data_dir, port), log_dir / "open-app.log", port)


def start_ceiling(workers: int, threads: int, log_dir: Path) -> Server:
    port = free_port()
    cmd = _gunicorn("bench.ceiling_app:app", port, workers, threads)
    return _spawn("ceiling", cmd, dict(os.environ), log_dir / "ceiling.log", port)


def wait_ready(server: Server, path: str) -> float:
    """Poll ``path`` until it answers 200; returns the start-up time in seconds."""
    started = time.perf_counter()
    while time.perf_counter() - started < READY_TIMEOUT:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} server exited with {server.proc.returncode}:\n{server.log_tail()}")
        if _answers(server.port, path):
            return time.perf_counter() - started
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} server did not answer {path} in {READY_TIMEOUT}s:\n{server.log_tail()}")


def _answers(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path, headers={"Accept": "application/fhir+json"})
        resp = conn.getresponse()
        resp.read()
        return resp.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def stop(server: Server) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL if it lingers. Only our own child."""
    if server.proc.poll() is not None:
        return
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)


def worker_cpu_seconds(server: Server) -> list[float]:
    """CPU seconds used so far by each worker process (Linux ``/proc``; empty elsewhere).

    gunicorn hands each keep-alive connection to one worker for its whole life, so the split of
    the client connections between workers — and thus of the CPU — varies from run to run; this is
    what makes it visible.
    """
    pid = server.proc.pid
    children = _children(pid)
    if children is None:
        return []
    return [_cpu_seconds(p) for p in sorted(children or [pid])]


def _children(pid: int) -> list[int] | None:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return None


def _server_cpu_seconds(server: Server) -> float:
    """The master process and its workers together."""
    pid = server.proc.pid
    return _cpu_seconds(pid) + sum(_cpu_seconds(child) for child in _children(pid) or [])


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the command name: field 14 (utime) and 15 (stime) of proc(5) are at index 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``: everything but idle and iowait);
    None where there is no ``/proc``."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal (guest time is already counted in user)
    values = [int(v) for v in fields[:8]]
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """CPU the machine spent on neither the server under test nor this client during a scenario.

    The VM is shared: another job taking a core halves what is left for the server, and the
    figures alone would not show it. Steal time (the hypervisor's other guests) counts as other.
    """

    def __init__(self, server: Server):
        self._server = server
        self._busy = machine_busy_seconds()
        self._server_cpu = _server_cpu_seconds(server)
        self._client = time.process_time()

    def seconds(self) -> float | None:
        busy = machine_busy_seconds()
        if busy is None or self._busy is None:
            return None
        server = _server_cpu_seconds(self._server) - self._server_cpu
        client = time.process_time() - self._client
        return round(max(0.0, busy - self._busy - server - client), 1)
