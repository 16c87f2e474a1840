"""Click log: group commit into the stream; Redis down -> spool -> replay, nothing lost or doubled."""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from tests.waiting import wait_until_async
from tracker.core import keys
from tracker.core.events import ClickEvent
from tracker.redirect.clicklog import ClickLog
from tracker.settings import Settings
from tracker.storage.embedded import EmbeddedRedis


def event(n: int) -> ClickEvent:
    return ClickEvent(
        f"click-{n:06d}", 1_795_000_000_000 + n, "brd_1", "cmp_1", "inf_1", 7, "abc123", n, "DE",
        "Mozilla/5.0", "https://ref.example/", ("ig", "", "", "", ""), "",
    )


def stream_entries(client: redis.Redis) -> list[tuple[ClickEvent, bool]]:
    out = []
    for _, fields in client.xrange(keys.CLICK_STREAM):
        out.append((ClickEvent.decode(fields[b"e"]), fields.get(b"r") == b"1"))
    return out


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_concurrent_clicks_share_one_pipeline(settings: Settings, redis_client: redis.Redis) -> None:
    batches_before = sample("tracker_group_commit_size_count")
    enqueued_before = sample("tracker_clicks_enqueued_total")

    async def scenario() -> None:
        log = ClickLog(settings)
        await log.start()
        try:
            await asyncio.gather(*(log.log(event(i)) for i in range(200)))
            # each request was answered only after its batch was written
            assert redis_client.xlen(keys.CLICK_STREAM) == 200
            await log.log(event(200))
        finally:
            await log.stop()

    asyncio.run(scenario())
    entries = stream_entries(redis_client)
    assert [e for e, _ in entries] == [event(i) for i in range(201)]
    assert not any(replayed for _, replayed in entries)
    assert sample("tracker_group_commit_size_count") - batches_before == 2
    assert sample("tracker_clicks_enqueued_total") - enqueued_before == 201


