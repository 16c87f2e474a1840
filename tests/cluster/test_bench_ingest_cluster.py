"""The ingest-on-a-cluster benchmark with a few hundred clicks, so it cannot rot: its own cluster, chDB
server and worker processes, every click stored once in each mode, and the summary's arithmetic."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loadtests import bench_ingest_cluster as bench

pytestmark = pytest.mark.slow(seconds=12)


def test_a_tiny_run_stores_every_click_once_in_each_mode(capsys: pytest.CaptureFixture[str]) -> None:
    code = bench.main(["--n", "300", "--rounds", "1", "--batch-size", "40", "--modes", "1x1,3x3", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads(out[out.index("\n{") + 1 :])
    runs = {r["mode"]: r for r in doc["runs"]}
    assert set(runs) == {"1x1", "3x3"}
    for mode, run in runs.items():
        assert run["ok"] and run["rows_in_clicks"] == run["rows_inserted"] == run["distinct_inserted"] == 300, run
        assert len(run["per_worker"]) == int(mode[-1])
        assert sum(w["rows"] for w in run["per_worker"]) == 300
        assert set(run["cpu_seconds"]) == {"workers", "chdb_server", "redis_nodes", "other"}
    assert "3x3 / 1x1 clicks/s" in out


def _run(mode: str, rate: int, ok: bool = True) -> dict[str, Any]:
    shards, workers = (int(x) for x in mode.split("x"))
    cpu = {"workers": 5.0, "chdb_server": 3.0, "redis_nodes": 0.5, "other": 1.0}
    return {"mode": mode, "shards": shards, "workers": workers, "clicks_per_second": rate,
            "cpu_seconds_per_million": cpu, "cores": {"ingest": 1.0, "other": 0.5}, "load_average_1m": [1.0, 1.0],
            "ok": ok}


def test_summary_takes_medians_per_mode_in_the_order_run() -> None:
    runs = [_run("1x1", 100), _run("3x3", 300), _run("1x1", 120), _run("3x3", 150, ok=False), _run("1x1", 90),
            _run("3x3", 330)]
    summary = bench.summarize(runs)
    assert list(summary) == ["1x1", "3x3"]
    assert summary["1x1"]["median_clicks_per_second"] == 100 and summary["1x1"]["exact"]
    assert summary["3x3"]["median_clicks_per_second"] == 300
    assert summary["3x3"]["median_clicks_per_second_per_worker"] == 100
    assert not summary["3x3"]["exact"]
    assert bench.Mode.parse("3x2") == bench.Mode(3, 2) and bench.Mode(3, 2).name == "3x2"
