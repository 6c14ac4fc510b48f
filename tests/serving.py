"""Real ``dmp-server`` processes for the tests of serving and packaging: start one from a given
folder with a given command, wait until it is ready, call it over HTTP, stop it with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.test_e2e import _call as e2e_call

READY_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without any DMP_ setting nor PYTHONPATH (the code must come from where the
    command is installed, not from this checkout), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMP_") and k != "PYTHONPATH"}
    return {**env, **settings}


def call(
    method: str, url: str, body: Any = None, token: str | None = None
) -> tuple[int, dict[str, str], dict[str, Any] | None]:
    """test_e2e's HTTP call, with the answer's JSON parsed."""
    status, headers, raw = e2e_call(method, url, body, token=token)
    return status, headers, json.loads(raw) if raw else None


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        """SIGTERM, gunicorn's graceful stop; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(command: list[str], cwd: Path, env: dict[str, str], port: int) -> Running:
    """``command`` (ending in ``serve ...``) from ``cwd``; returns once ``/readyz`` answers 200."""
    log = cwd / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    running = Running(proc, port, log)
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{running.output()}")
        try:
            if call("GET", f"{running.root}/readyz")[0] == 200:
                return running
        except OSError:
            pass
        time.sleep(0.3)
    running.stop()
    raise RuntimeError(f"the server was not ready in {READY_SECONDS} s:\n{running.output()}")