def test_stream_shards_spread_clicks(settings: Settings, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        log = ClickLog(settings.with_(stream_shards=3))
        await log.start()
        try:
            await asyncio.gather(*(log.log(event(i)) for i in range(30)))
        finally:
            await log.stop()

    asyncio.run(scenario())
    lengths = [redis_client.xlen(k) for k in keys.click_streams(3)]
    assert sum(lengths) == 30 and all(n == 10 for n in lengths)


def test_redis_down_spools_then_replays_everything_once(
    settings: Settings, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool")
    client = redis.Redis.from_url(own_redis.url)

    async def scenario() -> None:
        log = ClickLog(settings)
        await log.start()
        try:
            await asyncio.gather(*(log.log(event(i)) for i in range(10)))
            own_redis.stop()
            started = time.monotonic()
            for wave in range(3):  # several batches while Redis is down
                await asyncio.gather(*(log.log(event(10 + wave * 10 + i)) for i in range(10)))
            answered_in = time.monotonic() - started
            assert answered_in < 5  # answered at once, not after reconnect attempts
            assert not log.redis_up
            files = list((tmp_path / "spool").glob("clicks-*.jsonl"))
            assert len(files) == 1
            assert len(files[0].read_bytes().splitlines()) == 30
            own_redis.start()  # same socket path, AOF restores the first 10
            async def replayed() -> bool:
                return log.redis_up and not list((tmp_path / "spool").glob("*.jsonl"))

            await wait_until_async(replayed, timeout=20, message="Redis is back but the spool was not replayed")
            await asyncio.gather(*(log.log(event(40 + i)) for i in range(5)))
        finally:
            await log.stop()

    asyncio.run(scenario())
    entries = stream_entries(client)
    client.close()
    assert sorted(e.click_id for e, _ in entries) == [event(i).click_id for i in range(45)]
    replayed = {e.click_id for e, r in entries if r}
    assert replayed == {event(i).click_id for i in range(10, 40)}
    assert list((tmp_path / "spool").iterdir()) == []


def test_a_redis_restart_between_batches_spools_nothing(
    settings: Settings, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """The flusher holds its connection across batches; one Redis closed meanwhile is
    replaced before the next batch is written, so a restart while idle costs no spool trip."""
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool")
    client = redis.Redis.from_url(own_redis.url)
    spooled_before = sample("tracker_clicks_spooled_total")

    async def scenario() -> None:
        log = ClickLog(settings)

        async def old_connection_at_eof() -> bool:
            # What a restart while idle looks like to the flusher: its held connection's
            # reader has seen the end of file (asyncio delivers it on a later loop turn).
            conn = log._conn
            return conn is None or conn._reader is None or conn._reader.at_eof()

        await log.start()
        try:
            for wave in range(3):  # three batches over one held connection
                await asyncio.gather(*(log.log(event(wave * 10 + i)) for i in range(10)))
            own_redis.stop()
            own_redis.start()  # same socket path, AOF restores the first 30
            await wait_until_async(old_connection_at_eof, message="the held connection never saw Redis go")
            await asyncio.gather(*(log.log(event(30 + i)) for i in range(10)))
            assert log.redis_up
        finally:
            await log.stop()

    asyncio.run(scenario())
    entries = stream_entries(client)
    client.close()
    assert [e.click_id for e, _ in entries] == [event(i).click_id for i in range(40)]
    assert not any(replayed for _, replayed in entries)
    assert sample("tracker_clicks_spooled_total") == spooled_before
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def _spool_file(directory: Path, name: str, events: list[ClickEvent], tail: bytes = b"") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"".join(e.encode() + b"\n" for e in events) + tail)
    return path


def test_leftover_spool_resumes_where_an_interrupted_replay_stopped(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    events = [event(i) for i in range(6)]
    # A dead process left a file whose replay had sent the first two clicks, a poison line,
    # and a last line cut by a crash mid-write (that click was never answered).
    path = _spool_file(spool, "clicks-1-1-1.jsonl", events[:4], b'["not a click"]\n' + events[4].encode() + b"\n")
    path.write_bytes(path.read_bytes() + events[5].encode()[:20])
    offset = len(events[0].encode()) + len(events[1].encode()) + 2
    (spool / "clicks-1-1-1.done").write_text(str(offset))

    async def scenario() -> None:
        log = ClickLog(settings.with_(spool_dir=spool))
        await log.start()
        try:
            async def replayed() -> bool:
                return not path.exists()

            await wait_until_async(replayed, message="the leftover spool file was not replayed")
        finally:
            await log.stop()

    asyncio.run(scenario())
    entries = stream_entries(redis_client)
    assert [e.click_id for e, _ in entries] == [events[i].click_id for i in (2, 3, 4)]
    assert all(replayed for _, replayed in entries)
    assert list(spool.iterdir()) == []


def test_a_file_locked_by_a_live_process_is_not_replayed(
    settings: Settings, redis_client: redis.Redis, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    path = _spool_file(spool, "clicks-2-2-2.jsonl", [event(1), event(2)])
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a live writer holds on its current file

    async def scenario() -> tuple[int, int]:
        log = ClickLog(settings.with_(spool_dir=spool))
        await log.start()
        try:
            assert await log.replay()
            locked = redis_client.xlen(keys.CLICK_STREAM)
            os.close(fd)
            assert await log.replay()
            return locked, redis_client.xlen(keys.CLICK_STREAM)
        finally:
            await log.stop()

    locked, unlocked = asyncio.run(scenario())
    assert (locked, unlocked) == (0, 2)
    assert not path.exists()


@pytest.mark.parametrize(
    "user_agent",
    ["Mozilla/5.0", "", 'quote " backslash \\ slash /', "\u00e9\u2028\u2029 \U0001f600", "\x00\x01\x1f\x7f tab\t nl\n"],
)
def test_the_fast_encoding_is_exactly_json(user_agent: str) -> None:
    import json

    e = ClickEvent(
        "AQUBohGHFA1g", 1_795_000_000_000, "brd_\u00e9", "cmp", "inf", 2**40, "abc", 2**64 - 1, "DE", user_agent,
        user_agent[::-1], (user_agent, "", "m", "", "c"), "head",
    )
    reference = json.dumps(
        [1, e.click_id, e.ts_ms, e.brand_id, e.campaign_id, e.influencer_id, e.link_id, e.link_code, e.visitor_hash,
         e.country, e.user_agent, e.referer, *e.utm, e.hint],
        separators=(",", ":"), ensure_ascii=False,
    ).encode()
    assert e.encode() == reference
    assert ClickEvent.decode(e.encode()) == e


def test_the_spool_is_capped_and_clicks_past_the_cap_are_counted_lost(
    settings: Settings, own_redis: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.with_(redis_url=own_redis.url, spool_dir=tmp_path / "spool", spool_max_mb=0.02)
    cap = settings.spool_max_bytes  # 20,971 bytes
    spooled_before, dropped_before = sample("tracker_clicks_spooled_total"), sample("tracker_clicks_dropped_total")

    async def scenario() -> None:
        log = ClickLog(settings)
        await log.start()
        try:
            own_redis.stop()
            for i in range(200):  # one batch each; every call returns (the follower is redirected)
                await log.log(event(i))
        finally:
            await log.stop()

    asyncio.run(scenario())
    files = list((tmp_path / "spool").glob("clicks-*.jsonl"))
    size = sum(p.stat().st_size for p in files)
    lines = sum(len(p.read_bytes().splitlines()) for p in files)
    spooled = sample("tracker_clicks_spooled_total") - spooled_before
    dropped = sample("tracker_clicks_dropped_total") - dropped_before
    assert cap - 200 < size <= cap  # full to within a line
    assert spooled == lines and spooled + dropped == 200 and dropped > 0
    assert sample("tracker_spool_bytes") == size
    lost = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert len(lost) == 1  # loud, but not a line per batch
    assert lost[0].startswith("LOST 1 clicks: Redis is down and the spool")
