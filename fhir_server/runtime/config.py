"""Server configuration: environment variables with the ``DMP_`` prefix, sane defaults.

Every setting is listed in the README. Nothing here reads the environment after start-up.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from authz.settings import AccessSettings
from fhir_server.runtime.datafiles import data_root

#: The folder holding ``ig/``, ``profiles/`` and ``capability/``: the repository root in a
#: checkout, ``<prefix>/share/dmp-server`` in an installed wheel (see datafiles.py).
PROJECT_ROOT = data_root()


class ConfigError(ValueError):
    """A setting that cannot be used; the command line reports it in one line (exit code 2)."""


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be true or false, not {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ConfigError(f"{name} must be at least 1, not {value}")
    return value


def _base_url(env: Mapping[str, str], default: str) -> str:
    raw = (env.get("DMP_BASE_URL") or default).rstrip("/")
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"DMP_BASE_URL must be an http(s) URL such as https://dmp.example.org/fhir, not {raw!r}")
    return raw


def _store_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("DMP_STORE") or None
    if raw is not None and not raw.startswith(STORE_SCHEMES):
        raise ConfigError(f"DMP_STORE must be sqlite:///path or mongodb://..., not {raw!r}")
    return raw


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Addresses or CIDR networks, comma-separated; each checked here so a typo fails at start."""
    networks = tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {network!r} is not an IP address or network") from None
    return networks


