"""Server configuration: environment variables with the ``DMP_`` prefix, sane defaults.

Every setting is listed in the README. Nothing here reads the environment after start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from authz.settings import AccessSettings

#: The repository root, where the data folders ``ig/``, ``profiles/`` and ``capability/`` live.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name} must be true or false, not {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None


def _positive(env: Mapping[str, str], name: str, default: int) -> int:
    value = _int(env, name, default)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


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
    ig_dir: Path = field(default=PROJECT_ROOT / "ig")
    capability_dir: Path = field(default=PROJECT_ROOT / "capability")

    @property
    def access(self) -> AccessSettings:
        """What access control needs of this configuration."""
        return AccessSettings(self.base_url, self.data_dir, self.ig_dir, self.trusted_issuers, self.retention_years)

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
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        defaults = cls()
        binary = env.get("DMP_MAX_BINARY_BODY")
        return cls(
            data_dir=Path(env.get("DMP_DATA_DIR") or defaults.data_dir),
            base_url=(env.get("DMP_BASE_URL") or defaults.base_url).rstrip("/"),
            store_url=env.get("DMP_STORE") or None,
            trusted_issuers=Path(env["DMP_TRUSTED_ISSUERS"]) if env.get("DMP_TRUSTED_ISSUERS") else None,
            smtp_host=env.get("DMP_SMTP_HOST") or None,
            smtp_port=_int(env, "DMP_SMTP_PORT", defaults.smtp_port),
            mail_from=env.get("DMP_MAIL_FROM") or defaults.mail_from,
            jobs_interval=_int(env, "DMP_JOBS_INTERVAL", defaults.jobs_interval),
            password_kdf_cost=_int(env, "DMP_PASSWORD_KDF_COST", defaults.password_kdf_cost),
            subscription_allow_http=_flag(env, "DMP_SUBSCRIPTION_ALLOW_HTTP"),
            retention_years=_positive(env, "DMP_RETENTION_YEARS", defaults.retention_years),
            max_body=_int(env, "DMP_MAX_BODY", defaults.max_body),
            max_binary_body=_int(env, "DMP_MAX_BINARY_BODY", 0) or None if binary else None,
            default_count=_int(env, "DMP_DEFAULT_COUNT", defaults.default_count),
            max_count=_int(env, "DMP_MAX_COUNT", defaults.max_count),
            search_session_seconds=_int(env, "DMP_SEARCH_SESSION_SECONDS", defaults.search_session_seconds),
            max_parameters=_positive(env, "DMP_MAX_PARAMETERS", defaults.max_parameters),
            max_query_length=_positive(env, "DMP_MAX_QUERY_LENGTH", defaults.max_query_length),
        )
