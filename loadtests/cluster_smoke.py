"""Smoke test of tracker on a ClickHouse cluster: docker-compose.cluster.yml, end to end.

NOT RUN on the development machine: it has no Docker engine, so this script has never
been executed there. What was executed there is the schema's test in chDB
(tests/storage/test_cluster.py). Run this where Docker (with the compose plugin) exists:

    python -m loadtests.cluster_smoke            # up, check, down -v
    python -m loadtests.cluster_smoke --keep     # leave the stack running afterwards

It brings up 2 shards x 2 replicas of clickhouse-server with three ClickHouse Keeper
nodes, Redis, `tracker migrate --cluster tracker_cluster`, `tracker serve` and `tracker
ingest`; then, through the HTTP API only, creates brands until both shards hold one,
each with a campaign, an influencer, a link and a store; clicks every link, posts signed
postbacks (one replayed, one partly and one fully refunded); waits for ingest; and checks:

- migrate said it applied every migration to the cluster, and a second run is a no-op;
- each brand's report: clicks = 302s sent, conversions and revenue = what was accepted;
- in ClickHouse: every brand's clicks sit on one shard, both shards hold clicks, and the
  two replicas of each shard hold the same rows, which add up to the clicks sent.

Exit 0 when every check holds, 1 otherwise (each failed check printed).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from loadtests.serve import Seed, seed

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "tracker-cluster-smoke"
BASE = "http://127.0.0.1:8000"
NODES = ("ch-s1-r1", "ch-s1-r2", "ch-s2-r1", "ch-s2-r2")
BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)


class Stack:
    def __init__(self) -> None:
        self.env = {
            **os.environ,
            "TRACKER_SECRET_KEY": secrets.token_urlsafe(48),
            "TRACKER_ADMIN_TOKEN": "tka_" + secrets.token_urlsafe(24),
            "CLICKHOUSE_PASSWORD": os.environ.get("CLICKHOUSE_PASSWORD", "tracker"),
        }
        self.compose = ["docker", "compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.cluster.yml")]

    def run(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run([*self.compose, *args], env=self.env, cwd=ROOT, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker compose {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout

    def sql(self, node: str, query: str) -> list[list[str]]:
        out = self.run("exec", "-T", node, "clickhouse-client", "--password", self.env["CLICKHOUSE_PASSWORD"],
                       "--query", query)
        return [line.split("\t") for line in out.splitlines() if line]

    def up(self, timeout: float = 600) -> None:
        self.run("up", "-d", "--build")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{BASE}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise RuntimeError(f"tracker was not ready within {timeout:.0f} s:\n{self.run('logs', '--tail', '50')}")

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", check=False)


def post_conversion(store: dict[str, Any], payload: dict[str, str]) -> dict[str, Any]:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    t = int(time.time())
    mac = hmac.new(store["secret"].encode(), f"{t}.".encode() + raw, hashlib.sha256).hexdigest()
    r = httpx.post(
        f"{BASE}/api/v1/conversions", content=raw, timeout=30,
        headers={"Content-Type": "application/json", "X-Store-Id": store["id"], "X-Signature": f"t={t},v1={mac}"},
    )
    if r.status_code != 202:
        raise RuntimeError(f"postback {payload} answered {r.status_code}: {r.text[:300]}")
    answer: dict[str, Any] = r.json()
    return answer


def traffic(s: Seed, clicks: int) -> dict[str, Any]:
    """Clicks on the brand's link and postbacks for three of them; returns what the report must show."""
    code = s.links[0]["code"]
    click_ids = []
    with httpx.Client(base_url=BASE, timeout=30, headers={"User-Agent": BROWSER}) as http:
        for _ in range(clicks):
            r = http.get(f"/{code}", follow_redirects=False)
            if r.status_code != 302:
                raise RuntimeError(f"GET /{code} answered {r.status_code}, not 302")
            click_ids.append(parse_qs(urlsplit(r.headers["location"]).query)["click_id"][0])
    store, orders, payloads = s.stores[0], {}, {}
    for order_id, amount, click_id in (("A", "100.00", click_ids[0]), ("B", "50.00", click_ids[1]),
                                       ("C", "25.50", click_ids[2])):
        payloads[order_id] = {"order_id": f"{s.brand['id']}-{order_id}", "amount": amount, "currency": "USD",
                              "status": "approved", "click_id": click_id}
        answer = post_conversion(store, payloads[order_id])
        orders[order_id] = {"amount": Decimal(amount), "refunded": Decimal(0), "status": answer["status"]}
    if not post_conversion(store, payloads["A"]).get("duplicate"):  # the store's client retried
        raise RuntimeError("a replayed postback was not answered as a duplicate")
    for order_id, refunded in (("B", "10.00"), ("C", "25.50")):
        refund = {**payloads[order_id], "amount": refunded, "status": "refunded"}
        del refund["click_id"]
        answer = post_conversion(store, refund)
        orders[order_id].update(refunded=Decimal(refunded), status=answer["status"])
    counted = [o for o in orders.values() if o["status"] in ("approved", "pending")]
    return {"clicks": clicks, "conversions": len(counted), "revenue": sum(o["amount"] - o["refunded"] for o in counted)}


