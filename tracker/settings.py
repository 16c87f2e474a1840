"""Settings, read once from the environment into one typed, immutable object.

Leaf module: imports nothing of the project but ``errors``. Each setting is one
field: its variable, its default (written only there), its limits and the words
of the README's configuration table, which ``table()`` renders from the fields
(``python -m tracker.settings``; a test keeps the README equal to it).
pydantic-settings reads the variables; a malformed value raises
``SettingsError`` with one line naming the variable (the CLI exits with code 2).

Building ``Settings(...)`` directly reads no environment: ``from_env`` does.
"""

from __future__ import annotations

import ipaddress
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from tracker.core.errors import SettingsError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class _Bad(ValueError):
    """A value a validator refuses; ``echo``: the message may show the value (never a secret)."""

    def __init__(self, tail: str, echo: bool = True) -> None:
        super().__init__(tail)
        self.tail = tail
        self.echo = echo


def _var(env: str, default: Any, doc: str, *, unset: str | None = None, **limits: Any) -> Any:
    """A setting read from ``env``; ``unset`` says in the README what no value means."""
    extra: dict[str, Any] | None = {"unset": unset} if unset is not None else None
    return Field(default, validation_alias=env, description=doc, json_schema_extra=extra, **limits)


# --- validators: each refuses with the rest of a sentence that starts with the variable ------------


def _redis_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    scheme = urlsplit(raw).scheme
    if scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        raise _Bad("must start with redis://, rediss://, unix:// or redis+cluster://.")
    if scheme.endswith("+cluster") and not urlsplit(raw).netloc.rpartition("@")[2].strip(","):
        raise _Bad("must name at least one node: redis+cluster://host:port[,host:port...].")
    return raw


def _clickhouse_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise _Bad("has no host.")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise _Bad("has a malformed port.") from None
        return raw
    if parts.scheme == "chdb":
        if not parts.path.startswith("/"):
            raise _Bad("is relative: a chdb URL needs an absolute path, chdb:///abs/dir.")
        return raw
    raise _Bad("must start with http://, https:// or chdb:///.")


def _public_url(raw: str | None) -> str | None:
    if raw is None:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Bad("must be an absolute http(s) URL.")
    return raw.rstrip("/")


def _identifier(raw: str) -> str:
    if not raw.replace("_", "").isalnum() or raw[0].isdigit():
        raise _Bad("is not a valid database name (letters, digits, underscore).")
    return raw


def _cluster(raw: str | None) -> str | None:
    if raw is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", raw):
        raise _Bad("is not a cluster name (letters, digits, underscore).")
    return raw


