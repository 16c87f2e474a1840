"""The harness's own arithmetic: wrk output parsing, the locust tally → expected report, reconciliation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from loadtests.results_table import render, table
from loadtests.run_locust import expected_from, reconcile
from loadtests.traffic import pick_user_agent, zipf_weights
from loadtests.wrk import parse_wrk

WRK = """Running 10s test @ http://127.0.0.1:8000/abc
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    1.02ms  40.00ms   90.00%
    Req/Sec    27.00k     1.00k   30.00k    70.00%
  Latency Distribution
     50%  {p50}
     75%    2.50ms
     90%    3.10ms
     99%  {p99}
  270123 requests in 10.00s, 40.00MB read
{extra}Requests/sec:  27012.30
Transfer/sec:      4.00MB
"""


@pytest.mark.parametrize(
    ("p50", "p99", "extra", "want_p50", "want_p99", "non_3xx", "socket_errors"),
    [
        ("2.10ms", "5.00ms", "", 2.1, 5.0, 0, 0),
        ("850.00us", "1.20s", "", 0.85, 1200.0, 0, 0),
        ("1.00ms", "2.00m", "  Non-2xx or 3xx responses: 12\n", 1.0, 120_000.0, 12, 0),
        ("1.00ms", "9.99ms", "  Socket errors: connect 1, read 2, write 3, timeout 4\n", 1.0, 9.99, 0, 10),
    ],
)
def test_parse_wrk(
    p50: str, p99: str, extra: str, want_p50: float, want_p99: float, non_3xx: int, socket_errors: int
) -> None:
    r = parse_wrk(WRK.format(p50=p50, p99=p99, extra=extra))
    assert r["rps"] == 27012
    assert r["requests"] == 270123
    assert r["p50_ms"] == want_p50
    assert r["p99_ms"] == want_p99
    assert r["non_3xx"] == non_3xx
    assert r["socket_errors"] == socket_errors


def test_parse_wrk_without_a_result_raises() -> None:
    with pytest.raises(RuntimeError):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def _order(
    amount: str, refunded: str, status: str, attributed: bool, want: str | None, got: str | None
) -> dict[str, Any]:
    return {"amount": amount, "refunded": refunded, "status": status, "attributed": attributed,
            "expected_attribution": want, "attribution": got}


TALLY: dict[str, Any] = {
    "human_302": 100,
    "bot_302": 7,
    "orders": {
        "a": _order("10.00", "0", "approved", True, "click", "click"),
        "b": _order("20.00", "5.00", "approved", True, "coupon", "coupon"),  # partial refund still counts
        "c": _order("30.00", "30.00", "refunded", True, "click", "click"),  # full refund does not
        "d": _order("12.50", "0", "pending", True, "click", "click"),  # pending counts
        "e": _order("7.25", "0", "approved", False, None, None),
    },
}


def test_expected_from_tally_applies_refunds_and_statuses() -> None:
    exp = expected_from(TALLY)
    assert exp["clicks"] == 100
    assert exp["bot_clicks"] == 7
    assert exp["conversions"] == 3
    assert exp["revenue"] == Decimal("37.50")
    assert exp["unattributed_conversions"] == 1
    assert exp["unattributed_revenue"] == Decimal("7.25")
    assert exp["wrong_attribution"] == []


def _report(**over: Any) -> dict[str, Any]:
    totals = {"clicks": 100, "bot_clicks": 7, "conversions": 3, "revenue": "37.50",
              "unattributed_conversions": 1, "unattributed_revenue": "7.25", **over}
    return {"rows": [{"clicks": 60}, {"clicks": 40}], "totals": totals}


@pytest.mark.parametrize(
    ("over", "problem"),
    [
        ({}, None),
        ({"clicks": 99}, "clicks"),
        ({"bot_clicks": 8}, "bot_clicks"),
        ({"conversions": 4}, "conversions"),
        ({"revenue": "37.51"}, "revenue"),
        ({"unattributed_revenue": "7.2"}, "unattributed_revenue"),
    ],
)
def test_reconcile_names_every_mismatch(over: dict[str, Any], problem: str | None) -> None:
    problems = reconcile(_report(**over), expected_from(TALLY))
    if problem is None:
        assert problems == []
    else:
        assert problems and problems[0].startswith(problem)


def test_reconcile_catches_wrong_attribution_and_rows_that_do_not_add_up() -> None:
    tally = {**TALLY, "orders": {**TALLY["orders"], "f": _order("1.00", "0", "approved", True, "click", "coupon")}}
    report = _report(conversions=4, revenue="38.50")
    report["rows"] = [{"clicks": 10}]
    problems = reconcile(report, expected_from(tally))
    assert any("rows add up to 10" in p for p in problems)
    assert any("order f" in p for p in problems)


def test_zipf_weights_are_skewed_and_the_agent_mix_has_5_to_10_percent_bots() -> None:
    cum = zipf_weights(40)
    first, total = cum[0], cum[-1]
    assert first / total > 0.2  # the top link draws a fifth of the clicks or more
    import random

    rng = random.Random(7)
    bots = sum(pick_user_agent(rng)[1] for _ in range(20_000))
    assert 0.05 <= bots / 20_000 <= 0.10


def test_table_marks_missed_targets() -> None:
    results = {
        "tracker": {"rps": 15_000, "p99_ms": 9.0, "p50_ms": 2.0, "non_3xx": 0, "socket_errors": 0,
                    "redirects_counted": 5, "clicks_logged": 5, "rss_idle_mb": 1.0, "rss_peak_mb": 2.0},
        "bare_starlette": {"rps": 25_000, "p99_ms": 4.0},
    }
    text = render(table(results))
    assert "| redirect req/s, tracker serve" in text
    lines = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert "MISSED" in lines["redirect req/s, tracker serve"]
    assert lines["redirect p99, tracker serve"].rstrip(" |").endswith("ok")
    assert "0.60" in lines["tracker / bare Starlette"]


def test_reconcile_compares_the_servers_302_count() -> None:
    assert reconcile(_report(), expected_from(TALLY), served=107) == []
    problems = reconcile(_report(), expected_from(TALLY), served=108)
    assert problems == ["server sent 108 302s, locust received 107"]
