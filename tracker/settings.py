"""Settings, read once from the environment into one typed object.

Leaf module: imports nothing of the project but ``errors``. Every variable the
server reads is listed in ``VARIABLES`` (the README's configuration table is
generated from the same names). A malformed value raises ``SettingsError``
naming the variable; the CLI prints it on one line and exits with code 2.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from tracker.core.errors import SettingsError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# name -> (default shown in docs, description)
VARIABLES: dict[str, tuple[str, str]] = {
    "REDIS_URL": ("(embedded Valkey)", "Redis URL (`redis://`, `rediss://`, `unix://`). Unset: embedded."),
    "CLICKHOUSE_URL": (
        "(embedded chDB)",
        "`http(s)://user:pass@host:8123/db` for a ClickHouse server, or `chdb:///abs/dir`. Unset: embedded.",
    ),
    "TRACKER_DATA_DIR": ("./var", "Data directory of the embedded mode (also `--data-dir`)."),
    "TRACKER_ADMIN_TOKEN": ("(generated in embedded mode)", "Bearer token that may create brands."),
    "TRACKER_SECRET_KEY": (
        "(generated in embedded mode)",
        "Server secret (>= 32 chars): signs click ids, derives store secrets. Same on every worker.",
    ),
    "TRACKER_HASHIDS_SALT": ("(derived from the secret key)", "Salt of the short-code alphabet."),
    "TRACKER_PUBLIC_URL": ("http://<host>:<port>", "Base URL used in `short_url`."),
    "TRACKER_TRUSTED_PROXIES": (
        "127.0.0.1",
        "Comma-separated IPs/CIDRs of your proxies: behind them the client is the rightmost "
        "`X-Forwarded-For` address that is not one of them.",
    ),
    "TRACKER_COUNTRY_HEADER": ("(none)", "Trusted header carrying the visitor country, e.g. `CF-IPCountry`."),
    "TRACKER_ALLOW_VOLATILE_REDIS": ("0", "Set to 1 to start against a Redis without persistence."),
    "TRACKER_STREAM_SHARDS": ("1", "Number of click stream keys (Redis Cluster scale-out)."),
    "TRACKER_INGEST_BATCH_SIZE": ("50000", "Rows per ClickHouse insert."),
    "TRACKER_INGEST_BATCH_SECONDS": ("1.0", "Longest wait before a partial batch is inserted."),
    "TRACKER_INGEST_MAX_DELIVERIES": ("5", "Deliveries before an entry goes to the dead-letter stream."),
    "TRACKER_INGEST_CLAIM_IDLE_SECONDS": ("30", "Idle time after which another worker's entries are claimed."),
    "TRACKER_INGEST_METRICS": (
        "(off)",
        "`host:port` where `tracker ingest` serves its own Prometheus `/metrics` (e.g. `0.0.0.0:9464`).",
    ),
    "TRACKER_CLICK_RETENTION_MONTHS": ("13", "TTL of raw clicks (conversions are never expired)."),
    "TRACKER_LINK_CACHE_SECONDS": ("2.0", "In-process link cache lifetime (link changes reach redirects within)."),
    "TRACKER_SPOOL_DIR": ("<data-dir>/spool", "Local append-only spool for clicks while Redis is down."),
    "TRACKER_MAX_REPORT_DAYS": ("400", "Longest report range in days."),
    "TRACKER_POSTBACK_RATE_LIMIT": ("600", "Postbacks per store per minute."),
    "TRACKER_LOG_LEVEL": ("INFO", "Log level (DEBUG, INFO, WARNING, ERROR)."),
    "TRACKER_CLICKHOUSE_DATABASE": ("tracker", "Database name when CLICKHOUSE_URL names none (and for chDB)."),
    "TRACKER_CLICKHOUSE_CLUSTER": (
        "(none: one server)",
        "ClickHouse cluster name (`remote_servers`): the schema is Replicated + Distributed tables "
        "(`tracker migrate --cluster`). Same on every process.",
    ),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    clickhouse_url: str | None = None
    data_dir: Path = Path("var")
    admin_token: str | None = None
    secret_key: str | None = None
    hashids_salt: str | None = None
    public_url: str | None = None
    trusted_proxies: tuple[IPNetwork, ...] = field(
        default_factory=lambda: (ipaddress.ip_network("127.0.0.1/32"),)
    )
    country_header: str | None = None
    allow_volatile_redis: bool = False
    stream_shards: int = 1
    ingest_batch_size: int = 50_000
    ingest_batch_seconds: float = 1.0
    ingest_max_deliveries: int = 5
    ingest_claim_idle_seconds: float = 30.0
    ingest_metrics: tuple[str, int] | None = None  # (host, port) of `tracker ingest`'s /metrics
    click_retention_months: int = 13
    link_cache_seconds: float = 2.0
    spool_dir: Path | None = None
    max_report_days: int = 400
    postback_rate_limit: int = 600
    log_level: str = "INFO"
    clickhouse_database: str = "tracker"
    clickhouse_cluster: str | None = None
    # Embedded mode: neither service URL was set, so serve starts both itself (and
    # fills in redis_url once its Valkey runs) and runs ingest in-process.
    embedded: bool = False

    @property
    def spool_path(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if environ is None else environ
        s = cls(
            redis_url=_redis_url(env),
            clickhouse_url=_clickhouse_url(env),
            data_dir=Path(_str(env, "TRACKER_DATA_DIR") or "var"),
            admin_token=_token(env, "TRACKER_ADMIN_TOKEN", 16),
            secret_key=_token(env, "TRACKER_SECRET_KEY", 32),
            hashids_salt=_str(env, "TRACKER_HASHIDS_SALT"),
            public_url=_public_url(env),
            trusted_proxies=_networks(env, "TRACKER_TRUSTED_PROXIES", "127.0.0.1"),
            country_header=_str(env, "TRACKER_COUNTRY_HEADER"),
            allow_volatile_redis=_bool(env, "TRACKER_ALLOW_VOLATILE_REDIS", False),
            stream_shards=_int(env, "TRACKER_STREAM_SHARDS", 1, 1, 1024),
            ingest_batch_size=_int(env, "TRACKER_INGEST_BATCH_SIZE", 50_000, 1, 1_000_000),
            ingest_batch_seconds=_float(env, "TRACKER_INGEST_BATCH_SECONDS", 1.0, 0.01, 60.0),
            ingest_max_deliveries=_int(env, "TRACKER_INGEST_MAX_DELIVERIES", 5, 1, 1000),
            ingest_claim_idle_seconds=_float(env, "TRACKER_INGEST_CLAIM_IDLE_SECONDS", 30.0, 0.1, 86400.0),
            ingest_metrics=_listen(env, "TRACKER_INGEST_METRICS"),
            click_retention_months=_int(env, "TRACKER_CLICK_RETENTION_MONTHS", 13, 1, 1200),
            link_cache_seconds=_float(env, "TRACKER_LINK_CACHE_SECONDS", 2.0, 0.0, 5.0),
            spool_dir=Path(v) if (v := _str(env, "TRACKER_SPOOL_DIR")) else None,
            max_report_days=_int(env, "TRACKER_MAX_REPORT_DAYS", 400, 1, 3660),
            postback_rate_limit=_int(env, "TRACKER_POSTBACK_RATE_LIMIT", 600, 1, 10_000_000),
            log_level=_choice(env, "TRACKER_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            clickhouse_database=_identifier(env, "TRACKER_CLICKHOUSE_DATABASE", "tracker"),
            clickhouse_cluster=_cluster(env),
        )
        s = s.with_(embedded=s.redis_url is None and s.clickhouse_url is None)
        if (s.redis_url is None) != (s.clickhouse_url is None):
            missing = "REDIS_URL" if s.redis_url is None else "CLICKHOUSE_URL"
            raise SettingsError(
                f"{missing} is not set: set both REDIS_URL and CLICKHOUSE_URL (production mode) "
                "or neither (embedded mode)."
            )
        if s.clickhouse_cluster and (s.clickhouse_url is None or s.clickhouse_url.startswith("chdb:")):
            raise SettingsError(
                "TRACKER_CLICKHOUSE_CLUSTER needs CLICKHOUSE_URL to name a ClickHouse server: chDB is one node."
            )
        return s.with_(**overrides) if overrides else s


def _str(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean: use 1 or 0.")


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer.") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range: use {lo} to {hi}.")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = _str(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number.") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range: use {lo} to {hi}.")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = _str(env, name)
    if raw is None:
        return default
    if raw.upper() not in choices:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}.")
    return raw.upper()


def _identifier(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _str(env, name) or default
    if not raw.replace("_", "").isalnum() or raw[0].isdigit():
        raise SettingsError(f"{name}={raw!r} is not a valid database name (letters, digits, underscore).")
    return raw


def _cluster(env: Mapping[str, str]) -> str | None:
    raw = _str(env, "TRACKER_CLICKHOUSE_CLUSTER")
    if raw is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", raw):
        raise SettingsError(f"TRACKER_CLICKHOUSE_CLUSTER={raw!r} is not a cluster name (letters, digits, underscore).")
    return raw


def _token(env: Mapping[str, str], name: str, min_len: int) -> str | None:
    raw = _str(env, name)
    if raw is not None and len(raw) < min_len:
        raise SettingsError(f"{name} is too short: use at least {min_len} characters.")
    return raw


def _redis_url(env: Mapping[str, str]) -> str | None:
    raw = _str(env, "REDIS_URL")
    if raw is None:
        return None
    scheme = urlsplit(raw).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(f"REDIS_URL={raw!r} must start with redis://, rediss:// or unix://.")
    return raw


def _clickhouse_url(env: Mapping[str, str]) -> str | None:
    raw = _str(env, "CLICKHOUSE_URL")
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise SettingsError(f"CLICKHOUSE_URL={raw!r} has no host.")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise SettingsError(f"CLICKHOUSE_URL={raw!r} has a malformed port.") from None
        return raw
    if parts.scheme == "chdb":
        if not parts.path.startswith("/"):
            raise SettingsError(f"CLICKHOUSE_URL={raw!r}: a chdb URL needs an absolute path, chdb:///abs/dir.")
        return raw
    raise SettingsError(f"CLICKHOUSE_URL={raw!r} must start with http://, https:// or chdb:///.")


def _listen(env: Mapping[str, str], name: str) -> tuple[str, int] | None:
    raw = _str(env, name)
    if raw is None:
        return None
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SettingsError(f"{name}={raw!r} must be host:port, e.g. 127.0.0.1:9464.")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise SettingsError(f"{name}={raw!r} has a host that is neither an IP address nor a name.") from None
    return host, int(port)


def _public_url(env: Mapping[str, str]) -> str | None:
    raw = _str(env, "TRACKER_PUBLIC_URL")
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"TRACKER_PUBLIC_URL={raw!r} must be an absolute http(s) URL.")
    return raw.rstrip("/")


def _networks(env: Mapping[str, str], name: str, default: str) -> tuple[IPNetwork, ...]:
    raw = env.get(name, default)
    nets: list[IPNetwork] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(f"{name} has {item!r}, which is not an IP address or CIDR block.") from None
    return tuple(nets)
