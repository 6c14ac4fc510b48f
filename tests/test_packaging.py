"""``pip install .`` makes a working server: the wheel ships ``ig/``, ``profiles/`` and
``capability/``, and the installed command serves from any folder.

The wheel is built from a copy of the checkout's files (so no ``build/`` or ``*.egg-info``
lands in the checkout), installed without its dependencies into a fresh virtual environment
that borrows this one's site-packages for them (the suite must not download Flask & co. again),
and run with no ``PYTHONPATH`` from a folder far from the checkout: the server can only find its
code and data where the wheel put them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from tests.paths import ROOT
from tests.serving import call, clean_env, free_port, start

INS = "180017512345660"


#: Left out of the copy: at the top, what is not source; anywhere, caches and build leftovers.
_NOT_SOURCE = {".git", ".venv", "data", "build", "dist", "bench-results"}
_LEFTOVERS = ("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".egg-info")


def _checkout_copy(target: Path) -> Path:
    def ignored(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == ROOT
        return {n for n in names if (top and n in _NOT_SOURCE) or n.endswith(_LEFTOVERS)}

    shutil.copytree(ROOT, target, ignore=ignored)
    return target


def _wheel(tmp_path: Path) -> Path:
    source = _checkout_copy(tmp_path / "source")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("dmp_server-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    home = tmp_path / "venv"
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies, from this environment: a plain path, so its own .pth files (the editable
    # install of this checkout) are not run and cannot hand the checkout's code to the new one.
    (Path(purelib) / "borrowed-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return home


def test_the_wheel_ships_its_data_and_serves_from_any_folder(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    data = "dmp_server-0.1.0.data/data/share/dmp-server/"
    for shipped in ("ig/SearchParameter/", "ig/CodeSystem/", "ig/authorisation/", "profiles/", "capability/"):
        assert any(name.startswith(data + shipped) for name in names), shipped
    # where the licence goes depends on the setuptools version (PEP 639 moved it to licenses/)
    assert {"dmp_server-0.1.0.dist-info/LICENSE", "dmp_server-0.1.0.dist-info/licenses/LICENSE"} & set(names)

    command = _fresh_venv(tmp_path, wheel) / "bin" / "dmp-server"
    folder = tmp_path / "somewhere" / "else"
    folder.mkdir(parents=True)
    env = clean_env()
    version = subprocess.run([str(command), "--version"], cwd=folder, env=env, capture_output=True, text=True)
    assert version.stdout.strip() == "dmp-server 0.1.0", version.stderr

    port = free_port()
    server = start([str(command), "serve", "--port", str(port), "--workers", "1"], folder, env, port)
    try:
        installed = str(tmp_path / "venv")
        assert "FHIR base" in server.output() and str(folder / "data") in server.output()
        status, _, metadata = call("GET", f"{server.root}/fhir/metadata")
        assert status == 200 and metadata is not None
        assert metadata["implementation"]["url"] == f"{server.root}/fhir"
        where = subprocess.run(
            [
                str(tmp_path / "venv" / "bin" / "python"),
                "-c",
                "import fhir_server.runtime.config as c; print(c.PROJECT_ROOT)",
            ],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        assert where.stdout.strip() == f"{installed}/share/dmp-server", where.stderr  # not the checkout

        argv = [str(command), "token", "--role", "HCP", "--profession", "10", "--person-id", INS]
        minted = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": INS}],
            "name": [{"family": "Martin"}],
        }
        status, _, body = call("POST", f"{server.root}/fhir/Patient", patient, token)
        assert status == 201, body
        search = f"{server.root}/fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{INS}"
        status, _, found = call("GET", search, token=token)
        assert status == 200 and found is not None and found["total"] == 1
    finally:
        assert server.stop() == 0
