from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.core.errors import SettingsError
from tracker.settings import VARIABLES, Settings


def test_defaults_are_embedded() -> None:
    s = Settings.from_env({})
    assert s.embedded
    assert s.redis_url is None and s.clickhouse_url is None
    assert s.data_dir == Path("var")
    assert s.ingest_batch_size == 50_000
    assert s.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),)
    assert s.spool_path == Path("var") / "spool"


def test_production_mode_reads_both_urls() -> None:
    s = Settings.from_env(
        {
            "REDIS_URL": "redis://r:6379/0",
            "CLICKHOUSE_URL": "https://u:p@ch.example:8443/analytics",
            "TRACKER_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "TRACKER_INGEST_BATCH_SECONDS": "0.5",
        }
    )
    assert not s.embedded
    assert s.clickhouse_url == "https://u:p@ch.example:8443/analytics"
    assert ipaddress.ip_network("10.0.0.0/8") in s.trusted_proxies
    assert s.ingest_batch_seconds == 0.5


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"REDIS_URL": "redis://x"}, "CLICKHOUSE_URL"),
        ({"CLICKHOUSE_URL": "http://x:8123"}, "REDIS_URL"),
        ({"REDIS_URL": "http://x", "CLICKHOUSE_URL": "http://x"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://x", "CLICKHOUSE_URL": "tcp://x:9000"}, "CLICKHOUSE_URL"),
        ({"REDIS_URL": "redis://x", "CLICKHOUSE_URL": "http://:8123"}, "CLICKHOUSE_URL"),
        ({"REDIS_URL": "redis://x", "CLICKHOUSE_URL": "http://h:port"}, "CLICKHOUSE_URL"),
        ({"REDIS_URL": "redis://x", "CLICKHOUSE_URL": "chdb://relative"}, "CLICKHOUSE_URL"),
        ({"TRACKER_INGEST_BATCH_SIZE": "lots"}, "TRACKER_INGEST_BATCH_SIZE"),
        ({"TRACKER_INGEST_BATCH_SIZE": "0"}, "TRACKER_INGEST_BATCH_SIZE"),
        ({"TRACKER_INGEST_BATCH_SECONDS": "fast"}, "TRACKER_INGEST_BATCH_SECONDS"),
        ({"TRACKER_LINK_CACHE_SECONDS": "30"}, "TRACKER_LINK_CACHE_SECONDS"),
        ({"TRACKER_ALLOW_VOLATILE_REDIS": "maybe"}, "TRACKER_ALLOW_VOLATILE_REDIS"),
        ({"TRACKER_TRUSTED_PROXIES": "127.0.0.1,not-an-ip"}, "TRACKER_TRUSTED_PROXIES"),
        ({"TRACKER_ADMIN_TOKEN": "short"}, "TRACKER_ADMIN_TOKEN"),
        ({"TRACKER_SECRET_KEY": "too-short"}, "TRACKER_SECRET_KEY"),
        ({"TRACKER_PUBLIC_URL": "example.com"}, "TRACKER_PUBLIC_URL"),
        ({"TRACKER_LOG_LEVEL": "LOUD"}, "TRACKER_LOG_LEVEL"),
        ({"TRACKER_CLICKHOUSE_DATABASE": "drop table"}, "TRACKER_CLICKHOUSE_DATABASE"),
        ({"TRACKER_STREAM_SHARDS": "-1"}, "TRACKER_STREAM_SHARDS"),
        ({"TRACKER_INGEST_METRICS": "9464"}, "TRACKER_INGEST_METRICS"),
        ({"TRACKER_INGEST_METRICS": "0.0.0.0:"}, "TRACKER_INGEST_METRICS"),
        ({"TRACKER_INGEST_METRICS": ":9464"}, "TRACKER_INGEST_METRICS"),
        ({"TRACKER_INGEST_METRICS": "0.0.0.0:70000"}, "TRACKER_INGEST_METRICS"),
        ({"TRACKER_INGEST_METRICS": "0.0.0.0:0"}, "TRACKER_INGEST_METRICS"),
        ({"TRACKER_INGEST_METRICS": "bad host!:9464"}, "TRACKER_INGEST_METRICS"),
    ],
)
def test_bad_setting_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert variable in info.value.message


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("0.0.0.0:1", ("0.0.0.0", 1)), ("[::1]:9464", ("::1", 9464)),
     ("ingest-1.internal:65535", ("ingest-1.internal", 65535))],
)
def test_ingest_metrics_address(raw: str, parsed: tuple[str, int]) -> None:
    assert Settings.from_env({"TRACKER_INGEST_METRICS": raw}).ingest_metrics == parsed
    assert Settings.from_env({}).ingest_metrics is None


def test_every_variable_is_documented_in_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in VARIABLES:
        assert f"`{name}`" in readme, name


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_works_without_any_server() -> None:
    result = _cli("--help", env={})
    assert result.returncode == 0
    for command in ("serve", "ingest", "migrate"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["serve"], {"TRACKER_INGEST_BATCH_SIZE": "x"}, "TRACKER_INGEST_BATCH_SIZE"),
        (["serve"], {"REDIS_URL": "redis://127.0.0.1:1"}, "CLICKHOUSE_URL"),
        (["serve", "--workers", "2"], {}, "--workers"),
        (["serve", "--port", "70000"], {}, "--port"),
        (["ingest", "--once"], {}, "REDIS_URL"),
        (["migrate"], {"CLICKHOUSE_URL": "ftp://x", "REDIS_URL": "redis://x"}, "CLICKHOUSE_URL"),
        (
            ["serve"],
            {"REDIS_URL": "redis://127.0.0.1:1", "CLICKHOUSE_URL": "http://127.0.0.1:1"},
            "TRACKER_SECRET_KEY",
        ),
    ],
)
def test_cli_setting_errors_are_one_line_with_exit_2(
    args: list[str], env: dict[str, str], needle: str, tmp_path: Path
) -> None:
    result = _cli(*args, "--data-dir", str(tmp_path), env=env) if args[0] == "serve" else _cli(*args, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("tracker: ")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr
