"""Report latency on chDB over the DESIGN.md data set (10M clicks, 100k conversions, 90 days).

Generates the data once into a chDB directory (``loadtests.gen_data``; reused on later runs),
copies the clicks behind click-attributed conversions and evaluates the quality flags once
(timed: the first report after a data load pays them), then times N reports per case through
the route's steps: ``tracker.quality.sync`` (a fingerprint query when nothing changed),
``tracker.reports.run.run_report`` (the two side by side: ``run_beside_sync``, as the route runs
them) and the JSON answer, i.e. ``GET /api/v1/reports`` minus the HTTP framing. Goal (DESIGN.md
wave 2): every grouping p95 <= 100 ms for 30 days.

    python -m loadtests.bench_reports [--json] [--n 50] [--path /tmp/tracker-bench-reports]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from loadtests import gen_data
from loadtests.stats import percentile
from tracker.core.clickid import ClickIds
from tracker.quality import facts
from tracker.quality.sync import Sync
from tracker.reports import run as reports
from tracker.reports.params import GROUP_KEYS, ReportParams
from tracker.storage.clickhouse import ClickHouse

GOAL_MS = 100.0

# (name, group_by, tz, counts toward the goal): every grouping, then other zones.
CASES: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("totals", (), "UTC", True),
    *((key, (key,), "UTC", True) for key in GROUP_KEYS),
    ("influencer,day", ("influencer", "day"), "UTC", True),
    ("influencer America/New_York", ("influencer",), "America/New_York", True),
    ("day America/New_York", ("day",), "America/New_York", True),
    ("hour America/New_York", ("hour",), "America/New_York", True),
    ("day Asia/Kolkata", ("day",), "Asia/Kolkata", True),
    ("country Asia/Tokyo", ("country",), "Asia/Tokyo", True),
]


def ensure_data(path: str, shape: gen_data.Shape) -> tuple[Any, dict[str, float] | None]:
    ch = gen_data.open_clickhouse(path)
    have = ch.query("SELECT count() FROM clicks WHERE brand_id = {b:String}", {"b": shape.brand_id})[0][0]
    if have == shape.clicks:
        return ch, None
    for table in ("clicks", "report_daily_uniques", "conversions", "fees",
                  "influencers", "campaigns", "links", "conversion_clicks", "conversion_flags"):
        ch.command(f"TRUNCATE TABLE {table}")
    t = time.perf_counter()
    took = gen_data.generate(ch, shape)
    took["total"] = time.perf_counter() - t
    return ch, took


GOALS = {name for name, _, _, goal in CASES if goal}


def answer(ch: Any, sync: Sync, brand: dict[str, Any], params: ReportParams) -> reports.Report:
    """What the route does (``tracker.reports.routes``) but the hold, which only follows a change."""
    report, _ = reports.run_beside_sync(ch, sync, brand, params, 400)
    return report if report is not None else reports.run_report(ch, brand, params, 400)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default="/tmp/tracker-bench-reports", help="chDB directory (reused)")
    parser.add_argument("--n", type=int, default=20, help="reports per goal case")
    parser.add_argument("--n-extra", type=int, default=10, help="reports per other case (raw ones take seconds)")
    parser.add_argument("--days", type=int, default=30, help="report range in days")
    parser.add_argument("--clicks", type=int, default=gen_data.Shape.clicks)
    parser.add_argument("--goal-only", action="store_true", help="run only the two goal cases")
    parser.add_argument("--case", action="append", help="run only this case (repeatable), e.g. influencer,day")
    parser.add_argument("--sequential", action="store_true",
                        help="each report's statements one after the other, the sync first (no ClickHouse pool)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()

    shape = gen_data.Shape(clicks=args.clicks)
    ch, generated = ensure_data(args.path, shape)
    if args.sequential:  # without an opener, ClickHouse.submit runs each call in place
        ch = ClickHouse(ch.client, ch.database)
    brand = {"id": shape.brand_id, "name": "Bench", "currency": shape.currency}
    date_to = shape.end - timedelta(days=1)
    date_from = shape.end - timedelta(days=args.days)

    # Once after a load: the clicks behind click-attributed conversions, then the flags.
    t = time.perf_counter()
    missing = facts.fill(ch, ClickIds("bench-secret-key-0123456789abcdef"), shape.brand_id).missing
    fill_s = time.perf_counter() - t
    sync = Sync("bench-secret-key-0123456789abcdef")
    t = time.perf_counter()
    sync(ch, shape.brand_id)
    evaluate_s = time.perf_counter() - t

    # Cold: the first report after the unique-click cache was emptied recomputes every day.
    ch.command("TRUNCATE TABLE report_daily_uniques")
    t = time.perf_counter()
    reports.run_report(ch, brand, ReportParams(date_from, date_to, ("influencer",), "UTC"), 400)
    cold_ms = (time.perf_counter() - t) * 1000

    results: dict[str, dict[str, Any]] = {}
    for name, group_by, tz, goal in CASES:
        if (args.goal_only and not goal) or (args.case and name not in args.case):
            continue
        n = args.n if goal else args.n_extra
        params = ReportParams(date_from, date_to, group_by, tz)
        for _ in range(3):  # warm-up
            answer(ch, sync, brand, params).json_bytes()
        samples: list[float] = []
        cpu: list[float] = []
        rows = 0
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            report = answer(ch, sync, brand, params)
            report.json_bytes()
            samples.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)  # all threads of this process, chDB's too
            rows = len(report.rows)
        results[name] = {
            "group_by": ",".join(group_by),
            "tz": tz,
            "source": report.source,
            "rows": rows,
            "clicks_in_range": report.totals["clicks"] + report.totals["bot_clicks"],
            "n": n,
            "p50_ms": round(percentile(samples, 0.50), 1),
            "p95_ms": round(percentile(samples, 0.95), 1),
            "p99_ms": round(percentile(samples, 0.99), 1),
            "mean_ms": round(statistics.fmean(samples), 1),
            "cpu_p50_ms": round(percentile(cpu, 0.50), 1),
        }
    goal_met = all(r["p95_ms"] <= GOAL_MS for name, r in results.items() if name in GOALS)
    doc = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "sequential": args.sequential,
        "data": {
            "clicks": shape.clicks,
            "conversions": shape.conversions,
            "influencers": shape.influencers,
            "campaigns": shape.campaigns,
            "links": shape.links,
            "days": shape.days,
        },
        "range": {"from": date_from.isoformat(), "to": date_to.isoformat()},
        "generated_seconds": {k: round(v, 2) for k, v in generated.items()} if generated else None,
        "cold_first_report_ms": round(cold_ms, 1),
        "facts_fill_seconds": round(fill_s, 2),
        "facts_missing": missing,
        "flags_evaluate_seconds": round(evaluate_s, 2),
        "results": results,
        "goal_p95_ms": GOAL_MS,
        "goal_met": goal_met,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    if generated:
        print("generated: " + ", ".join(f"{k} {v:.1f} s" for k, v in generated.items()))
    print(f"{doc['when']}  {doc['machine']}  load {doc['load_average']}"
          f"{'  sequential (no pool)' if args.sequential else ''}")
    print(f"range {date_from}..{date_to}, {args.n} reports per goal case, {args.n_extra} per other case")
    print(f"first report after emptying the unique-click cache: {cold_ms:.0f} ms")
    print(f"once after the load: click facts copied in {fill_s:.1f} s ({missing} missing), "
          f"flags evaluated in {evaluate_s:.1f} s")
    print(f"{'case':30s} {'source':7s} {'rows':>5s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'cpu p50':>8s}  ms")
    for name, r in results.items():
        print(
            f"{name:30s} {r['source']:7s} {r['rows']:5d} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f}"
            f" {r['cpu_p50_ms']:8.1f}"
        )
    print(f"goal p95 <= {GOAL_MS:.0f} ms, every grouping: {'met' if goal_met else 'NOT met'}")


if __name__ == "__main__":
    main()
