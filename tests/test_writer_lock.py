"""Writers queue on a lock instead of polling SQLite's busy handler."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from storage.query import OPEN_SCOPE, Query
from storage.sqlite.writer import WriterLock
from tests.test_storage_contract import _sqlite

_TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("held")
else:
    print("free")
"""


def _probe(path: str) -> str:
    out = subprocess.run([sys.executable, "-c", _TRY_LOCK, path], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_lock_excludes_other_processes_while_held(tmp_path: Path) -> None:
    database = str(tmp_path / "db.sqlite3")
    lock = WriterLock(database)
    with lock:
        assert _probe(f"{database}.writer") == "held"
    assert _probe(f"{database}.writer") == "free"
    lock.close()


def test_the_lock_excludes_other_threads_while_held(tmp_path: Path) -> None:
    lock = WriterLock(str(tmp_path / "db.sqlite3"))
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def first() -> None:
        with lock:
            inside.set()
            release.wait(10)
            order.append("first")

    def second() -> None:
        inside.wait(10)
        with lock:
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    assert order == []  # the second writer is waiting
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first", "second"]
    lock.close()


def test_concurrent_writers_all_land(tmp_path: Path) -> None:
    store = _sqlite(tmp_path)

    def writer(n: int) -> None:
        for i in range(20):
            store.create({"resourceType": "Patient", "id": f"t{n}-{i}", "name": [{"family": f"F{n}"}]})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert store.search(Query("Patient", count=0), OPEN_SCOPE).total == 120
    store.close()
