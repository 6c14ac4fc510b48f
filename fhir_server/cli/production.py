"""``dmp-server serve``: the app under gunicorn, as a host runs it.

gthread workers (processes × threads; SQLite serialises writes across them, reads run in
parallel), graceful stop on SIGTERM (each worker finishes its requests within
``DMP_GRACEFUL_TIMEOUT``), and gunicorn's control socket in the data directory — never the
per-user default ``~/.gunicorn/gunicorn.ctl``, which a second server on the host would take over
and remove when it stops. Each worker builds its own app (no preloading: a worker must not
inherit the master's database connections); the master only checks the configuration first.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from fhir_server.runtime.config import Config, ServeSettings

#: The longest path a Unix socket can bind to (sun_path is 108 bytes with its NUL on Linux).
_SOCKET_PATH_MAX = 107


def control_socket(settings: ServeSettings, config: Config) -> Path | None:
    """Where gunicorn's control socket goes: ``<data dir>/gunicorn.ctl`` by default, the path
    ``DMP_CONTROL_SOCKET`` names, or none (``off``, or a data directory too deep for a socket)."""
    if settings.control_socket.lower() == "off":
        return None
    if settings.control_socket.lower() == "auto":
        path = (config.data_dir / "gunicorn.ctl").resolve()
        return path if len(str(path).encode()) <= _SOCKET_PATH_MAX else None
    return Path(settings.control_socket).resolve()


class ProductionServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: ServeSettings, config: Config, metrics_dir: Path | None):
        self.settings = settings
        self.config = config
        self.metrics_dir = metrics_dir
        super().__init__()

    def load_config(self) -> None:
        settings, config = self.settings, self.config
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        socket = control_socket(settings, config)
        options: dict[str, Any] = {
            "bind": f"{host}:{settings.port}",
            "workers": settings.workers,
            "threads": settings.threads,
            "worker_class": "gthread",
            "graceful_timeout": settings.graceful_timeout,
            "accesslog": None,  # the app logs each request itself, as JSON (fhir_server/fhir/ops/access_log.py)
            "proc_name": f"dmp-server {config.data_dir.resolve()}",
            # X-Forwarded-Proto and the like only from the proxies trusted with X-Forwarded-For
            "forwarded_allow_ips": ",".join(config.trusted_proxies),
            "post_worker_init": self._worker_ready,
            "child_exit": self._worker_gone,
            "on_exit": self._stopped,
        }
        if Path("/dev/shm").is_dir():  # the workers' heartbeat files in memory, not on a disk that may stall
            options["worker_tmp_dir"] = "/dev/shm"
        if socket is None:
            options["control_socket_disable"] = True
        else:
            options["control_socket"] = str(socket)
        for name, value in options.items():
            self.cfg.set(name, value)

    def load(self) -> Any:
        from fhir_server.app import create_app, serving
        from fhir_server.fhir.ops.access_log import log_as_json_lines

        log_as_json_lines()
        return serving(create_app(self.config))

    def _worker_ready(self, worker: Any) -> None:
        from fhir_server.cli.jobs_leader import start_jobs_leader

        start_jobs_leader(self.config)

    def _worker_gone(self, arbiter: Any, worker: Any) -> None:
        if self.metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, str(self.metrics_dir))

    def _stopped(self, arbiter: Any) -> None:
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