#: The store URLs ``DMP_STORE`` may hold (whether a backend is installed is the store's answer).
STORE_SCHEMES = ("sqlite:///", "mongodb://", "mongodb+srv://")


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("./data")
    base_url: str = "http://127.0.0.1:8080/fhir"
    store_url: str | None = None  # sqlite:///path or mongodb://...; default SQLite in data_dir
    max_body: int = 10 * 1024 * 1024
    max_binary_body: int | None = None  # a larger limit for Binary only, if configured
    default_count: int = 20
    max_count: int = 1000
    search_session_seconds: int = 3600
    max_parameters: int = 100  # parameters of one request (URL and form) or Bundle entry URL
    max_query_length: int = 8192  # characters of those parameters' names and values, in all
    trusted_issuers: Path | None = None  # JSON file of trusted token issuers (CONTRACT §1)
    smtp_host: str | None = None  # mail disabled (logged) without one
    smtp_port: int = 25
    mail_from: str = "dmp@localhost"
    jobs_interval: int = 60  # seconds between runs of the periodic jobs in `serve`; 0 = never
    password_kdf_cost: int = 2**15  # scrypt N of new password hashes (a power of two; tests lower it)
    # rest-hook Subscriptions may use http:// to a loopback address (a local relay, tests); never
    # anything else in clear, nor an address of the server's own networks
    subscription_allow_http: bool = False
    retention_years: int = 10  # how long a closed DMP is kept and may be reopened (R20)
    sqlite_cache_mb: int = 64  # SQLite page cache per connection (one connection per serving thread)
    token_cache: int = AccessSettings.token_cache  # verified tokens (and their actors) a worker keeps
    state_cache: int = AccessSettings.state_cache  # patients' access states a worker keeps
    sqlite_synchronous: str = "FULL"  # FULL: a commit is on disk when acknowledged; NORMAL relaxes it
    master_key_file: Path | None = None  # the master keys elsewhere than data_dir/keys/master-keys.json
    portal_idle_seconds: int = 900  # a « Mon DMP » session untouched this long is over
    metrics: bool = True  # GET /metrics (Prometheus), without a token; off where the port is public
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-For is believed
    ig_dir: Path = field(default=PROJECT_ROOT / "ig")
    capability_dir: Path = field(default=PROJECT_ROOT / "capability")

    @property
    def access(self) -> AccessSettings:
        """What access control needs of this configuration."""
        return AccessSettings(
            self.base_url,
            self.data_dir,
            self.ig_dir,
            self.trusted_issuers,
            self.retention_years,
            self.token_cache,
            self.state_cache,
        )

    @property
    def base_path(self) -> str:
        """The URL path the FHIR API is mounted at (``/fhir`` for the default base URL)."""
        return urlsplit(self.base_url).path.rstrip("/")

    @property
    def sqlite_path(self) -> Path:
        if self.store_url and self.store_url.startswith("sqlite:///"):
            return Path(self.store_url[len("sqlite:///") :])
        return self.data_dir / "dmp.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, base_url: str | None = None) -> Config:
        """The configuration the environment gives; ``base_url`` is the default of ``DMP_BASE_URL``
        (``serve`` makes it from ``--host`` and ``--port``)."""
        env = os.environ if env is None else env
        defaults = cls()
        binary = env.get("DMP_MAX_BINARY_BODY")
        return cls(
            data_dir=Path(env.get("DMP_DATA_DIR") or defaults.data_dir),
            base_url=_base_url(env, base_url or defaults.base_url),
            store_url=_store_url(env),
            trusted_issuers=Path(env["DMP_TRUSTED_ISSUERS"]) if env.get("DMP_TRUSTED_ISSUERS") else None,
            smtp_host=env.get("DMP_SMTP_HOST") or None,
            smtp_port=_int(env, "DMP_SMTP_PORT", defaults.smtp_port),
            mail_from=env.get("DMP_MAIL_FROM") or defaults.mail_from,
            jobs_interval=_int(env, "DMP_JOBS_INTERVAL", defaults.jobs_interval),
            password_kdf_cost=_int(env, "DMP_PASSWORD_KDF_COST", defaults.password_kdf_cost),
            subscription_allow_http=_flag(env, "DMP_SUBSCRIPTION_ALLOW_HTTP"),
            retention_years=_positive(env, "DMP_RETENTION_YEARS", defaults.retention_years),
            sqlite_cache_mb=_positive(env, "DMP_SQLITE_CACHE_MB", defaults.sqlite_cache_mb),
            token_cache=_positive(env, "DMP_TOKEN_CACHE", defaults.token_cache),
            state_cache=_positive(env, "DMP_STATE_CACHE", defaults.state_cache),
            sqlite_synchronous=(env.get("DMP_SQLITE_SYNCHRONOUS") or defaults.sqlite_synchronous).strip().upper(),
            master_key_file=Path(env["DMP_MASTER_KEY_FILE"]) if env.get("DMP_MASTER_KEY_FILE") else None,
            portal_idle_seconds=_positive(env, "DMP_PORTAL_IDLE_SECONDS", defaults.portal_idle_seconds),
            max_body=_int(env, "DMP_MAX_BODY", defaults.max_body),
            max_binary_body=_int(env, "DMP_MAX_BINARY_BODY", 0) or None if binary else None,
            default_count=_int(env, "DMP_DEFAULT_COUNT", defaults.default_count),
            max_count=_int(env, "DMP_MAX_COUNT", defaults.max_count),
            search_session_seconds=_int(env, "DMP_SEARCH_SESSION_SECONDS", defaults.search_session_seconds),
            max_parameters=_positive(env, "DMP_MAX_PARAMETERS", defaults.max_parameters),
            max_query_length=_positive(env, "DMP_MAX_QUERY_LENGTH", defaults.max_query_length),
            metrics=_flag(env, "DMP_METRICS", defaults.metrics),
            trusted_proxies=_networks(env, "DMP_TRUSTED_PROXIES"),
        )


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ServeSettings:
    """How ``dmp-server serve`` runs: the process settings, beside the app's :class:`Config`.

    Each comes from its command-line option, else its ``DMP_`` variable, else the default.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1  # gunicorn worker processes; from_env defaults to the usable CPUs
    threads: int = 4  # threads per worker
    graceful_timeout: int = 30  # seconds a worker finishes its requests after SIGTERM
    control_socket: str = "auto"  # gunicorn's: <data dir>/gunicorn.ctl ("auto"), a path, or "off"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> ServeSettings:
        """``options`` are the command line's (None where not given)."""
        env = os.environ if env is None else env
        defaults = cls()
        given = {name: value for name, value in options.items() if value is not None}
        settings = cls(
            host=env.get("DMP_HOST") or defaults.host,
            port=_positive(env, "DMP_PORT", defaults.port),
            workers=_positive(env, "DMP_WORKERS", _usable_cpus()),
            threads=_positive(env, "DMP_THREADS", defaults.threads),
            graceful_timeout=_int(env, "DMP_GRACEFUL_TIMEOUT", defaults.graceful_timeout),
            control_socket=env.get("DMP_CONTROL_SOCKET") or defaults.control_socket,
        )
        settings = replace(settings, **given)
        for name in ("port", "workers", "threads"):
            if getattr(settings, name) < 1:
                raise ConfigError(f"--{name} must be at least 1, not {getattr(settings, name)}")
        if settings.port > 65535:
            raise ConfigError(f"the port must be at most 65535, not {settings.port}")
        return settings

    @property
    def base_url(self) -> str:
        """The FHIR base when ``DMP_BASE_URL`` is not set: where this server listens. Listening on
        every address, the machine's name is the best guess (set DMP_BASE_URL behind a proxy)."""
        host = socket.getfqdn() if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/fhir"
