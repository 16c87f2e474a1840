"""Bearer parsing, API keys, admin and brand authentication through the app."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from starlette.requests import Request
from starlette.testclient import TestClient

from tests.conftest import ADMIN_TOKEN
from tracker.api.auth import bearer
from tracker.app import create_app
from tracker.core import keys
from tracker.core.credentials import new_api_key, token_hash
from tracker.settings import Settings
from tracker.storage.clickhouse import ClickHouse


def _request(authorization: bytes | None) -> Request:
    headers = [(b"authorization", authorization)] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


@pytest.mark.parametrize(
    ("header", "token"),
    [
        (None, None),
        (b"", None),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"Bearer  ", None),
        (b"Bearer abc", "abc"),
        (b"bearer abc", "abc"),
        (b"BEARER abc", "abc"),
        (b"Bearer   abc  ", "abc"),
        (b"Bearer a b", None),
        (b"Basic dXNlcjpwYXNz", None),
        (b"Token abc", None),
        (b"Bearerabc", None),
    ],
)
def test_bearer(header: bytes | None, token: str | None) -> None:
    assert bearer(_request(header)) == token


@pytest.fixture
def client(ch: ClickHouse, settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _brand(client: TestClient) -> tuple[dict[str, str], str]:
    r = client.post("/api/v1/brands", json={"name": "Acme"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert r.status_code == 201
    return r.json(), r.json()["api_key"]


@pytest.mark.parametrize(
    ("who", "admin_status", "brand_status"),
    [
        ("none", 401, 401),
        ("admin", 201, 403),
        ("brand", 403, 200),
        ("admin-prefix", 401, 401),
        ("admin-longer", 401, 401),
        ("brand-typo", 401, 401),
        ("garbage", 401, 401),
    ],
)
def test_who_may_do_what(client: TestClient, who: str, admin_status: int, brand_status: int) -> None:
    _, key = _brand(client)
    token = {
        "none": None,
        "admin": ADMIN_TOKEN,
        "brand": key,
        "admin-prefix": ADMIN_TOKEN[:-1],
        "admin-longer": ADMIN_TOKEN + "x",
        "brand-typo": key[:-1] + ("A" if key[-1] != "A" else "B"),
        "garbage": "x" * 40,
    }[who]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = client.post("/api/v1/brands", json={"name": "B"}, headers=headers)
    assert r.status_code == admin_status, r.text
    r = client.get("/api/v1/campaigns", headers=headers)
    assert r.status_code == brand_status, r.text
    if brand_status == 401:
        assert r.headers["www-authenticate"] == 'Bearer realm="tracker"'
        assert r.json()["error"]["code"] in ("unauthorized", "invalid_token")


def test_unknown_keys_are_remembered_briefly(client: TestClient, redis_client: redis.Redis) -> None:
    unknown = new_api_key()
    r = client.get("/api/v1/links", headers={"Authorization": f"Bearer {unknown}"})
    assert r.status_code == 401
    cached = keys.api_key(token_hash(unknown))
    assert redis_client.get(cached) == b""
    assert 0 < int(redis_client.ttl(cached)) <= 30


def test_revoked_key_is_refused_once_the_cache_is_gone(client: TestClient, ch: ClickHouse,
                                                       redis_client: redis.Redis) -> None:
    brand, key = _brand(client)
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/api/v1/links", headers=headers).status_code == 200
    ch.insert(
        "api_keys",
        [[token_hash(key), brand["id"], key[:8], 1, datetime.now(UTC), time.time_ns()]],
        ["key_hash", "brand_id", "prefix", "revoked", "created_at", "version"],
    )
    redis_client.delete(keys.api_key(token_hash(key)))
    # This process keeps a looked-up key for GRANT_CACHE_SECONDS (2 s); forget it now.
    client.app.state.services.registry.apikeys.clear_cache()  # type: ignore[attr-defined]
    assert client.get("/api/v1/links", headers=headers).status_code == 401


def test_plaintext_key_is_stored_nowhere(client: TestClient, ch: ClickHouse, redis_client: redis.Redis) -> None:
    _, key = _brand(client)
    rows = ch.query("SELECT key_hash, prefix FROM api_keys")
    assert rows == [(token_hash(key), key[:8])]
    for k in redis_client.keys("*"):
        assert key not in str(k)
        if redis_client.type(k) == b"string":
            assert key not in str(redis_client.get(k))
