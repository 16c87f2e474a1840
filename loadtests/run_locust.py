"""Run the traffic mix headless against an embedded `tracker serve`, then reconcile.

    /work/venv/bin/python -m loadtests.run_locust --seconds 60 [--users 100]

Starts `tracker serve` on a temp data dir and a free port, seeds one brand with
campaigns, influencers (one link and coupon each) and stores through the API,
runs `locust --headless` for a bounded time, waits for ingest, then checks the
reports API against what locust sent and the server accepted:
- human clicks in the report == human 302s sent, bot clicks == bot 302s;
- conversions == accepted, still-counting attributed orders (refunds applied),
  unattributed conversions likewise, revenue and unattributed revenue to the cent;
- every click-id order was attributed by click, every coupon order by coupon;
and prints p50/p95/p99 per endpoint and the failure count. Exits non-zero on any
failure or mismatch.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from loadtests.serve import EmbeddedServe, seed

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def run_locust(base: str, work: Path, seconds: int, users: int, seed_file: Path, tally_file: Path) -> Path:
    prefix = work / "locust"
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(max(1, users // 5)),
        "-t",  # users stop themselves after `seconds` (LOCUST_RUN_SECONDS); this is the backstop
        f"{seconds + 10}s",
        "--host",
        base,
        "--csv",
        str(prefix),
        "--only-summary",
        "--stop-timeout",
        "10",
        "--loglevel",
        "WARNING",
    ]
    root = str(LOCUSTFILE.parent.parent)  # the locustfile imports loadtests.traffic
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = {
        **os.environ,
        "LOCUST_SEED": str(seed_file),
        "LOCUST_TALLY": str(tally_file),
        "LOCUST_RUN_SECONDS": str(seconds),
        "PYTHONPATH": pythonpath,
    }
    # locust exits 1 when any request failed; the reconciliation below reports that itself.
    with (work / "locust.log").open("wb") as out:
        subprocess.run(cmd, env=env, timeout=seconds + 120, check=False, stdout=out, stderr=subprocess.STDOUT)
    return prefix.with_name("locust_stats.csv")


def endpoint_stats(stats_csv: Path) -> list[dict[str, Any]]:
    rows = []
    with stats_csv.open() as fh:
        for row in csv.DictReader(fh):
            rows.append(
                {
                    "name": f"{row['Type']} {row['Name']}".strip() if row["Type"] else row["Name"],
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "p50_ms": float(row["50%"] or 0),
                    "p95_ms": float(row["95%"] or 0),
                    "p99_ms": float(row["99%"] or 0),
                    "rps": float(row["Requests/s"] or 0),
                }
            )
    return rows


def expected_from(tally: dict[str, Any]) -> dict[str, Any]:
    exp: dict[str, Any] = {
        "clicks": tally["human_302"],
        "bot_clicks": tally["bot_302"],
        "conversions": 0,
        "revenue": Decimal(0),
        "unattributed_conversions": 0,
        "unattributed_revenue": Decimal(0),
    }
    wrong_attribution = []
    for order_id, o in tally["orders"].items():
        if o["attribution"] != o["expected_attribution"]:
            wrong_attribution.append((order_id, o["expected_attribution"], o["attribution"]))
        if o["status"] not in ("approved", "pending"):
            continue
        net = Decimal(o["amount"]) - Decimal(o["refunded"])
        if o["attributed"]:
            exp["conversions"] += 1
            exp["revenue"] += net
        else:
            exp["unattributed_conversions"] += 1
            exp["unattributed_revenue"] += net
    exp["wrong_attribution"] = wrong_attribution
    return exp


def fetch_totals(base: str, api_key: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    r = httpx.get(
        f"{base}/api/v1/reports",
        params={"from": str(today - timedelta(days=1)), "to": str(today + timedelta(days=1)), "group_by": "influencer"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    if r.status_code != 200:
        raise RuntimeError(f"GET /api/v1/reports answered {r.status_code}: {r.text[:300]}")
    data: dict[str, Any] = r.json()
    return data


def wait_for_ingest(base: str, api_key: str, expected: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Poll the report until clicks and conversions reach what was sent (or the time is up)."""
    deadline = time.monotonic() + timeout
    report = fetch_totals(base, api_key)
    while time.monotonic() < deadline:
        t = report["totals"]
        if (
            t["clicks"] + t["bot_clicks"] >= expected["clicks"] + expected["bot_clicks"]
            and t["conversions"] + t["unattributed_conversions"]
            >= expected["conversions"] + expected["unattributed_conversions"]
        ):
            time.sleep(1.5)  # and one more ingest cycle, so late refunds land too
            return fetch_totals(base, api_key)
        time.sleep(0.5)
        report = fetch_totals(base, api_key)
    return report


