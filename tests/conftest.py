"""Shared fixtures: a real service on a fresh SQLite file, the Flask test client, and a real
server process for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import authz.tokens
from authz.devtoken import make_dev_token
from authz.keys import load_or_create_server_key
from authz.tokens import own_issuer
from fhir_server.app import create_app, create_service
from fhir_server.fhir.service import FhirService
from fhir_server.runtime.config import Config
from tests.dmp import World
from tests.mongo_double import drop, mongo_url, use_double
from tests.paths import ROOT
from tests.support import open_gatekeeper

if TYPE_CHECKING:
    from tests.smtp_sink import SmtpSink

# ``smtp_sink``: a real SMTP server on loopback; ``jwks_server``: a JWK Set served on loopback.
pytest_plugins = ["tests.smtp_sink", "tests.jwks_server"]

BASE = "/fhir"
FHIR_JSON = "application/fhir+json"


#: API test modules that also run on the MongoDB store (mongomock, or DMP_TEST_MONGODB_URI):
#: the REST interactions, search, batch/transaction Bundles (atomic), and the DMP rules, whose
#: access filters go inside its queries.
MONGO_API_MODULES = frozenset(
    {
        "tests.test_rest",
        "tests.test_search",
        "tests.test_transactions",
        "tests.test_dmp_rules",
        "tests.test_search_conformance",
    }
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the tests of :data:`MONGO_API_MODULES` that build a server once per store backend."""
    if metafunc.module.__name__ in MONGO_API_MODULES and "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", ["sqlite", "mongodb"], indirect=True)


@pytest.fixture
def signatures(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens whose signature got checked (each given to ``_check_signature``, the call that
    checks it; the real function still runs)."""
    seen: list[str] = []
    real = authz.tokens._check_signature

    def counting(token: str, *args: Any, **kwargs: Any) -> None:
        seen.append(token)
        real(token, *args, **kwargs)

    monkeypatch.setattr(authz.tokens, "_check_signature", counting)
    return seen


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """The ``DMP_STORE`` of a test's server: SQLite in its data directory by default."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    use_double(monkeypatch)
    url = mongo_url(f"dmp_api_{abs(hash(str(tmp_path))):x}")
    yield url
    drop(url)


@pytest.fixture
def config(tmp_path: Path, store_url: str | None) -> Config:
    return Config(data_dir=tmp_path / "data", store_url=store_url)


@pytest.fixture
def service(config: Config) -> Iterator[FhirService]:
    """The FHIR core with an open gatekeeper (see tests/support.py); DMP tests build their own."""
    svc = create_service(config, gatekeeper=open_gatekeeper)
    yield svc
    svc.store.close()


@pytest.fixture
def world(tmp_path: Path, store_url: str | None) -> Iterator[World]:
    """A DMP test world (tests/dmp.py): the server with the DMP gatekeeper, on a fresh store."""
    w = World(tmp_path, store_url=store_url)
    yield w
    w.close()


@pytest.fixture
def app(service: FhirService) -> Flask:
    return create_app(service=service)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Fhir:
    """A thin FHIR client over the Flask test client: JSON in, status and JSON out."""

    def __init__(self, client: FlaskClient):
        self.client = client

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if body is not None:
            kwargs["json"] = body
            headers.setdefault("Content-Type", FHIR_JSON)
        return self.client.open(f"{BASE}/{path.lstrip('/')}", method=method, headers=headers, **kwargs)

    def create(self, resource: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        response = self.request("POST", resource["resourceType"], resource, **kwargs)
        assert response.status_code == 201, response.get_data(as_text=True)
        created: dict[str, Any] = response.get_json()
        return created

    def search(self, query: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request("GET", query, **kwargs)
        assert response.status_code == 200, response.get_data(as_text=True)
        bundle: dict[str, Any] = response.get_json()
        return bundle

    def ids(self, query: str) -> set[str]:
        bundle = self.search(query)
        return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


@pytest.fixture
def fhir(client: FlaskClient) -> Fhir:
    return Fhir(client)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class LiveServer:
    """A running ``dmp-server serve`` process and how to get tokens it accepts."""

    base_url: str
    data_dir: Path
    mail: SmtpSink  # what the server sent by e-mail

    def token(self, role: str, **claims: Any) -> str:
        key = load_or_create_server_key(self.data_dir)
        sub = claims.pop("sub", None) or claims.get("idnatps") or claims.get("person_id") or f"{role}-user"
        return make_dev_token(
            key, issuer=own_issuer(self.base_url), audience=self.base_url, role=role, sub=sub, **claims
        )


@contextmanager
def running_server(data_dir: Path, mail: SmtpSink, **settings: str) -> Iterator[LiveServer]:
    """``dmp-server serve`` in its own process on a free loopback port, with the DMP rules on, its
    mail going to ``mail`` and ``settings`` as further ``DMP_`` environment variables."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/fhir"
    env = {**os.environ, "DMP_DATA_DIR": str(data_dir), "DMP_BASE_URL": base_url, "PYTHONPATH": str(ROOT)}
    env |= {"DMP_SMTP_HOST": mail.host, "DMP_SMTP_PORT": str(mail.port), **settings}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"the server did not start: {err}") from None
                time.sleep(0.1)
        yield LiveServer(base_url, data_dir, mail)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, session_smtp_sink: SmtpSink) -> Iterator[LiveServer]:
    """``dmp-server serve`` in its own process, on a free loopback port, with the DMP rules on and
    its mail going to an SMTP sink on loopback."""
    with running_server(tmp_path_factory.mktemp("live") / "data", session_smtp_sink) as server:
        yield server
