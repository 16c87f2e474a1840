"""Redis going away under the redirect: every link that exists still redirects (read from
ClickHouse, the system of record, when this process never saw it; issue 13, finding 6),
unknown codes still answer 404 without a ClickHouse read each, and the clicks go to the
spool and are replayed when Redis is back."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import redis
from starlette.testclient import TestClient

from tests.redirect.test_handler import DEST, asgi_get, clicks, put_link
from tests.redirect.test_unknown_codes import codes_loaded, make_link
from tests.waiting import wait_until
from tracker.app import create_app
from tracker.core import keys
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis


def store_link(ch: ClickHouse, code: str, link_id: int) -> None:
    """The link's row in ClickHouse, as the registry inserts it (beside the Redis record)."""
    now = datetime.now(UTC)
    row: dict[str, Any] = {
        "brand_id": "brd_1", "id": link_id, "code": code, "campaign_id": "cmp_1", "influencer_id": "inf_1",
        "destination_url": DEST, "coupon_code": "", "disabled": 0, "expires_at": None, "created_at": now,
        "updated_at": now, "version": time.time_ns(),
    }
    ch.insert("links", [list(row.values())], list(row))


def click_id(resp: Any) -> str:
    return dict(parse_qsl(urlsplit(resp.headers["location"]).query))["click_id"]


def wait_replayed(spool: Path, direct: redis.Redis, entries: int) -> None:
    wait_until(
        lambda: not list(spool.glob("*.jsonl")) and direct.xlen(keys.CLICK_STREAM) >= entries,
        timeout=20, interval=0.02, message="the spool was not replayed",
    )


def test_redis_down_still_redirects_and_loses_nothing(
    settings: Settings, ch: ClickHouse, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool")
    direct = redis.Redis.from_url(own_redis.url)
    put_link(direct)
    put_link(direct, "other1", link_id=42)
    store_link(ch, "other1", 42)
    direct.close()
    with TestClient(create_app(settings), follow_redirects=False) as client:
        assert client.get("/abc123").status_code == 302
        own_redis.stop()
        down = [client.get("/abc123") for _ in range(5)]
        assert [r.status_code for r in down] == [302] * 5
        unseen = client.get("/other1")  # never looked up by this process: ClickHouse has it
        assert unseen.status_code == 302, unseen.text
        assert unseen.headers["location"].startswith(DEST + "&click_id=")
        down.append(unseen)
        assert list((tmp_path / "spool").glob("*.jsonl"))
        own_redis.start()
        direct = redis.Redis.from_url(own_redis.url)
        wait_replayed(tmp_path / "spool", direct, 7)
        assert client.get("/other1").status_code == 302
    got = clicks(direct)
    direct.close()
    ids = [e.click_id for e, _ in got]
    sent = [click_id(r) for r in down]
    assert len(ids) == len(set(ids)) == 8
    assert set(sent) <= set(ids)
    assert {e.click_id for e, f in got if f.get(b"r") == b"1"} == set(sent)


def test_a_link_never_seen_redirects_while_redis_is_down(
    settings: Settings, ch: ClickHouse, own_redis: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool")
    with TestClient(create_app(settings), follow_redirects=False) as client:
        link = make_link(client)
        wait_until(lambda: codes_loaded(client), timeout=20, interval=0.02, message="no set of link codes")
        svc = client.app.state.services  # type: ignore[attr-defined]
        top_ups: list[str] = []
        original = svc.ch.query

        def counting(sql: str, *args: Any, **kw: Any) -> Any:
            if "SELECT code FROM links" in sql:
                top_ups.append(sql)
            return original(sql, *args, **kw)

        monkeypatch.setattr(svc.ch, "query", counting)
        own_redis.stop()

        resp = client.get(f"/{link['code']}?utm_source=ig")
        assert resp.status_code == 302, resp.text
        assert resp.headers["location"].startswith("https://shop.example/item?utm_source=ig&click_id=")
        started = time.monotonic()
        for i in range(100):  # unknown codes: answered from the set of codes, topped up at most once a second
            assert asgi_get(client, f"/nosuch{i:03d}", peer=f"10.1.0.{i}")[0] == 404
        assert len(top_ups) <= time.monotonic() - started + 2
        assert list((tmp_path / "spool").glob("*.jsonl"))

        own_redis.start()
        direct = redis.Redis.from_url(own_redis.url)
        wait_replayed(tmp_path / "spool", direct, 1)
    [(event, fields)] = clicks(direct)
    direct.close()
    assert event.click_id == click_id(resp)
    assert (event.link_code, event.link_id) == (link["code"], link["id"])
    assert fields[b"r"] == b"1"


def test_the_probe_survives_a_redis_restart(
    settings: Settings, ch: ClickHouse, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """A code the set lacks is checked in Redis over a held connection; after a Redis restart
    that connection is gone, and the next check still finds a new link at once."""
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool")
    with TestClient(create_app(settings), follow_redirects=False) as client:
        wait_until(lambda: codes_loaded(client), timeout=20, interval=0.02, message="no set of link codes")
        assert client.get("/fresh1").status_code == 404  # checked in Redis: the probe holds a connection
        own_redis.stop()
        own_redis.start()
        direct = redis.Redis.from_url(own_redis.url)
        put_link(direct, "fresh1", link_id=77)  # created while this process was not looking
        direct.close()
        resp = client.get("/fresh1")
        assert resp.status_code == 302, resp.text
