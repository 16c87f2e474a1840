"""The real traffic mix against `tracker serve`, for `python -m loadtests.run_locust`.

- Followers click short links: link popularity is Zipf-skewed (a few influencers get
  most clicks), user agents are mostly mobile in-app browsers, then mobile and
  desktop browsers, and 5-10% crawlers and link previews. Redirects are not
  followed; the click id is read from the Location header.
- Stores post signed conversions for ~3% of human clicks with the click ids the
  redirects returned, plus coupon-only orders, orders with nothing to attribute,
  retried (duplicate) postbacks, and full and partial refunds of earlier orders.
- Brands read reports.

Everything sent and accepted is tallied and written as JSON at the end
(``LOCUST_TALLY``), so the runner can reconcile it with the reports API. The seed
(links, stores, brand key) comes from ``LOCUST_SEED``, written by the runner.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import itertools
import json
import os
import random
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from locust import HttpUser, between, events, task
from locust.exception import StopUser

from loadtests.traffic import REFERERS, pick_user_agent, zipf_weights

SEED: dict[str, Any] = json.loads(Path(os.environ["LOCUST_SEED"]).read_text()) if "LOCUST_SEED" in os.environ else {}
CONVERSION_SHARE = 0.03

_LINK_CUM = zipf_weights(len(SEED.get("links", [])) or 1)


def pick_link(rng: random.Random) -> dict[str, Any]:
    links: list[dict[str, Any]] = SEED["links"]
    return links[min(bisect.bisect(_LINK_CUM, rng.random() * _LINK_CUM[-1]), len(links) - 1)]


# --- what was sent and accepted, shared by every user in this (single) locust process ---------------

TALLY: dict[str, Any] = {
    "human_302": 0,
    "bot_302": 0,
    "redirect_other": 0,
    "postbacks_accepted": 0,
    "duplicates": 0,
    "orders": {},  # order_id -> {amount, refunded, status, attributed}
}
CLICK_IDS: deque[str] = deque(maxlen=10_000)
_order_seq = itertools.count(1)


# Users stop on their own at this deadline, so no request is cut off in flight when locust's
# own timer (-t, set longer by the runner) ends the run: every 302 the server sent is tallied.
RUN_SECONDS = float(os.environ.get("LOCUST_RUN_SECONDS", "0"))
_deadline = float("inf")


@events.test_start.add_listener
def _start_clock(environment: Any, **kw: Any) -> None:
    global _deadline
    if RUN_SECONDS > 0:
        _deadline = time.monotonic() + RUN_SECONDS


def _check_deadline() -> None:
    if time.monotonic() >= _deadline:
        raise StopUser()


@events.quitting.add_listener
def _write_tally(environment: Any, **kw: Any) -> None:
    path = os.environ.get("LOCUST_TALLY")
    if path:
        Path(path).write_text(json.dumps(TALLY, indent=1, default=str))


class Follower(HttpUser):
    """A follower tapping a bio link or a story link."""

    weight = 20
    wait_time = between(0.05, 0.3)

    def on_start(self) -> None:
        self.rng = random.Random()

    @task
    def click(self) -> None:
        _check_deadline()
        link = pick_link(self.rng)
        ua, bot = pick_user_agent(self.rng)
        headers = {"User-Agent": ua, "Accept-Language": "en-US,en;q=0.9"}
        referer = self.rng.choice(REFERERS)
        if referer:
            headers["Referer"] = referer
        params = {"utm_source": self.rng.choice(["instagram", "tiktok", "youtube"]), "utm_medium": "social"}
        method = "GET"
        roll = self.rng.random()
        if roll < 0.01:  # link checkers send HEAD; the server counts it as a bot, whatever the user agent
            method, bot = "HEAD", True
        elif roll < 0.015:  # browsers prefetching a link the user has not opened yet
            headers["Sec-Purpose"] = "prefetch"
            bot = True
        with self.client.request(
            method,
            f"/{link['code']}",
            params=params,
            headers=headers,
            allow_redirects=False,
            name="/[code]",
            catch_response=True,
        ) as r:
            if r.status_code != 302:
                TALLY["redirect_other"] += 1
                r.failure(f"expected 302, got {r.status_code}")
                return
            location = r.headers.get("Location", "")
            click_id = parse_qs(urlsplit(location).query).get("click_id", [""])[0]
            if not click_id:
                r.failure(f"no click_id in Location {location!r}")
                return
            r.success()
        if bot:
            TALLY["bot_302"] += 1
            return
        TALLY["human_302"] += 1
        if self.rng.random() < CONVERSION_SHARE:
            CLICK_IDS.append(click_id)


class Store(HttpUser):
    """An e-commerce store firing signed server-to-server postbacks."""

    weight = 1
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.rng = random.Random()
        self.store = self.rng.choice(SEED["stores"])
        self.accepted: list[str] = []

    def post(self, payload: dict[str, Any], expect_duplicate: bool = False) -> dict[str, Any] | None:
        raw = json.dumps(payload, separators=(",", ":")).encode()
        t = int(time.time())
        mac = hmac.new(self.store["secret"].encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Store-Id": self.store["id"], "X-Signature": f"t={t},v1={mac}"}
        with self.client.post(
            "/api/v1/conversions", data=raw, headers=headers, name="/api/v1/conversions", catch_response=True
        ) as r:
            if r.status_code != 202:
                r.failure(f"expected 202, got {r.status_code}: {r.text[:200]}")
                return None
            answer: dict[str, Any] = r.json()
            if answer.get("duplicate") != expect_duplicate:
                r.failure(f"duplicate={answer.get('duplicate')}, expected {expect_duplicate}")
                return None
            r.success()
        return answer

    def new_order(self, **attribution: str) -> None:
        order_id = f"ord-{os.getpid()}-{next(_order_seq)}-{self.rng.randrange(10**6)}"
        amount = Decimal(self.rng.randrange(990, 25000)) / 100
        status = "pending" if self.rng.random() < 0.1 else "approved"
        payload = {"order_id": order_id, "amount": str(amount), "currency": "USD", "status": status, **attribution}
        answer = self.post(payload)
        if answer is None:
            return
        TALLY["postbacks_accepted"] += 1
        TALLY["orders"][order_id] = {
            "amount": str(amount),
            "refunded": "0",
            "status": answer["status"],
            "attributed": bool(answer["attributed"]),
            "expected_attribution": "click"
            if "click_id" in attribution
            else ("coupon" if "coupon_code" in attribution else None),
            "attribution": answer["attribution"],
        }
        self.accepted.append(order_id)
        # The store's HTTP client retries now and then: a duplicate, nothing changes.
        if self.rng.random() < 0.05 and self.post(payload, expect_duplicate=True) is not None:
            TALLY["duplicates"] += 1

    @task(30)
    def click_conversion(self) -> None:
        _check_deadline()
        if not CLICK_IDS:
            return
        self.new_order(click_id=CLICK_IDS.popleft())

    @task(6)
    def coupon_conversion(self) -> None:
        _check_deadline()
        coupon = pick_link(self.rng).get("coupon_code")
        if coupon:
            self.new_order(coupon_code=coupon)

    @task(1)
    def unattributed_conversion(self) -> None:
        _check_deadline()
        self.new_order()

    @task(3)
    def refund(self) -> None:
        _check_deadline()
        candidates = [
            o
            for o in self.accepted
            if TALLY["orders"][o]["status"] in ("approved", "pending") and TALLY["orders"][o]["refunded"] == "0"
        ]
        if not candidates:
            return
        order_id = self.rng.choice(candidates)
        order = TALLY["orders"][order_id]
        amount = Decimal(order["amount"])
        partial = self.rng.random() < 0.5 and order["status"] == "approved"
        refunded = (amount / 4).quantize(Decimal("0.01")) if partial else amount
        answer = self.post({"order_id": order_id, "amount": str(refunded), "currency": "USD", "status": "refunded"})
        if answer is None:
            return
        TALLY["postbacks_accepted"] += 1
        order["refunded"] = str(refunded)
        order["status"] = answer["status"]


class Brand(HttpUser):
    """A brand manager refreshing the dashboard's reports."""

    weight = 1
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.rng = random.Random()
        today = datetime.now(UTC).date()
        self.range = {"from": str(today - timedelta(days=29)), "to": str(today)}

    @task
    def report(self) -> None:
        _check_deadline()
        group_by = self.rng.choice(["influencer", "campaign", "day", "link", "influencer,day", "country", "device"])
        self.client.get(
            "/api/v1/reports",
            params={**self.range, "group_by": group_by},
            headers={"Authorization": f"Bearer {SEED['api_key']}"},
            name="/api/v1/reports",
        )
