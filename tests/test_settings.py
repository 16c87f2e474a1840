from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.core.errors import SettingsError
from tracker.settings import VARIABLES, Settings, table


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


def test_readme_table_is_the_one_the_settings_render() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start = readme.index("| variable | default | meaning |")
    end = readme.index("\n\n", start) + 1
    assert readme[start:end] == table(), (
        "README's configuration table differs from tracker/settings.py: paste `python -m tracker.settings`"
    )


def test_each_default_is_the_field_default() -> None:
    s = Settings()
    assert VARIABLES["TRACKER_INGEST_BATCH_SIZE"][0] == str(s.ingest_batch_size)
    assert VARIABLES["TRACKER_LOG_LEVEL"][0] == s.log_level
    assert VARIABLES["TRACKER_DATA_DIR"][0] == f"./{s.data_dir}"
    assert VARIABLES["TRACKER_ALLOW_VOLATILE_REDIS"][0] == "0"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TRACKER_SPOOL_DIR": "   "}, {"spool_dir": None}),  # blank: unset
        ({"TRACKER_INGEST_BATCH_SIZE": " 12 "}, {"ingest_batch_size": 12}),
        ({"TRACKER_LOG_LEVEL": "debug"}, {"log_level": "DEBUG"}),
        ({"TRACKER_ALLOW_VOLATILE_REDIS": "yes"}, {"allow_volatile_redis": True}),
        ({"TRACKER_TRUSTED_PROXIES": ""}, {"trusted_proxies": ()}),  # blank here: trust no proxy
        ({"TRACKER_PUBLIC_URL": "https://t.example/"}, {"public_url": "https://t.example"}),
        ({"tracker_log_level": "DEBUG"}, {"log_level": "INFO"}),  # names are case-sensitive
    ],
)
def test_values_as_read(env: dict[str, str], expected: dict[str, object]) -> None:
    s = Settings.from_env(env)
    assert {name: getattr(s, name) for name in expected} == expected


def test_building_settings_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_INGEST_BATCH_SIZE", "7")
    assert Settings().ingest_batch_size == 50_000
    assert Settings.from_env().ingest_batch_size == 7


def test_secrets_stay_out_of_repr() -> None:
    text = repr(Settings(secret_key="s" * 40, admin_token="a" * 20))
    assert "s" * 40 not in text and "a" * 20 not in text


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
        (["serve", "--workers", "0"], {}, "--workers"),
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