def server_302s(base: str) -> int | None:
    """The server's own count of 302s sent (tracker_redirects_total), from /metrics."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith('tracker_redirects_total{status="302"} '):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def reconcile(report: dict[str, Any], expected: dict[str, Any], served: int | None = None) -> list[str]:
    t = report["totals"]
    problems = []
    sent = expected["clicks"] + expected["bot_clicks"]
    if served is not None and served != sent:
        problems.append(f"server sent {served} 302s, locust received {sent}")
    for key in ("clicks", "bot_clicks", "conversions", "unattributed_conversions"):
        if int(t[key]) != expected[key]:
            problems.append(f"{key}: report {t[key]}, sent/accepted {expected[key]}")
    for key in ("revenue", "unattributed_revenue"):
        if Decimal(str(t[key])) != expected[key]:
            problems.append(f"{key}: report {t[key]}, accepted {expected[key]}")
    row_clicks = sum(int(r["clicks"]) for r in report["rows"])
    if row_clicks != int(t["clicks"]):
        problems.append(f"rows add up to {row_clicks} clicks, totals say {t['clicks']}")
    for order_id, want, got in expected["wrong_attribution"][:5]:
        problems.append(f"order {order_id}: attribution {got!r}, expected {want!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.run_locust", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--users", type=int, default=100, help="Simulated users (followers, stores, brands 20:1:1).")
    p.add_argument("--influencers", type=int, default=40)
    p.add_argument("--ingest-timeout", type=float, default=60.0)
    p.add_argument("--keep", action="store_true", help="Keep the work directory (server log, locust CSVs).")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tracker-locust-"))
    # The traffic mix sends more postbacks per store than the default per-store limit (600 a minute)
    # allows; the limit has its own tests, here it would only turn accepted orders into 429s.
    serve = EmbeddedServe(
        work / "data", env={"TRACKER_LOG_LEVEL": "WARNING", "TRACKER_POSTBACK_RATE_LIMIT": "1000000"}
    )
    code = 1
    try:
        serve.start()
        s = seed(serve.base, serve.admin_token, influencers=args.influencers, campaigns=3, stores=3)
        seed_file = work / "seed.json"
        seed_file.write_text(
            json.dumps(
                {
                    "api_key": s.brand["api_key"],
                    "links": [{"code": link["code"], "coupon_code": link["coupon_code"]} for link in s.links],
                    "stores": [{"id": st["id"], "secret": st["secret"]} for st in s.stores],
                }
            )
        )
        tally_file = work / "tally.json"
        print(f"locust: {args.users} users for {args.seconds} s against {serve.base} ...", flush=True)
        stats_csv = run_locust(serve.base, work, args.seconds, args.users, seed_file, tally_file)
        tally = json.loads(tally_file.read_text())
        expected = expected_from(tally)
        served = server_302s(serve.base)
        report = wait_for_ingest(serve.base, s.brand["api_key"], expected, args.ingest_timeout)
        problems = reconcile(report, expected, served)
        stats = endpoint_stats(stats_csv)

        print(f"\n{'endpoint':<32} {'requests':>9} {'fail':>5} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
        for row in stats:
            print(
                f"{row['name']:<32} {row['requests']:>9} {row['failures']:>5} {row['rps']:>8.1f} "
                f"{row['p50_ms']:>7.0f} {row['p95_ms']:>7.0f} {row['p99_ms']:>7.0f}"
            )
        failures = next((r["failures"] for r in stats if r["name"] == "Aggregated"), 0)
        t = report["totals"]
        print(
            f"\nsent: {tally['human_302']} human 302s, {tally['bot_302']} bot 302s (server counted {served}), "
            f"{tally['postbacks_accepted']} postbacks accepted ({len(tally['orders'])} orders, "
            f"{tally['duplicates']} duplicates answered as such)"
        )
        print(
            f"report: {t['clicks']} clicks, {t['bot_clicks']} bot clicks, {t['conversions']} conversions "
            f"({t['revenue']} revenue), {t['unattributed_conversions']} unattributed ({t['unattributed_revenue']})"
        )
        print(
            f"expected: {expected['conversions']} conversions ({expected['revenue']}), "
            f"{expected['unattributed_conversions']} unattributed ({expected['unattributed_revenue']})"
        )
        print(f"failures: {failures}")
        for problem in problems:
            print(f"MISMATCH {problem}")
        if failures == 0 and not problems:
            print("reconciled: OK")
            code = 0
    except Exception as exc:
        print(f"run_locust: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        serve.stop()
        if args.keep or code != 0:
            print(f"work directory kept: {work} (server log {serve.log_path})")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
