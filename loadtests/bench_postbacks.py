"""Postback and platform-webhook throughput with a C load generator (wrk), then an exact reconciliation.

    python -m loadtests.bench_postbacks [--workers 2] [--embedded] [--duration 10] [--connections 64] [--json]

1. Starts the server: by default the production topology (its own Valkey, ClickHouse over HTTP in
   front of chDB (``loadtests.chdb_http``), ``tracker migrate``, ``tracker serve --workers N``, no
   ingest while measuring), or with ``--embedded`` one ``tracker serve`` process (Valkey, chDB and
   ingest inside). Seeds a brand (4 links with coupons, a store, a Shopify store) through the API
   and takes click ids from real redirects. One warm-up postback, then a wait until the brand's
   known-orders filter is built (``Server.warm``): the runs measure the steady state, not the first
   seconds of a new brand, when every new order is also looked up in ClickHouse.
2. Pre-signs the requests right before each run (signatures hold 300 s) into a file that wrk's Lua
   script walks through in order, one line per request:
   - ``new_orders``: ``POST /api/v1/conversions`` with fresh order ids (a third with a click id,
     a third with a coupon, a third neither);
   - ``replays``: the same postbacks again, cycled (each answered ``duplicate: true``);
   - ``shopify_webhooks``: ``orders/create`` webhooks (the fixture's order, fresh ids and webhook
     ids, signed with X-Shopify-Hmac-Sha256).
3. Drains the conversion stream into ClickHouse (``tracker ingest --once``, or the embedded worker)
   and checks that ClickHouse holds exactly the orders wrk's requests created: wrk walks the file in
   order, so they are a prefix of it, of length between wrk's completed count and that plus the
   connections in flight at its cut-off (a line wrk took at its cut-off and never sent may leave a
   gap among those last ones, nowhere else); ids are distinct, their count is the server's count of
   new orders, and the sum of amounts is that of the orders stored, to the cent.
Nothing here asserts on speed; the numbers are the output.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import redis

from loadtests.cpu import sum_cpu
from loadtests.serve import free_port
from loadtests.servers import ADMIN, PY, TRACKER, server_env, stop, wait_http
from loadtests.wrk import Result, measured_run
from tracker.core import keys

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "conversions" / "fixtures" / "shopify"
SHOPIFY_SECRET = "shpss_bench_webhook_secret_0123456789"
WARM = {"order_id": "WARM-0", "amount": "1.00", "currency": "USD"}

_LUA = """
local lines = {}
for line in io.lines("%(path)s") do lines[#lines + 1] = line end
local n = 0
request = function()
  n = n %% #lines + 1
  local path, h1, v1, h2, v2, h3, v3, body =
    lines[n]:match("^(%%S+)\\t(%%S+)\\t(%%S+)\\t(%%S+)\\t(%%S+)\\t(%%S+)\\t(%%S+)\\t(.*)$")
  return wrk.format("POST", path, {[h1] = v1, [h2] = v2, [h3] = v3, ["Content-Type"] = "application/json"}, body)
end
"""


def _sign_postback(secret: str, body: bytes) -> str:
    t = int(time.time())
    return f"t={t},v1={hmac.new(secret.encode(), f'{t}.'.encode() + body, hashlib.sha256).hexdigest()}"


def postbacks(n: int, start: int, links: list[dict[str, Any]], click_ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        body: dict[str, Any] = {"order_id": f"B-{i}", "amount": f"{10 + i % 90}.{i % 100:02d}", "currency": "USD"}
        if i % 3 == 0:
            body["click_id"] = click_ids[i % len(click_ids)]
        elif i % 3 == 1:
            body["coupon_code"] = links[i % len(links)]["coupon_code"]
        out.append(body)
    return out


def write_postbacks(path: Path, store: dict[str, Any], bodies: list[dict[str, Any]]) -> None:
    with path.open("w") as f:
        for b in bodies:
            raw = json.dumps(b, separators=(",", ":")).encode()
            signed = _sign_postback(store["secret"], raw)
            f.write(f"/api/v1/conversions\tX-Store-Id\t{store['id']}\tX-Signature\t{signed}"
                    f"\tX-Request-Kind\tpostback\t{raw.decode()}\n")


def write_webhooks(path: Path, store_id: str, n: int) -> list[dict[str, Any]]:
    template = json.loads((FIXTURE / "orders_create_usd.json").read_text())
    orders = []
    with path.open("w") as f:
        for i in range(n):
            order = {**template, "id": 10_000_000 + i, "note_attributes": [], "discount_codes": []}
            raw = json.dumps(order, separators=(",", ":")).encode()
            mac = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), raw, hashlib.sha256).digest()).decode()
            f.write(f"/api/v1/integrations/shopify/{store_id}\tX-Shopify-Hmac-Sha256\t{mac}\tX-Shopify-Topic\t"
                    f"orders/create\tX-Shopify-Webhook-Id\tbench-{i}\t{raw.decode()}\n")
            orders.append(order)
    return orders


def lua(work: Path, name: str, data: Path) -> Path:
    script = work / f"{name}.lua"
    script.write_text(_LUA % {"path": data})
    return script


class Server:
    """The tracker under test, production topology or embedded."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.log = open(work / "tracker.log", "wb")  # noqa: SIM115 - closed in stop()
        self.valkey: Any = None
        self.env: dict[str, str] = {}
        self.ch_port: int | None = None

    def start(self) -> None:
        extra = {"TRACKER_POSTBACK_RATE_LIMIT": "10000000", "TRACKER_PUBLIC_URL": f"http://127.0.0.1:{self.port}"}
        if self.args.embedded:
            self.env = server_env(extra)
            cmd = [*TRACKER, "serve", "--port", str(self.port), "--data-dir", str(self.work / "data")]
        else:
            from tracker.storage.embedded import EmbeddedRedis

            self.valkey = EmbeddedRedis(self.work)
            self.valkey.start()
            ch_port = self.ch_port = free_port()
            self.procs.append(subprocess.Popen(
                [PY, "-m", "loadtests.chdb_http", "--path", str(self.work / "ch"), "--port", str(ch_port)],
                stdout=self.log, stderr=self.log,
            ))
            self.env = server_env({**extra, "REDIS_URL": self.valkey.url,
                                    "CLICKHOUSE_URL": f"http://127.0.0.1:{ch_port}/bench"})
            deadline = time.monotonic() + 60
            while subprocess.run([*TRACKER, "migrate"], env=self.env, stdout=self.log, stderr=self.log).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError("tracker migrate kept failing; see tracker.log")
                time.sleep(0.5)
            cmd = [*TRACKER, "serve", "--port", str(self.port), "--workers", str(self.args.workers)]
        server = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=self.log)
        self.procs.append(server)
        wait_http(self.base + "/healthz", 90, server)

    def redis_url(self) -> str | None:
        """The server's Redis (its own Valkey, or the embedded one's socket when it has one)."""
        if self.valkey is not None:
            return str(self.valkey.url)
        sock = self.work / "data" / "redis" / "valkey.sock"
        return f"unix://{sock}" if sock.exists() else None

    def warm(self, brand_id: str, store: dict[str, Any]) -> None:
        """One postback (``WARM-0``, 1.00 USD), then the brand's known-orders filter built: a brand's first
        unknown order starts that rebuild (``conversions.orderset``), and until it is done every new order is
        looked up in ClickHouse. A brand lives in that state only after its start or a Redis loss; the runs
        measure the steady state. Reconciliation leaves the warm-up order out."""
        raw = json.dumps(WARM, separators=(",", ":")).encode()
        r = httpx.post(self.base + "/api/v1/conversions", content=raw, timeout=30, headers={
            "X-Store-Id": store["id"], "X-Signature": _sign_postback(store["secret"], raw),
            "Content-Type": "application/json"})
        r.raise_for_status()
        url = self.redis_url()
        if url is None:
            return
        client = redis.Redis.from_url(url)
        try:
            deadline = time.monotonic() + 60
            while client.hget(keys.order_set(brand_id), "complete") != b"1":
                if time.monotonic() > deadline:
                    raise RuntimeError("the brand's known-orders filter was not rebuilt within 60 s")
                time.sleep(0.05)
        finally:
            client.close()

    def roots(self) -> list[int]:
        roots = [self.procs[-1].pid]
        if self.valkey is not None:
            roots.append(int(self.valkey.pidfile.read_text().strip()))
        return roots

    def drain(self) -> None:
        if not self.args.embedded:
            subprocess.run([*TRACKER, "ingest", "--once"], env=self.env, stdout=self.log, stderr=self.log,
                           check=True, timeout=600)

    def order_ids(self, brand_id: str) -> list[str] | None:
        """Every order id in ClickHouse (production mode: its HTTP endpoint); None in embedded mode."""
        if self.ch_port is None:
            return None
        sql = "SELECT order_id FROM bench.conversions FINAL WHERE brand_id = {b:String} FORMAT TSV"
        r = httpx.post(f"http://127.0.0.1:{self.ch_port}/", params={"param_b": brand_id}, content=sql, timeout=120)
        r.raise_for_status()
        return r.text.split()

    def totals(self, brand_id: str) -> dict[str, Any] | None:
        """Orders and revenue in ClickHouse itself (production mode), when the reports API cannot answer."""
        if self.ch_port is None:
            return None
        sql = ("SELECT count(), toString(sum(amount)) FROM bench.conversions FINAL "
               "WHERE brand_id = {b:String} FORMAT TSV")
        r = httpx.post(f"http://127.0.0.1:{self.ch_port}/", params={"param_b": brand_id}, content=sql, timeout=120)
        r.raise_for_status()
        count, revenue = r.text.split()
        return {"conversions": int(count), "revenue": revenue}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        if self.valkey is not None:
            self.valkey.stop()
        self.log.close()


