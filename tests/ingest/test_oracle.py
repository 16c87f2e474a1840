"""The fault tests' oracle can fail: on clicks inserted twice, also after merges folded them, on a
lost click, and on a rollup that disagrees with what was produced."""

from __future__ import annotations

import redis

from tests.ingest_helpers import expected, inserted, make_clicks, oracle, produce, worker
from tracker.core.events import CLICK_COLUMNS
from tracker.ingest import enrich
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def test_oracle_sees_a_double_delivery_after_merges_folded_it(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    """The same clicks inserted again under another token are counted twice, even once a merge
    (here OPTIMIZE ... FINAL) folded them into one row each in ``clicks``."""
    events = make_clicks(200)
    produce(redis_client, events)
    worker(settings, redis_client, ch).drain()
    produced = expected(events)
    assert oracle(ch, produced) == []
    ch.insert("clicks", [enrich.click_row(ev) for ev in events[:50]], CLICK_COLUMNS, dedup_token="another")
    before_merge = oracle(ch, produced)
    assert any("clicks_daily sums" in p for p in before_merge), before_merge  # the rollup counts them too
    ch.command("OPTIMIZE TABLE clicks FINAL")
    ch.command("OPTIMIZE TABLE clicks_inserted FINAL")
    # The merge folded the duplicates: the table (and its rollup) no longer shows them.
    assert ch.query("SELECT count(), uniqExact(click_id) FROM clicks") == [(200, 200)]
    problems = oracle(ch, produced)
    assert any("250 rows" in p for p in problems), problems
    assert any("50 duplicate" in p for p in problems), problems
    twice = {cid for cid, n in inserted(ch).items() if n == 2}
    assert twice == {ev.click_id for ev in events[:50]}


def test_oracle_sees_a_lost_click_and_a_rollup_short_of_what_was_produced(
    settings: Settings, ch: ClickHouse, redis_client: redis.Redis
) -> None:
    events = make_clicks(200)
    produce(redis_client, events)
    worker(settings, redis_client, ch).drain()
    human = next(ev for ev in events if not enrich.click_row(ev)[-2])
    ch.command(
        "ALTER TABLE clicks DELETE WHERE click_id = {id:String} SETTINGS mutations_sync = 2", {"id": human.click_id}
    )
    ch.command("OPTIMIZE TABLE clicks FINAL")
    produced = expected(events)
    problems = oracle(ch, produced)
    assert "1 produced clicks are missing, 0 are unknown" in problems, problems
    lost = f"clicks_daily sums {produced['clicks'] - 1}+{produced['bot_clicks']}"
    assert any(p.startswith(lost) for p in problems), problems