def _networks(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    nets: list[IPNetwork] = []
    for item in raw.split(","):
        item = item.strip()
        if item:
            try:
                nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise _Bad(f"has {item!r}, which is not an IP address or CIDR block.", echo=False) from None
    return tuple(nets)


def _listen(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    host, sep, port = raw.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _Bad("must be host:port, e.g. 127.0.0.1:9464.")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
            raise _Bad("has a host that is neither an IP address nor a name.") from None
    return host, int(port)


def _delays(raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    out: list[float] = []
    for item in raw.split(","):
        try:
            value = float(item.strip())
        except ValueError:
            raise _Bad(f"has {item.strip()!r}, which is not a number of seconds.") from None
        if not 0.01 <= value <= 86400:
            raise _Bad(f"has {value:g}: each wait must be 0.01 to 86400 seconds.")
        out.append(value)
    return tuple(out)


def _upper(raw: Any) -> Any:
    return raw.upper() if isinstance(raw, str) else raw


# Blank means unset for every variable but this one, where it means "trust no proxy".
_BLANK_IS_A_VALUE = frozenset({"TRACKER_TRUSTED_PROXIES", "trusted_proxies"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True, case_sensitive=True
    )

    redis_url: Annotated[str | None, AfterValidator(_redis_url)] = _var(
        "REDIS_URL", None,
        "Redis URL (`redis://`, `rediss://`, `unix://`), or `redis+cluster://host:port[,host:port...]` for a "
        "Redis Cluster. Unset: embedded.",
        unset="(embedded Valkey)",
    )
    clickhouse_url: Annotated[str | None, AfterValidator(_clickhouse_url)] = _var(
        "CLICKHOUSE_URL", None,
        "`http(s)://user:pass@host:8123/db` for a ClickHouse server, or `chdb:///abs/dir`. Unset: embedded.",
        unset="(embedded chDB)",
    )
    data_dir: Path = _var("TRACKER_DATA_DIR", Path("var"), "Data directory of the embedded mode (also `--data-dir`).")
    admin_token: str | None = _var(
        "TRACKER_ADMIN_TOKEN", None, "Bearer token that may create brands.",
        unset="(generated in embedded mode)", min_length=16, repr=False,
    )
    secret_key: str | None = _var(
        "TRACKER_SECRET_KEY", None,
        "Server secret (>= 32 chars): signs click ids, derives store secrets. Same on every worker.",
        unset="(generated in embedded mode)", min_length=32, repr=False,
    )
    hashids_salt: str | None = _var(
        "TRACKER_HASHIDS_SALT", None, "Salt of the short-code alphabet.", unset="(derived from the secret key)"
    )
    public_url: Annotated[str | None, AfterValidator(_public_url)] = _var(
        "TRACKER_PUBLIC_URL", None, "Base URL used in `short_url`.", unset="http://<host>:<port>"
    )
    trusted_proxies: Annotated[tuple[IPNetwork, ...], NoDecode, BeforeValidator(_networks)] = _var(
        "TRACKER_TRUSTED_PROXIES", "127.0.0.1",
        "Comma-separated IPs/CIDRs of your proxies: behind them the client is the rightmost "
        "`X-Forwarded-For` address that is not one of them.",
        validate_default=True,
    )
    country_header: str | None = _var(
        "TRACKER_COUNTRY_HEADER", None, "Trusted header carrying the visitor country, e.g. `CF-IPCountry`.",
        unset="(none)",
    )
    allow_volatile_redis: bool = _var(
        "TRACKER_ALLOW_VOLATILE_REDIS", False, "Set to 1 to start against a Redis without persistence."
    )
    stream_shards: int = _var(
        "TRACKER_STREAM_SHARDS", 1, "Number of click stream keys (Redis Cluster scale-out).", ge=1, le=1024
    )
    conversion_shards: int = _var(
        "TRACKER_CONVERSION_SHARDS", 1,
        "Number of conversion stream keys; a brand's order state lives in its stream's slot "
        "(Redis Cluster scale-out). Same on every process.",
        ge=1, le=1024,
    )
    redis_wait_replicas: int = _var(
        "TRACKER_REDIS_WAIT_REPLICAS", 0,
        "Replicas that must hold a click batch (`WAIT`) before its redirects are answered; 0: do not wait.",
        ge=0, le=16,
    )
    redis_wait_ms: int = _var(
        "TRACKER_REDIS_WAIT_MS", 200,
        "Longest `WAIT` for those replicas; a batch not replicated in time is spooled as well.",
        ge=1, le=10_000,
    )
    ingest_batch_size: int = _var(
        "TRACKER_INGEST_BATCH_SIZE", 50_000, "Rows per ClickHouse insert.", ge=1, le=1_000_000
    )
    ingest_batch_seconds: float = _var(
        "TRACKER_INGEST_BATCH_SECONDS", 1.0, "Longest wait before a partial batch is inserted.", ge=0.01, le=60.0
    )
    ingest_max_deliveries: int = _var(
        "TRACKER_INGEST_MAX_DELIVERIES", 5, "Deliveries before an entry goes to the dead-letter stream.",
        ge=1, le=1000,
    )
    ingest_claim_idle_seconds: float = _var(
        "TRACKER_INGEST_CLAIM_IDLE_SECONDS", 30.0, "Idle time after which another worker's entries are claimed.",
        ge=0.1, le=86400.0,
    )
    # (host, port) where `tracker ingest` serves its own /metrics.
    ingest_metrics: Annotated[tuple[str, int] | None, NoDecode, BeforeValidator(_listen)] = _var(
        "TRACKER_INGEST_METRICS", None,
        "`host:port` where `tracker ingest` serves its own Prometheus `/metrics` (e.g. `0.0.0.0:9464`).",
        unset="(off)",
    )
    click_retention_months: int = _var(
        "TRACKER_CLICK_RETENTION_MONTHS", 13, "TTL of raw clicks (conversions are never expired).", ge=1, le=1200
    )
    link_cache_seconds: float = _var(
        "TRACKER_LINK_CACHE_SECONDS", 2.0,
        "In-process lifetime of link records in redirects and registry records in postbacks (changes reach "
        "them within).",
        ge=0.0, le=5.0,
    )
    spool_dir: Path | None = _var(
        "TRACKER_SPOOL_DIR", None, "Local append-only spool for clicks while Redis is down.",
        unset="<data-dir>/spool",
    )
    spool_max_mb: float = _var(
        "TRACKER_SPOOL_MAX_MB", 1024.0,
        "Size cap of the spool (every process's files together); past it clicks are not recorded "
        "(followers are still redirected).",
        ge=0.01, le=16_777_216.0,
    )
    max_report_days: int = _var(
        "TRACKER_MAX_REPORT_DAYS", 400, "Longest report range in days.", ge=1, le=3660
    )
    header_timeout_seconds: float = _var(
        "TRACKER_HEADER_TIMEOUT_SECONDS", 10.0,
        "Time a client has to send a request's headers before it is disconnected.", ge=0.1, le=3600.0,
    )
    keepalive_seconds: int = _var(
        "TRACKER_KEEPALIVE_SECONDS", 5, "Idle time after which a keep-alive connection is closed.", ge=1, le=3600
    )
    max_connections: int | None = _var(
        "TRACKER_MAX_CONNECTIONS", None,
        "Open connections per process; beyond it the connections waiting longest without a request are closed.",
        unset="(half the descriptor limit, at most 10000)", ge=16, le=1_000_000,
    )
    postback_rate_limit: int = _var(
        "TRACKER_POSTBACK_RATE_LIMIT", 600, "Postbacks per store per minute.", ge=1, le=10_000_000
    )
    log_level: Annotated[LogLevel, BeforeValidator(_upper)] = _var(
        "TRACKER_LOG_LEVEL", "INFO", "Log level (DEBUG, INFO, WARNING, ERROR)."
    )
    clickhouse_database: Annotated[str, AfterValidator(_identifier)] = _var(
        "TRACKER_CLICKHOUSE_DATABASE", "tracker", "Database name when `CLICKHOUSE_URL` names none (and for chDB)."
    )
    clickhouse_cluster: Annotated[str | None, AfterValidator(_cluster)] = _var(
        "TRACKER_CLICKHOUSE_CLUSTER", None,
        "ClickHouse cluster name (`remote_servers`): the schema is Replicated + Distributed tables "
        "(`tracker migrate --cluster`). Same on every process.",
        unset="(none: one server)",
    )
    app_session_hours: int = _var(
        "TRACKER_APP_SESSION_HOURS", 12,
        "How long a brand stays signed in to `/app` after exchanging its API key for a session.", ge=1, le=720,
    )
    portal_session_hours: int = _var(
        "TRACKER_PORTAL_SESSION_HOURS", 168,
        "How long an influencer stays signed in to `/portal` after following a sign-in link.", ge=1, le=8760,
    )
    webhooks_allow_private: bool = _var(
        "TRACKER_WEBHOOKS_ALLOW_PRIVATE", False,
        "Set to 1 to let webhook URLs reach loopback, private and link-local addresses (refused by default).",
    )
    webhooks_timeout_seconds: float = _var(
        "TRACKER_WEBHOOKS_TIMEOUT_SECONDS", 15.0, "How long a webhook receiver has to answer one delivery.",
        ge=0.1, le=60.0,
    )
    webhooks_retry_seconds: Annotated[tuple[float, ...], NoDecode, BeforeValidator(_delays)] = _var(
        "TRACKER_WEBHOOKS_RETRY_SECONDS", "5,30,120,600,3600,7200",
        "Waits between delivery attempts (comma-separated seconds, with 10% jitter); the last repeats.",
        validate_default=True,
    )
    webhooks_give_up_seconds: float = _var(
        "TRACKER_WEBHOOKS_GIVE_UP_SECONDS", 86400.0,
        "A delivery failing this long is given up, and an endpoint failing this long is disabled.",
        ge=1.0, le=30 * 86400.0,
    )
    # Embedded mode: neither service URL was set, so serve starts both itself (and
    # fills in redis_url once its Valkey runs) and runs ingest in-process.
    embedded: bool = False

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            key: value.strip() if isinstance(value, str) else value
            for key, value in data.items()
            if not (isinstance(value, str) and not value.strip() and key not in _BLANK_IS_A_VALUE)
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only what the caller passes: the environment is read by from_env, from the mapping it is given.
        return (init_settings,)

    @property
    def spool_path(self) -> Path:
        return self.spool_dir if self.spool_dir is not None else self.data_dir / "spool"

    @property
    def spool_max_bytes(self) -> int:
        return int(self.spool_max_mb * 1024 * 1024)

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields replaced (values as the program holds them, not validated again)."""
        return self.model_copy(update=changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        source = _Environ(cls, os.environ if environ is None else environ)
        try:
            s = cls.model_validate(source())
        except ValidationError as exc:
            raise SettingsError(_message(exc)) from None
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


class _Environ(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, limited to the settings' variables."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = {name: environ[name] for name in VARIABLES if name in environ}
        super().__init__(settings_cls, case_sensitive=True)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._environ


def _fields() -> dict[str, tuple[str, FieldInfo]]:
    """Variable -> (field name, field) of every setting read from the environment."""
    return {
        str(info.validation_alias): (name, info)
        for name, info in Settings.model_fields.items()
        if isinstance(info.validation_alias, str)
    }


def _message(exc: ValidationError) -> str:
    """One line naming the variable, from pydantic's first error."""
    err = exc.errors(include_url=False)[0]
    where = str(err["loc"][0]) if err["loc"] else ""
    env = next((var for var, (name, _) in _fields().items() if where in (var, name)), where)
    info = _fields()[env][1] if env in _fields() else None
    raw, kind, ctx = err.get("input"), err["type"], err.get("ctx") or {}
    bad = ctx.get("error")
    if isinstance(bad, _Bad):
        return f"{env}={raw!r} {bad.tail}" if bad.echo else f"{env} {bad.tail}"
    if kind in ("int_parsing", "int_from_float"):
        return f"{env}={raw!r} is not an integer."
    if kind == "float_parsing":
        return f"{env}={raw!r} is not a number."
    if kind == "bool_parsing":
        return f"{env}={raw!r} is not a boolean: use 1 or 0."
    if kind in ("greater_than_equal", "less_than_equal") and info is not None:
        lo = next(m.ge for m in info.metadata if hasattr(m, "ge"))
        hi = next(m.le for m in info.metadata if hasattr(m, "le"))
        return f"{env}={raw} is out of range: use {lo} to {hi}."
    if kind == "literal_error" and info is not None:
        return f"{env}={raw!r} is not one of {', '.join(typing.get_args(LogLevel))}."
    if kind == "string_too_short":
        return f"{env} is too short: use at least {ctx['min_length']} characters."
    return f"{env}: {err['msg']}."


def _shown(info: FieldInfo) -> str:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and "unset" in extra:
        return str(extra["unset"])
    default = info.default
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, Path) and not default.is_absolute():
        return f"./{default}"
    return str(default)


# Variable -> (default as the README shows it, meaning).
VARIABLES: dict[str, tuple[str, str]] = {
    var: (_shown(info), info.description or "") for var, (_, info) in _fields().items()
}


def table() -> str:
    """The README's configuration table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var, (shown, meaning) in VARIABLES.items():
        # "(embedded chDB)" says what no value means; anything else is a value, set as code.
        default = shown if shown.startswith("(") else f"`{shown}`"
        lines.append(f"| `{var}` | {default} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(table(), end="")