def seed(base: str) -> dict[str, Any]:
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
    brand = admin.post("/api/v1/brands", json={"name": "Bench", "currency": "USD"}).json()
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {brand['api_key']}"}, timeout=30)
    camp = api.post("/api/v1/campaigns", json={"name": "C", "commission": {"type": "percent", "value": "10"}}).json()
    links = []
    for i in range(4):
        inf = api.post("/api/v1/influencers", json={"name": f"I{i}"}).json()
        links.append(api.post("/api/v1/links", json={
            "campaign_id": camp["id"], "influencer_id": inf["id"], "destination_url": f"https://shop.example/{i}",
            "coupon_code": f"BENCH{i}"}).json())
    store = api.post("/api/v1/stores", json={"name": "S"}).json()
    shop = api.post("/api/v1/stores", json={"name": "Shopify", "platform": "shopify",
                                             "webhook_secret": SHOPIFY_SECRET}).json()
    clicks = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(200):
            location = client.get(f"/{links[i % 4]['code']}", headers={"User-Agent": "Mozilla/5.0 bench"})
            clicks.append(parse_qs(urlsplit(location.headers["location"]).query)["click_id"][0])
    return {"brand": brand, "links": links, "store": store, "shop": shop, "clicks": clicks}


def stored(base: str, brand: dict[str, Any], want: int, timeout: float = 120) -> dict[str, Any]:
    """Orders in ClickHouse (every one is new, counted or unattributed), read through the reports API's totals."""
    api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {brand['api_key']}"}, timeout=60)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 300 * 86400))  # the webhook fixture's date too
    deadline = time.monotonic() + timeout
    totals: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = api.get("/api/v1/reports", params={"from": since, "to": today, "group_by": "campaign"})
        if r.status_code != 200:  # a refused query will not pass later: say why, reconcile from ClickHouse
            return {"error": f"{r.status_code}: {r.text[:200]}"}
        totals = r.json().get("totals", {})
        if totals.get("conversions", 0) + totals.get("unattributed_conversions", 0) >= want:
            break
        time.sleep(0.5)
    return totals


