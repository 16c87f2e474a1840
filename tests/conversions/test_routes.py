"""The postback routes over HTTP: store authentication, validation answers, GET aliases, limits."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from tests.conversions.world import World, make_world, order, stream_rows
from tracker.api.endpoints import ApiRoute
from tracker.app import create_app
from tracker.conversions import signature
from tracker.conversions.parse import PostbackIn, PostbackQuery
from tracker.conversions.routes import ip_allowed, routes
from tracker.conversions.state import Conversion
from tracker.conversions.staterow import normalize_row
from tracker.core import keys
from tracker.core.events import CONVERSION_COLUMNS
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse
from tracker.storage.embedded import EmbeddedRedis

# --- the happy path and the stream entry --------------------------------------------------------


def test_click_attributed_conversion_is_answered_and_streamed(world: World, redis_client: redis.Redis) -> None:
    click_id = world.click(world.link)
    r = world.post({"order_id": "A-1", "amount": "49.90", "currency": "USD", "click_id": click_id})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["conversion_id"].startswith("cnv_")
    assert body == {
        "conversion_id": body["conversion_id"],
        "order_id": "A-1",
        "status": "approved",
        "attributed": True,
        "attribution": "click",
        "link_code": world.link["code"],
        "influencer_id": world.influencer_id,
        "campaign_id": world.campaign_id,
        "commission": "4.99",
        "amount": "49.90",
        "refunded_amount": "0.00",
        "currency": "USD",
        "original_amount": "49.90",
        "original_refunded_amount": "0.00",
        "original_currency": "USD",
        "fx_rate": "1",
        "duplicate": False,
    }
    rows = stream_rows(redis_client)
    assert len(rows) == 1
    row = rows[0]
    assert tuple(row) == CONVERSION_COLUMNS
    assert row["brand_id"] == world.brand["id"]
    assert row["store_id"] == world.store_id
    assert row["version"] == 1
    assert row["click_id"] == click_id
    assert row["link_id"] == int(world.link["id"])
    assert row["attributed"] == 1
    assert (row["amount"], row["commission"], row["refunded_amount"]) == ("49.90", "4.99", "0.00")
    typed = normalize_row(row)
    assert typed["occurred_at"].tzinfo is not None
    assert abs(typed["occurred_at"].timestamp() - time.time()) < 60
    # The Redis state is the same bytes that went on the stream.
    state = redis_client.get(keys.conversion(world.brand["id"], "A-1"))
    assert state is not None and json.loads(state) == row
    assert 7 * 86_400 - 60 < redis_client.ttl(keys.conversion(world.brand["id"], "A-1")) <= 7 * 86_400


# --- store authentication -----------------------------------------------------------------------


BODY = {"order_id": "S-1", "amount": "5.00", "currency": "USD"}


@pytest.mark.parametrize(
    ("case", "mutate"),
    [
        ("wrong secret", lambda w: {"secret": "x" * 64}),
        ("unknown store", lambda w: {"store_id": "sto_" + "Z" * 16}),
        ("malformed store id", lambda w: {"store_id": "nope"}),
        ("empty store id", lambda w: {"store_id": ""}),
    ],
)
def test_unknown_store_and_wrong_secret_answer_the_same_401(
    world: World, redis_client: redis.Redis, case: str, mutate: Callable[[World], dict[str, Any]]
) -> None:
    r = world.post(BODY, **mutate(world))
    assert r.status_code == 401, case
    message = "The store id or the X-Signature is not valid."
    assert r.json() == {"error": {"code": "invalid_signature", "message": message}}
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0


@pytest.mark.parametrize(
    ("case", "headers", "message"),
    [
        ("missing header", lambda w, raw: {"X-Store-Id": w.store_id}, "missing"),
        ("old timestamp", lambda w, raw: {"X-Store-Id": w.store_id,
                                          "X-Signature": signature.sign(w.secret, int(time.time()) - 400, raw)},
         "more than 300 seconds"),
        ("future timestamp", lambda w, raw: {"X-Store-Id": w.store_id,
                                             "X-Signature": signature.sign(w.secret, int(time.time()) + 400, raw)},
         "more than 300 seconds"),
        ("tampered body", lambda w, raw: {"X-Store-Id": w.store_id,
                                          "X-Signature": signature.sign(w.secret, int(time.time()), raw + b" ")},
         "not valid"),
        ("malformed", lambda w, raw: {"X-Store-Id": w.store_id, "X-Signature": "sha256=abc"}, "no timestamp"),
        ("missing store id", lambda w, raw: {"X-Signature": signature.sign(w.secret, int(time.time()), raw)},
         "not valid"),
    ],
)
def test_bad_signatures_answer_401(
    world: World, redis_client: redis.Redis, case: str, headers: Callable[[World, bytes], dict[str, str]],
    message: str,
) -> None:
    raw = json.dumps(BODY).encode()
    r = world.client.post("/api/v1/conversions", content=raw,
                          headers={**headers(world, raw), "Content-Type": "application/json"})
    assert r.status_code == 401, case
    assert message in r.json()["error"]["message"], case
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0


def test_body_size_limit(world: World) -> None:
    r = world.post({"order_id": "B-1", "amount": "1.00", "currency": "USD", "coupon_code": "x" * 20_000})
    assert r.status_code == 413


# --- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"amount": "1.00", "currency": "USD"}, 400, "order_id is required"),
        ({"order_id": 17, "amount": "1.00", "currency": "USD"}, 400, "order_id must be a string"),
        ({"order_id": "x" * 129, "amount": "1.00", "currency": "USD"}, 400, "longer than 128"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "click_id": "c" * 257}, 400, "longer than 256"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "coupon_code": "C" * 65}, 400, "longer than 64"),
        ({"order_id": "a\nb", "amount": "1.00", "currency": "USD"}, 400, "control characters"),
        ({"order_id": "V", "currency": "USD"}, 400, "amount is required"),
        ({"order_id": "V", "amount": "1.00"}, 400, "currency is required"),
        ({"order_id": "V", "amount": 1.555, "currency": "USD"}, 422, "not a JSON number"),
        ({"order_id": "V", "amount": "0", "currency": "USD"}, 422, "greater than 0"),
        ({"order_id": "V", "amount": "-5.00", "currency": "USD"}, 422, "greater than 0"),
        ({"order_id": "V", "amount": "1.001", "currency": "USD"}, 422, "more decimals than USD"),
        ({"order_id": "V", "amount": "1.5", "currency": "JPY"}, 422, "more decimals than JPY"),
        ({"order_id": "V", "amount": "abc", "currency": "USD"}, 422, "not a decimal string"),
        ({"order_id": "V", "amount": True, "currency": "USD"}, 422, "decimal string"),
        ({"order_id": "V", "amount": "1.00", "currency": "XYZ"}, 422, "not an ISO 4217"),
        ({"order_id": "V", "amount": "1.00", "currency": 840}, 400, "currency must be a string"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "status": "paid"}, 422, "not one of"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "status": 1}, 400, "status must be a string"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "click_id": 5}, 400, "click_id must be a string"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": "yesterday"}, 422, "ISO 8601"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": "2999-01-01T00:00:00Z"}, 422,
         "in the future"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": 32503680000}, 422, "in the future"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "occurred_at": "1990-01-01"}, 422, "before 2000"),
        ({"order_id": "V", "amount": "1.00", "currency": "USD", "clickid": "abc"}, 400, "Unknown field(s) clickid"),
    ],
)
def test_bad_bodies(world: World, redis_client: redis.Redis, body: dict[str, Any], status: int, message: str) -> None:
    r = world.post(body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert redis_client.xlen(keys.CONVERSION_STREAM) == 0


@pytest.mark.parametrize("raw", [b"", b"[1,2]", b"{not json", b'"string"'])
def test_non_object_bodies(world: World, raw: bytes) -> None:
    r = world.post(raw)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_occurred_at_forms(world: World, redis_client: redis.Redis) -> None:
    forms = {
        "unix int": 1_767_323_045,
        "unix string": "1767323045",
        "iso Z": "2026-01-02T03:04:05Z",
        "iso offset": "2026-01-02T04:04:05+01:00",
        "iso naive = UTC": "2026-01-02T03:04:05",
    }
    for i, value in enumerate(forms.values()):
        r = world.post({"order_id": order(i), "amount": "1.00", "currency": "USD", "occurred_at": value})
        assert r.status_code == 202, r.text
    assert {normalize_row(row)["occurred_at"] for row in stream_rows(redis_client)} == {
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    }


def test_redis_down_answers_503_and_the_retry_is_recorded(ch: ClickHouse, settings: Settings, tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "own")
    server.start()
    try:
        own = settings.with_(redis_url=server.url)
        with TestClient(create_app(own)) as client:
            world = make_world(client, own)
            body = {"order_id": "DOWN-1", "amount": "10.00", "currency": "USD", "coupon_code": "ANNA10"}
            server.stop()
            down = world.post(body)
            assert down.status_code == 503, down.text
            assert down.json()["error"]["code"] == "storage_unavailable"
            assert down.headers["Retry-After"] == "1"
            server.start()  # same data directory and socket: AOF brings the registry records back
            first = world.post(body)
            assert (first.status_code, first.json()["duplicate"]) == (202, False), first.text
            assert world.post(body).json()["duplicate"] is True
            check = redis.Redis.from_url(server.url)
            assert check.xlen(keys.CONVERSION_STREAM) == 1
            check.close()
    finally:
        server.stop()


# --- GET /postback ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD"}, None),
        ({"txid": "G-1", "payout": "20.00", "currency": "USD", "clickid": "{click}"}, "click"),
        ({"transaction": "G-1", "sale_amount": "20.00", "currency": "usd", "cid": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "subid": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "transaction_id": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "click_id": "{click}"}, "click"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "coupon": "bob5"}, "coupon"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "coupon_code": "BOB5", "network_macro": "x"},
         "coupon"),
        ({"order_id": "G-1", "amount": "20.00", "currency": "USD", "click_id": "{click}", "cid": "{click}"}, "click"),
    ],
)
def test_get_postback_aliases(world: World, params: dict[str, str], expected: str | None) -> None:
    click_id = world.click(world.link)
    params = {k: v.replace("{click}", click_id) for k, v in params.items()}
    r = world.get(**params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["order_id"], body["amount"], body["attribution"], body["duplicate"]) == (
        "G-1", "20.00", expected, False,
    )
    assert world.get(**params).json()["duplicate"] is True


def test_get_postback_conflicting_aliases(world: World) -> None:
    r = world.get(order_id="G-1", txid="G-2", amount="1.00", currency="USD")
    assert r.status_code == 400
    assert "order_id, txid" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("store_id", "token"),
    [("{store}", "pbt_wrong"), ("{store}", ""), ("sto_" + "Q" * 16, "{token}"), ("", "{token}")],
)
def test_get_postback_bad_token(world: World, store_id: str, token: str) -> None:
    params = {"store_id": store_id.replace("{store}", world.store_id), "token": token.replace("{token}", world.token),
              "order_id": "G-1", "amount": "1.00", "currency": "USD"}
    r = world.client.get("/postback", params=params)
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "The store id or the token is not valid."


def test_get_postback_ip_allowlist(world: World) -> None:
    store = world.call(world.registry.create_store, world.brand["id"], name="Locked",
                       allowed_ips=["10.0.0.0/8", "192.0.2.7"])
    params = {"store_id": store.store["id"], "token": store.postback_token, "order_id": "IP-1",
              "amount": "1.00", "currency": "USD"}
    # The test client's peer is "testclient", not an address, and not a trusted proxy.
    denied = world.client.get("/postback", params=params, headers={"X-Forwarded-For": "10.1.2.3"})
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ip_not_allowed"


@pytest.mark.parametrize(
    ("peer", "forwarded", "allowed"),
    [
        ("10.1.2.3", None, True),
        ("192.0.2.7", None, True),
        ("192.0.2.8", None, False),
        ("127.0.0.1", "10.9.9.9", True),  # trusted proxy: the forwarded address counts
        # The rightmost address our proxy did not add is the client; entries left of it are its own words.
        ("127.0.0.1", "203.0.113.1, 10.0.0.1", True),
        ("127.0.0.1", "10.9.9.9, 203.0.113.1", False),
        ("127.0.0.1", ["10.9.9.9", "203.0.113.1"], False),  # the proxy added a header line of its own
        ("203.0.113.1", "10.9.9.9", False),  # untrusted peer: its X-Forwarded-For is ignored
    ],
)
def test_get_postback_ip_allowlist_by_peer(
    ch: ClickHouse, settings: Settings, peer: str, forwarded: str | list[str] | None, allowed: bool
) -> None:
    with TestClient(create_app(settings), client=(peer, 50000)) as client:
        world = make_world(client, settings)
        store = world.call(world.registry.create_store, world.brand["id"], name="Locked",
                           allowed_ips=["10.0.0.0/8", "192.0.2.7"])
        params = {"store_id": store.store["id"], "token": store.postback_token, "order_id": "IP-1",
                  "amount": "1.00", "currency": "USD"}
        lines = [forwarded] if isinstance(forwarded, str) else forwarded or []
        r = client.get("/postback", params=params, headers=[("X-Forwarded-For", line) for line in lines])
    assert r.status_code == (200 if allowed else 403), r.text


# --- rate limit ---------------------------------------------------------------------------------------------------


def test_rate_limit_per_store(ch: ClickHouse, settings: Settings) -> None:
    with TestClient(create_app(settings.with_(postback_rate_limit=3))) as client:
        world = make_world(client, settings)
        codes = [world.post({"order_id": order(i), "amount": "1.00", "currency": "USD"}).status_code
                 for i in range(5)]
        assert codes == [202, 202, 202, 429, 429]
        r = world.post({"order_id": "late", "amount": "1.00", "currency": "USD"})
        assert r.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Another store of the same brand has its own budget.
        other = world.call(world.registry.create_store, world.brand["id"], name="Other", allowed_ips=[])
        assert world.post({"order_id": "o-1", "amount": "1.00", "currency": "USD"}, store_id=other.store["id"],
                          secret=other.secret).status_code == 202


# --- docs/STORES.md -------------------------------------------------------------------------------------------------


def test_stores_doc_python_example_is_accepted(world: World) -> None:
    doc = (Path(__file__).resolve().parent.parent.parent / "docs" / "STORES.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert blocks, "docs/STORES.md has no python example"
    namespace: dict[str, Any] = {}
    exec(blocks[0], namespace)  # the example as a store would copy it
    order = {"order_id": "DOC-1", "amount": "49.90", "currency": "USD", "click_id": world.click(world.link)}
    body, headers = namespace["signed_postback"](world.store_id, world.secret, order)
    r = world.client.post("/api/v1/conversions", content=body, headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["attribution"] == "click"


def test_stores_doc_javascript_signature_is_accepted(world: World, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed")
    doc = (Path(__file__).resolve().parent.parent.parent / "docs" / "STORES.md").read_text()
    blocks = re.findall(r"```javascript\n(.*?)```", doc, flags=re.S)
    assert blocks, "docs/STORES.md has no javascript example"
    module = tmp_path / "example.mjs"
    module.write_text(blocks[0])
    body = json.dumps({"order_id": "DOC-JS", "amount": "12.50", "currency": "USD", "coupon_code": "ANNA10"})
    script = (
        f"import {{signPostback}} from {json.dumps(str(module))}; "
        "process.stdout.write(signPostback(process.argv[1], process.argv[2]))"
    )
    header = subprocess.run(
        [node, "--input-type=module", "-e", script, world.secret, body],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    headers = {"X-Store-Id": world.store_id, "X-Signature": header, "Content-Type": "application/json"}
    r = world.client.post("/api/v1/conversions", content=body.encode(), headers=headers)
    assert r.status_code == 202, r.text
    assert r.json()["attribution"] == "coupon"


def test_rate_limited_answer_says_when_to_retry(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> None:
    with TestClient(create_app(settings.with_(postback_rate_limit=1))) as client:
        world = make_world(client, settings)
        assert world.post({"order_id": "RL-1", "amount": "1.00", "currency": "USD"}).status_code == 202
        r = world.post({"order_id": "RL-2", "amount": "1.00", "currency": "USD"})
    assert r.status_code == 429
    message = r.json()["error"]["message"]
    match = re.fullmatch(rf"Store {world.store_id} sent more than 1 postbacks this minute; retry in (\d+) seconds\.",
                         message)
    assert match and 1 <= int(match[1]) <= 60, message
    counters = [k.decode() for k in redis_client.keys(f"{keys.RATE_LIMITS}:*")]
    assert len(counters) == 1 and world.store_id in counters[0]
    ttl_ms = redis_client.pttl(counters[0])
    assert 0 < ttl_ms <= 60_000
    # Retry-After is the real time until the window resets (the counter's expiry), not 1 s (issue #13).
    retry_after = int(r.headers["Retry-After"])
    assert math.ceil(ttl_ms / 1000) - 1 <= retry_after <= math.ceil(ttl_ms / 1000) + 1, (retry_after, ttl_ms)
    assert retry_after == int(match[1])
    assert retry_after > 30  # the window opened a moment ago


def test_get_postback_429_says_when_to_retry(ch: ClickHouse, settings: Settings, redis_client: redis.Redis) -> None:
    with TestClient(create_app(settings.with_(postback_rate_limit=1))) as client:
        world = make_world(client, settings)
        assert world.get(order_id="G-1", amount="1.00", currency="USD").status_code == 200
        r = world.get(order_id="G-2", amount="1.00", currency="USD")
    assert r.status_code == 429
    [counter] = redis_client.keys(f"{keys.RATE_LIMITS}:*")
    ttl_ms = redis_client.pttl(counter)
    assert math.ceil(ttl_ms / 1000) - 1 <= int(r.headers["Retry-After"]) <= math.ceil(ttl_ms / 1000) + 1


@pytest.mark.parametrize(
    ("ip", "allowed", "ok"),
    [
        ("10.1.2.3", [], True),
        ("not an address", [], True),
        ("10.1.2.3", ["10.0.0.0/8"], True),
        ("10.1.2.3", ["10.1.2.3"], True),
        ("11.1.2.3", ["10.0.0.0/8", "192.0.2.7"], False),
        ("2001:db8::1", ["2001:db8::/32"], True),
        ("2001:db9::1", ["2001:db8::/32"], False),
        ("10.1.2.3", ["garbage", "10.1.2.0/24"], True),  # a bad entry is skipped
        ("testclient", ["10.0.0.0/8"], False),
        ("10.0.0.1", ["10.0.0.1/8"], True),  # host bits set: taken as its network
    ],
)
def test_ip_allowlist(ip: str, allowed: list[str], ok: bool) -> None:
    assert ip_allowed(ip, allowed) is ok


def test_the_routes_describe_what_they_take_and_answer() -> None:
    described = {(r.path, r.method): r.operation for r in routes() if isinstance(r, ApiRoute)}
    post = described[("/api/v1/conversions", "POST")]
    get = described[("/postback", "GET")]
    assert (post.tag, post.security, post.body, post.query) == ("conversions", ("store_signature",), PostbackIn, None)
    assert (get.tag, get.security, get.body, get.query) == ("conversions", ("store_token",), None, PostbackQuery)
    assert dict(post.answers) == {202: Conversion} and dict(get.answers) == {200: Conversion}
    assert 413 in post.errors and 403 in get.errors and 403 not in post.errors
    # Every field the recorder answers is in the answer model, and nothing else.
    assert set(Conversion.model_fields) == {
        "conversion_id", "order_id", "status", "attributed", "attribution", "link_code", "influencer_id",
        "campaign_id", "commission", "amount", "refunded_amount", "currency", "original_amount",
        "original_refunded_amount", "original_currency", "fx_rate", "duplicate",
    }
