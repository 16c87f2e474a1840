"""The harness's table: each measure of ``loadtests.bench`` beside DESIGN.md's target for it."""

from __future__ import annotations

from typing import Any

TARGETS = {
    "redirect_rps": 20_000,
    "redirect_p99_ms": 15.0,
    "redirect_vs_bare": 0.5,
    "ingest_rows_per_s": 150_000,
    "report_p95_ms": 150.0,
}


def _pick(data: dict[str, Any] | str, *names: str) -> float | None:
    """The first of ``names`` found in a module's JSON (top level or one level down)."""
    if not isinstance(data, dict):
        return None
    scopes = [data, *(v for v in data.values() if isinstance(v, dict))]
    for scope in scopes:
        for name in names:
            value = scope.get(name)
            if isinstance(value, int | float):
                return float(value)
    return None


def _fmt(value: float | int | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and value < 100:
        return f"{value:.2f}{unit}"
    return f"{value:,.0f}{unit}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISSED")


def table(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []
    t = results.get("tracker")
    bare = results.get("bare_starlette")
    nginx = results.get("nginx")
    if isinstance(t, dict):
        rows.append(("redirect req/s, tracker serve", _fmt(t["rps"]), f">= {TARGETS['redirect_rps']:,}",
                     _verdict(t["rps"] >= TARGETS["redirect_rps"])))
        rows.append(("redirect p99, tracker serve", _fmt(t.get("p99_ms"), " ms"),
                     f"<= {TARGETS['redirect_p99_ms']} ms",
                     _verdict(t.get("p99_ms", 1e9) <= TARGETS["redirect_p99_ms"])))
        rows.append(("redirect p50, tracker serve", _fmt(t.get("p50_ms"), " ms"), "", ""))
        rows.append(("redirect non-3xx / socket errors", f"{t['non_3xx']} / {t['socket_errors']}", "0 / 0",
                     _verdict(t["non_3xx"] == 0 and t["socket_errors"] == 0)))
        rows.append(("302s sent vs clicks logged (counters)", f"{t['redirects_counted']:,} / {t['clicks_logged']:,}",
                     "equal", _verdict(t["redirects_counted"] == t["clicks_logged"])))
    if isinstance(bare, dict):
        rows.append(("redirect req/s, bare Starlette 302", _fmt(bare["rps"]), "", ""))
        rows.append(("redirect p99, bare Starlette 302", _fmt(bare.get("p99_ms"), " ms"), "", ""))
        if isinstance(t, dict) and bare["rps"]:
            ratio = t["rps"] / bare["rps"]
            results["redirect_vs_bare"] = round(ratio, 3)
            rows.append(("tracker / bare Starlette", f"{ratio:.2f}", f">= {TARGETS['redirect_vs_bare']}",
                         _verdict(ratio >= TARGETS["redirect_vs_bare"])))
    if isinstance(nginx, dict):
        nw = results.get("processes_production", 1)
        label = f"nginx return 302, {nw} worker{'s' if nw != 1 else ''}"
        rows.append((f"redirect req/s, {label}", _fmt(nginx["rps"]), "(reference)", ""))
        rows.append((f"redirect p99, {label}", _fmt(nginx.get("p99_ms"), " ms"), "", ""))
    elif nginx is None and "nginx" in results:
        rows.append(("redirect, nginx return 302", "not installed", "", ""))
    prod = results.get("production")
    if isinstance(prod, dict) and isinstance(prod.get("tracker"), dict) and isinstance(prod.get("bare"), dict):
        n = results.get("processes_production", "N")
        pt, pb = prod["tracker"], prod["bare"]
        rows.append((f"redirect req/s, tracker serve --workers {n} (production)", _fmt(pt.get("rps")),
                     f">= {TARGETS['redirect_rps']:,}", _verdict(pt.get("rps", 0) >= TARGETS["redirect_rps"])))
        rows.append((f"redirect p99, tracker serve --workers {n}", _fmt(pt.get("p99_ms"), " ms"),
                     f"<= {TARGETS['redirect_p99_ms']} ms",
                     _verdict(pt.get("p99_ms", 1e9) <= TARGETS["redirect_p99_ms"])))
        rows.append((f"redirect req/s, bare Starlette, {n} workers", _fmt(pb.get("rps")), "", ""))
        ratio = prod.get("ratio")
        if isinstance(ratio, int | float):
            rows.append((f"tracker / bare, {n} workers", f"{ratio:.2f}", f">= {TARGETS['redirect_vs_bare']}",
                         _verdict(ratio >= TARGETS["redirect_vs_bare"])))
        durable = prod.get("durability", {})
        if isinstance(durable, dict) and "ok" in durable:
            rows.append((f"302s vs stream entries, {n} workers", f"{durable.get('server_302s')} / "
                         f"{durable.get('stream_clicks_added')}", "equal", _verdict(bool(durable["ok"]))))
    elif prod is not None:
        rows.append(("redirect, production topology", str(prod)[:60], "", ""))
    if isinstance(t, dict):
        rows.append(("tracker serve RSS idle / peak (with Valkey)", f"{t['rss_idle_mb']} / {t['rss_peak_mb']} MB",
                     "", ""))
    ingest = results.get("ingest")
    if ingest is not None:
        rate = _pick(ingest, "rows_per_second", "rows_per_s", "clicks_per_s")
        rows.append(("ingest rows/s (one worker)", _fmt(rate) if rate is not None else str(ingest)[:60],
                     f">= {TARGETS['ingest_rows_per_s']:,}",
                     _verdict(None if rate is None else rate >= TARGETS["ingest_rows_per_s"])))
        fresh = ingest.get("freshness") if isinstance(ingest, dict) else None
        if isinstance(fresh, dict) and "p95_seconds" in fresh:
            rows.append(("freshness p95 / max, redirect to report", f"{fresh['p95_seconds']} / "
                         f"{fresh.get('max_seconds')} s", f"<= {fresh.get('goal_seconds', 2)} s",
                         _verdict(fresh.get("max_seconds", 1e9) <= fresh.get("goal_seconds", 2))))
    postbacks = results.get("postbacks")
    if isinstance(postbacks, dict):
        goals = {"new_orders": ">= 5,000, p99 <= 50 ms", "replays": ">= 10,000", "shopify_webhooks": ""}
        for phase, goal in goals.items():
            ph = postbacks.get(phase)
            if isinstance(ph, dict):
                rows.append((f"postbacks/s, {phase.replace('_', ' ')}", f"{_fmt(ph.get('rps'))} (p99 "
                             f"{_fmt(ph.get('p99_ms'), ' ms')})", goal, ""))
        rec = postbacks.get("reconciliation")
        if isinstance(rec, dict):
            rows.append(("postbacks reconciled with ClickHouse", str(rec.get("exact")), "exact",
                         _verdict(bool(rec.get("exact")))))
    elif postbacks is not None:
        rows.append(("postbacks", str(postbacks)[:60], "", ""))
    reports = results.get("reports")
    if reports is not None:
        cases = reports.get("results") if isinstance(reports, dict) else None
        if isinstance(cases, dict) and cases:
            data = reports.get("data", {})
            size = f"{data.get('clicks', 0) / 1e6:g}M clicks, {data.get('conversions', 0) / 1e3:g}k conversions"
            for name, case in cases.items():
                gated = case.get("group_by") == "influencer" and case.get("tz") == "UTC"
                target = f"<= {TARGETS['report_p95_ms']} ms" if gated else ""
                ok = case["p95_ms"] <= TARGETS["report_p95_ms"] if target else None
                rows.append((f"report p95, {name} ({size})", _fmt(float(case["p95_ms"]), " ms"), target,
                             _verdict(ok)))
        else:
            rows.append(("report p95 (30 days by influencer)", str(reports)[:60], "", ""))
    return rows


def render(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("measure", "value", "target", "")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in [head, *rows]]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