def server_counts(base: str) -> tuple[int, int]:
    """New orders the server acknowledged: postbacks accepted, Shopify webhooks accepted (all workers)."""
    text = httpx.get(base + "/metrics", timeout=30).text
    found = {"postbacks": 0.0, "webhooks": 0.0}
    for line in text.splitlines():
        if line.startswith('tracker_postbacks_total{outcome="accepted"}'):
            found["postbacks"] += float(line.split()[-1])
        elif line.startswith("tracker_webhooks_total{") and 'outcome="accepted"' in line and "shopify" in line:
            found["webhooks"] += float(line.split()[-1])
    return int(found["postbacks"]), int(found["webhooks"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-postbacks-"))
    server = Server(args, work)
    result: dict[str, Any] = {}
    try:
        server.start()
        world = seed(server.base)
        server.warm(world["brand"]["id"], world["store"])
        warm_counts = server_counts(server.base)
        per_run = max(20_000, 12_000 * args.duration)  # more than wrk can send: no order id is sent twice
        bodies = postbacks(per_run, 0, world["links"], world["clicks"])
        phases: dict[str, Result] = {}
        write_postbacks(work / "new.tsv", world["store"], bodies)
        cpu = lambda: sum_cpu(server.roots())  # noqa: E731
        phases["new_orders"] = measured_run("new orders", server.port, lua(work, "new", work / "new.tsv"),
                                            args.connections, args.duration, cpu)
        sent = phases["new_orders"].requests
        write_postbacks(work / "replay.tsv", world["store"], bodies[: max(sent, 1)])
        phases["replays"] = measured_run("replays", server.port, lua(work, "replay", work / "replay.tsv"),
                                         args.connections, args.duration, cpu)
        write_webhooks(work / "shopify.tsv", world["shop"]["id"], per_run)
        phases["shopify_webhooks"] = measured_run("shopify webhooks", server.port,
                                                  lua(work, "shopify", work / "shopify.tsv"),
                                                  args.connections, args.duration, cpu)
        hooks = phases["shopify_webhooks"].requests
        accepted = tuple(a - w for a, w in zip(server_counts(server.base), warm_counts, strict=True))
        server.drain()
        totals = stored(server.base, world["brand"], sent + hooks + 1)
        if "error" in totals:
            result["reports_error"] = totals["error"]
            totals = server.totals(world["brand"]["id"]) or {}
        # Less the warm-up order.
        n_stored = int(totals.get("conversions", 0)) + int(totals.get("unattributed_conversions", 0)) - 1
        revenue = (Decimal(str(totals.get("revenue", "0"))) + Decimal(str(totals.get("unattributed_revenue", "0")))
                   - Decimal(WARM["amount"]))
        # wrk walks each file in order, so the orders created are its first lines: as many as the server
        # acknowledged as new (wrk's own count misses those in flight at its cut-off).
        new_postbacks, new_hooks = accepted
        want = sum((Decimal(b["amount"]) for b in bodies[:new_postbacks]), Decimal(0)) + Decimal("127.80") * new_hooks
        ids = server.order_ids(world["brand"]["id"])
        if ids is not None:
            ids = [i for i in ids if i != WARM["order_id"]]
        ids_ok = True
        if ids is not None:  # production: the ids themselves, so a gap (a lost order) would show
            posted = sorted(int(i[2:]) for i in ids if i.startswith("B-"))
            missing = sorted(set(range(posted[-1] + 1)) - set(posted)) if posted else []
            # wrk may have taken a line at its cut-off and never sent it, while other connections' later
            # lines got through: a gap is allowed only among the last lines in flight then. The amounts
            # expected are those of the orders stored (a gap's order is then neither sent nor counted).
            want = sum((Decimal(bodies[i]["amount"]) for i in posted), Decimal(0)) + Decimal("127.80") * new_hooks
            in_flight = posted[-1] - 2 * args.connections if posted else 0
            ids_ok = len(set(ids)) == len(ids) and all(i > in_flight for i in missing)
            result["order_ids"] = {
                "postback_ids_are_0_to_n": not missing, "postback_ids": len(posted),
                "missing_below_max": len(missing), "missing_only_in_flight": all(i > in_flight for i in missing),
                "webhook_ids": sum(1 for i in ids if not i.startswith("B-")), "distinct": len(set(ids)) == len(ids),
            }
        result["reconciliation"] = {
            "wrk_new_orders": sent, "wrk_webhooks": hooks, "server_new_orders": new_postbacks,
            "server_new_webhook_orders": new_hooks, "stored_orders": n_stored, "stored_revenue": str(revenue),
            "expected_revenue": str(want),
            "exact": n_stored == new_postbacks + new_hooks and revenue == want and ids_ok
            and sent <= new_postbacks <= sent + args.connections + 1
            and hooks <= new_hooks <= hooks + args.connections + 1,
        }
        for name, r in phases.items():
            result[name] = {**asdict(r), "errors": r.errors}
        result["server_log_errors"] = (work / "tracker.log").read_text(errors="replace").count("Traceback")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    mode = "embedded, 1 process" if args.embedded else f"production, tracker serve --workers {args.workers}"
    result.update({
        "mode": mode, "connections": args.connections, "duration_s": args.duration, "cpus": os.cpu_count(),
        "python": platform.python_version(), "load_average": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m loadtests.bench_postbacks " + " ".join(sys.argv[1:]),
    })
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--workers", type=int, default=2, help="tracker serve --workers N (production mode)")
    p.add_argument("--embedded", action="store_true", help="one embedded tracker serve process instead")
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['date']}  {result['mode']}; wrk -t1 -c{args.connections} -d{args.duration}s, "
          f"{result['cpus']} CPUs, Python {result['python']}")
    for name in ("new_orders", "replays", "shopify_webhooks"):
        r = result[name]
        cpu = ", ".join(f"{k} {v}" for k, v in sorted(r["cpu_us_per_request"].items()))
        print(f"{name:17} {r['requests']:8} req {r['rps']:9.0f}/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms"
              f"  errors {r['errors']}  other jobs {r['other_cpu_cores']} cores  CPU us/req: {cpu}")
    print("reconciliation:", json.dumps(result["reconciliation"]))
    if "reports_error" in result:
        print("the reports API failed, so ClickHouse was summed directly:", result["reports_error"])
    if "order_ids" in result:
        print("order ids in ClickHouse:", json.dumps(result["order_ids"]))
    print(f"load average at the end: {result['load_average']:.2f}; tracebacks in the server log: "
          f"{result['server_log_errors']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