def report_totals(api_key: str) -> dict[str, Any]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    r = httpx.get(f"{BASE}/api/v1/reports", params={"from": today, "to": today, "group_by": "influencer"},
                  headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    r.raise_for_status()
    totals: dict[str, Any] = r.json()["totals"]
    return totals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="Leave the stack running.")
    p.add_argument("--clicks", type=int, default=40, help="Clicks per brand (at least 3).")
    args = p.parse_args(argv)
    stack, problems = Stack(), []
    try:
        stack.up()
        migrated = stack.run("logs", "--no-log-prefix", "migrate")
        if "(cluster tracker_cluster)" not in migrated or "Applied" not in migrated:
            problems.append(f"migrate did not report applying the migrations to the cluster: {migrated[-500:]}")
        again = stack.run("run", "--rm", "--no-deps", "migrate")
        if "up to date" not in again:
            problems.append(f"a second migrate was not a no-op: {again[-500:]}")

        seeds: list[Seed] = []
        shards: set[str] = set()
        while len(shards) < 2 and len(seeds) < 12:  # cityHash64 of random ids: two shards within a few brands
            s = seed(BASE, stack.env["TRACKER_ADMIN_TOKEN"], name=f"Smoke {len(seeds)}")
            seeds.append(s)
            shards |= {row[0] for row in stack.sql(
                "ch-s1-r1", f"SELECT _shard_num FROM tracker.brands WHERE id = '{s.brand['id']}'")}
        expected = {s.brand["id"]: traffic(s, args.clicks) for s in seeds}

        deadline = time.monotonic() + 120
        for s in seeds:
            want, got = expected[s.brand["id"]], report_totals(s.brand["api_key"])
            while (got["clicks"], got["conversions"]) != (want["clicks"], want["conversions"]):
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
                got = report_totals(s.brand["api_key"])
            for key in ("clicks", "conversions"):
                if got[key] != want[key]:
                    problems.append(f"brand {s.brand['id']}: report {key} {got[key]}, sent {want[key]}")
            if Decimal(got["revenue"]) != want["revenue"]:
                problems.append(f"brand {s.brand['id']}: report revenue {got['revenue']}, accepted {want['revenue']}")

        per_brand = stack.sql(
            "ch-s1-r1", "SELECT brand_id, uniqExact(_shard_num) FROM tracker.clicks GROUP BY brand_id"
        )
        problems += [f"brand {b}: clicks on {n} shards" for b, n in per_brand if n != "1"]
        counts = {}
        for node in NODES:
            stack.sql(node, "SYSTEM SYNC REPLICA tracker.clicks_local")
            counts[node] = int(stack.sql(node, "SELECT count() FROM tracker.clicks_local FINAL")[0][0])
        if counts["ch-s1-r1"] != counts["ch-s1-r2"] or counts["ch-s2-r1"] != counts["ch-s2-r2"]:
            problems.append(f"replicas of a shard disagree: {counts}")
        if not (counts["ch-s1-r1"] and counts["ch-s2-r1"]):
            problems.append(f"one shard holds no clicks: {counts}")
        if counts["ch-s1-r1"] + counts["ch-s2-r1"] != args.clicks * len(seeds):
            problems.append(f"shards hold {counts} clicks, {args.clicks * len(seeds)} were sent")
        print(f"{len(seeds)} brands over shards {sorted(shards)}; clicks per node {counts}")
    except Exception as exc:  # a step that could not run is a failed check too
        problems.append(f"{type(exc).__name__}: {exc}")
    finally:
        if args.keep:
            print(f"stack left running: docker compose -p {PROJECT} -f docker-compose.cluster.yml down -v")
        else:
            stack.down()
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    print("cluster smoke: OK" if not problems else f"cluster smoke: {len(problems)} check(s) failed")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
