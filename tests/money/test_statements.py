"""Verifiable statements: the chain, the route, `tracker verify-statement`, tampering, replay."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conversions.world import World
from tests.money.helpers import api, drain, rules_off
from tests.schema_cache import SchemaCache
from tracker.money import chain, statements
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse

OLD = (datetime.now(UTC) - timedelta(days=40)).isoformat()
ROOT = Path(__file__).resolve().parents[2]


def _history(world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse) -> None:
    rules_off(world)
    def post(body: dict[str, Any]) -> None:
        assert world.post({"currency": "USD", **body}).status_code == 202

    post({"order_id": "S-1", "amount": "100.00", "coupon_code": "ANNA10", "occurred_at": OLD})
    post({"order_id": "S-2", "amount": "50.00", "coupon_code": "ANNA10", "occurred_at": OLD})
    post({"order_id": "S-3", "amount": "40.00", "coupon_code": "ANNA10", "occurred_at": OLD})
    drain(settings, redis_client, ch)
    post({"order_id": "S-2", "amount": "20.00", "status": "refunded"})  # 5.00 -> 3.00 during the hold
    drain(settings, redis_client, ch)
    (payout,) = api(world, "POST", "/api/v1/payouts", json={}).json()["items"]
    assert payout["amount"] == "17.00"
    api(world, "POST", f"/api/v1/payouts/{payout['id']}/paid", json={"reference": "WIRE-7"})
    post({"order_id": "S-1", "status": "refunded"})  # after payment: a clawback of 10.00
    drain(settings, redis_client, ch)


def test_the_statement_chains_every_change(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse
) -> None:
    _history(world, settings, redis_client, ch)
    r = api(world, "GET", f"/api/v1/influencers/{world.influencer_id}/statement")
    assert r.status_code == 200, r.text
    body = r.json()
    kinds = [(e["kind"], e["order_id"], e["amount"], e["balance"]) for e in body["entries"]]
    assert kinds == [
        ("commission", "S-1", "10.00", "10.00"), ("commission", "S-2", "5.00", "15.00"),
        ("commission", "S-3", "4.00", "19.00"), ("refund", "S-2", "-2.00", "17.00"),
        ("payout", "", "-17.00", "0.00"), ("paid", "", "0.00", "0.00"), ("status", "S-1", "-10.00", "-10.00"),
    ]
    assert "WIRE-7" in body["entries"][5]["detail"]
    assert body["entries"][0]["prev_hash"] == chain.GENESIS
    assert chain.verify(body["entries"], body["head_hash"]) == body["head_hash"] == body["entries"][-1]["hash"]
    assert body["totals"] == {"earned": "7.00", "clawed_back": "0.00", "paid": "17.00", "in_open_payouts": "0.00",
                              "balance": "-10.00"}
    # The next payout carries the clawback; the chain only grows.
    post = world.post({"order_id": "S-4", "amount": "300.00", "currency": "USD", "coupon_code": "ANNA10",
                       "occurred_at": OLD})
    assert post.status_code == 202
    drain(settings, redis_client, ch)
    (second,) = api(world, "POST", "/api/v1/payouts", json={}).json()["items"]
    assert second["amount"] == "20.00"
    later = api(world, "GET", f"/api/v1/influencers/{world.influencer_id}/statement").json()
    assert later["entries"][:7] == body["entries"]
    assert later["entries"][-1]["kind"] == "payout" and "1 clawback(s) of -10.00" in later["entries"][-1]["detail"]
    assert later["totals"]["clawed_back"] == "-10.00" and later["totals"]["balance"] == "0.00"
    # A range shows its entries with the hashes of the whole chain.
    today = datetime.now(UTC).date()
    ranged = api(world, "GET", f"/api/v1/influencers/{world.influencer_id}/statement",
                 params={"from": str(today), "to": str(today)}).json()
    assert ranged["entries"] == later["entries"]
    none = api(world, "GET", f"/api/v1/influencers/{world.influencer_id}/statement",
               params={"to": str(today - timedelta(days=1))}).json()
    assert none["entries"] == [] and none["head_hash"] == chain.GENESIS
    assert api(world, "GET", "/api/v1/influencers/inf_nope0000000/statement").status_code == 404


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tracker.cli", "verify-statement", str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_verify_statement_catches_an_edited_past_entry(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse, tmp_path: Path, fmt: str
) -> None:
    _history(world, settings, redis_client, ch)
    r = api(world, "GET", f"/api/v1/influencers/{world.influencer_id}/statement", params={"format": fmt})
    saved = tmp_path / f"statement.{fmt}"
    saved.write_text(r.text, encoding="utf-8")
    ok = _verify(saved)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: 7 entries, head hash ")
    # The recipe in docs/STATEMENTS.md agrees.
    recipe = tmp_path / "recipe.py"
    recipe.write_text(re.search(r"```python\n(.*?)```", (ROOT / "docs/STATEMENTS.md").read_text(), re.S)[1])
    out = subprocess.run([sys.executable, str(recipe), str(saved)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split()[1] == ok.stdout.split()[-1]
    # One past entry edited: 10.00 of commission becomes 100.00.
    saved.write_text(r.text.replace("10.00", "100.00", 1), encoding="utf-8")
    bad = _verify(saved)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "entry seq 1" in lines[0]
    out = subprocess.run([sys.executable, str(recipe), str(saved)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip() == "broken at entry 1"


@pytest.fixture
def fresh(settings: Settings, template: ClickHouse, schema: SchemaCache) -> Iterator[ClickHouse]:
    name = "replay_" + uuid.uuid4().hex[:12]
    template.command(f"CREATE DATABASE `{name}`")
    schema.create(template, name)
    client = ClickHouse.connect(settings.with_(clickhouse_database=name), create_database=False)
    try:
        yield client
    finally:
        client.command(f"DROP DATABASE IF EXISTS `{name}`")


def test_replaying_the_history_into_a_fresh_database_gives_the_same_head_hash(
    world: World, settings: Settings, redis_client: redis.Redis, ch: ClickHouse, fresh: ClickHouse
) -> None:
    _history(world, settings, redis_client, ch)
    brand, iid = world.brand["id"], world.influencer_id
    before = statements.statement(ch, brand, iid, "USD", None, None)
    # Every fact, replayed in reverse order (one row per insert) into a database that never saw them.
    for table in ("conversion_versions", "payout_lines", "payout_events"):
        result = ch.query_dicts(f"SELECT * FROM {table} WHERE brand_id = {{b:String}}", {"b": brand})
        for row in reversed(result):
            fresh.insert(table, [list(row.values())], list(row))
    fresh.command("OPTIMIZE TABLE payout_lines FINAL")
    after = statements.statement(fresh, brand, iid, "USD", None, None)
    assert after["head_hash"] == before["head_hash"] and json.dumps(after, default=str) == json.dumps(
        before, default=str)
