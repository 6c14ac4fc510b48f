"""``dmp-server serve`` as a host runs it: real processes, real ports, real signals.

The server is gunicorn: two instances on one host each keep their own control socket (in their
data directory) and their own periodic jobs; SIGTERM stops one gracefully and leaves the other
alone. ``--port`` makes the base URL; ``token`` from another folder, given the data directory,
signs with that server's key for that base URL; bad settings are one line and exit code 2.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fhir_server.cli import main
from tests.serving import Running, call, clean_env, free_port, start

SERVER = [sys.executable, "-m", "fhir_server.cli"]
INS = "180017512345660"
PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}],
    "name": [{"family": "Martin"}],
}


def _control(socket: Path, command: str) -> dict[str, object]:
    """Ask gunicorn's control socket, as an operator would with ``gunicornc``."""
    script = "import sys; from gunicorn.ctl.cli import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", script, "-s", str(socket), "-c", command, "-j"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def _quiet(database: Path) -> int:
    """The database file's modification time once it stopped changing (the start's own writes)."""
    seen, stable_since = database.stat().st_mtime_ns, time.monotonic()
    deadline = stable_since + 10.0
    while time.monotonic() - stable_since < 0.5 and time.monotonic() < deadline:
        time.sleep(0.05)
        now = database.stat().st_mtime_ns
        if now != seen:
            seen, stable_since = now, time.monotonic()
    return seen


def _written_after(database: Path, mtime: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if database.stat().st_mtime_ns != mtime:
            return True
        time.sleep(0.05)
    return False


def _serve(folder: Path, *options: str) -> Running:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    return start([*SERVER, "serve", "--port", str(port), *options], folder, clean_env(), port)


def test_two_servers_on_one_host_keep_their_own_control_socket_and_jobs(tmp_path: Path) -> None:
    first = _serve(tmp_path / "a", "--workers", "2", "--threads", "2")
    try:
        second = _serve(tmp_path / "b", "--workers", "2", "--threads", "2")
        try:
            sockets = [tmp_path / name / "data" / "gunicorn.ctl" for name in ("a", "b")]
            for running, socket in zip((first, second), sockets, strict=True):
                assert stat.S_ISSOCK(socket.stat().st_mode)
                assert _control(socket, "show stats")["pid"] == running.proc.pid  # its own master
                assert _control(socket, "show workers")["count"] == 2
                assert f"FHIR base {running.root}/fhir" in running.output()
                assert "gunicorn, 2 worker(s) × 2 thread(s)" in running.output()
            _metrics_add_up_over_workers(first)
            assert first.stop() == 0  # SIGTERM: a graceful stop
            assert not sockets[0].exists()
            assert call("GET", f"{second.root}/readyz")[0] == 200  # the other one is untouched
            assert _control(sockets[1], "show stats")["pid"] == second.proc.pid
        finally:
            assert second.stop() == 0
    finally:
        first.stop()
    for running in (first, second):
        # one process per data directory ran the periodic jobs, and it said so once
        assert running.output().count("this process runs the periodic jobs") == 1


def _healthz_count(server: Running) -> float:
    with urllib.request.urlopen(f"{server.root}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    found = re.search(r'dmp_http_requests_total\{interaction="healthz",status="200",type=""\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def _metrics_add_up_over_workers(server: Running) -> None:
    """Each request on a new connection, so both workers serve some; whichever worker answers
    /metrics, it counts them all (prometheus_client's multiprocess mode)."""
    for _ in range(30):
        assert call("GET", f"{server.root}/healthz")[0] == 200
    assert [_healthz_count(server) for _ in range(6)] == [30.0] * 6


def test_the_port_makes_the_base_url_and_token_follows_the_data_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv" / "state"
    server = _serve(tmp_path / "srv", "--data-dir", str(data_dir))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        assert (data_dir / "keys").is_dir() and not (tmp_path / "srv" / "data").exists()
        argv = ["token", "--role", "HCP", "--profession", "10", "--person-id", INS]
        given = [*SERVER, *argv, "--data-dir", str(data_dir)]
        minted = subprocess.run(given, cwd=elsewhere, env=clean_env(), capture_output=True, text=True)
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        database = data_dir / "dmp.sqlite3"
        quiet = _quiet(database)
        status, headers, body = call("POST", f"{server.root}/fhir/Patient", PATIENT, token)
        assert status == 201, body
        # a commit writes the log only; the workers' own thread copies it into the database
        assert _written_after(database, quiet), "no checkpoint thread copied the write into the database"
        assert headers["Location"].startswith(f"{server.root}/fhir/Patient/")  # not 127.0.0.1:8080
        assert call("GET", headers["Location"].split("/_history")[0], token=token)[0] == 200

        # without the data directory, from another folder: refused, and no key made there
        lost = subprocess.run([*SERVER, *argv], cwd=elsewhere, env=clean_env(), capture_output=True, text=True)
        assert lost.returncode == 2 and lost.stdout == ""
        assert "no server data in" in lost.stderr and len(lost.stderr.strip().splitlines()) == 1
        assert not (elsewhere / "data").exists()
    finally:
        assert server.stop() == 0


def test_dev_runs_the_development_server_only_when_asked(tmp_path: Path) -> None:
    server = _serve(tmp_path, "--dev")
    try:
        assert call("GET", f"{server.root}/fhir/metadata?_summary=true")[0] == 200
        assert "Werkzeug development server (--dev): not for production" in server.output()
        assert '"interaction": "capabilities"' in server.output()  # its JSON request line...
        assert "_summary" not in server.output()  # ...and no Werkzeug line with the path and query
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("DMP_BASE_URL", "notaurl", "DMP_BASE_URL must be an http(s) URL"),
        ("DMP_STORE", "redis://cache/0", "DMP_STORE must be sqlite:///path or mongodb://"),
        ("DMP_WORKERS", "many", "DMP_WORKERS must be an integer"),
        ("DMP_THREADS", "0", "DMP_THREADS must be at least 1"),
        ("DMP_MAX_BODY", "10MB", "DMP_MAX_BODY must be an integer"),
        ("DMP_METRICS", "perhaps", "DMP_METRICS must be true or false"),
        ("DMP_TRUSTED_PROXIES", "10.0.0.0/33", "DMP_TRUSTED_PROXIES: '10.0.0.0/33' is not an IP address"),
    ],
)
def test_a_bad_setting_is_one_line_and_exit_code_2(
    name: str,
    value: str,
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dmp-server serve: ") and says in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()  # nothing started, nothing created


def test_a_bad_port_option_is_refused_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "70000", "--data-dir", str(tmp_path / "data")]) == 2
    assert "the port must be at most 65535" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == "dmp-server 0.1.0"
