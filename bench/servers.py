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
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Server(name, proc, port, log)


def fhir_base_url(port: int) -> str:
    return f"http://{HOST}:{port}/fhir"


def start_fhir_server(data_dir: Path, port: int, workers: int, threads: int, log_dir: Path) -> Server:
    """``port`` is chosen by the caller: the in-process loader must index with the same base URL."""
    env = dict(os.environ, DMP_DATA_DIR=str(data_dir), DMP_BASE_URL=fhir_base_url(port))
    cmd = [sys.executable, "-m", "fhir_server.cli", "serve", "--host", HOST, "--port", str(port)]
    cmd += ["--workers", str(workers), "--threads", str(threads)]
    return _spawn("fhir", cmd, env, log_dir / "fhir-server.log", port)


def start_ceiling(workers: int, threads: int, log_dir: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads), "-k", "gthread"]
    cmd += ["-b", f"{HOST}:{port}", "bench.ceiling_app:app"]
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
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    pids = [int(c) for c in children] or [pid]
    return [_cpu_seconds(p) for p in sorted(pids)]


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the command name: field 14 (utime) and 15 (stime) of proc(5) are at index 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
