"""Schemathesis against a running embedded `tracker serve`, bounded in time.

    /work/venv/bin/python -m loadtests.schemathesis_run [--max-examples 20] [--max-time 60]

Starts `tracker serve` on a temp data dir and a free port, creates a brand with
the admin token (its API key authenticates the brand routes) and seeds
campaigns, influencers, links and stores; their ids go into schemathesis
dictionaries (70% of generated ids, codes and coupons are real ones, so requests
reach real rows and not only 404/422 paths), then runs `st run` against the server's own /openapi.json
twice: the brand routes with the brand key, the admin routes with the admin
token. Checks: no 5xx, every status code documented, every content type and
response body matching the schema. Exits non-zero on any failure; the
schemathesis reports (JUnit XML, NDJSON) go to --report-dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtests.serve import EmbeddedServe, Seed, seed

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)
ADMIN_OPERATIONS = ("createBrand", "listBrands")


def write_config(path: Path, s: Seed) -> Path:
    """Schemathesis dictionaries of the seeded ids, so generated requests also reach real rows."""
    values = {
        "campaign_id": [c["id"] for c in s.campaigns],
        "influencer_id": [i["id"] for i in s.influencers],
        "code": [link["code"] for link in s.links],
        "coupon_code": [link["coupon_code"] for link in s.links if link.get("coupon_code")],
        # One store, so a generated GET /postback pairs its id with its own token and gets through.
        "store_id": [s.stores[0]["id"]],
        "token": [s.stores[0]["postback_token"]],
    }
    lines = ["[dictionaries]"]
    lines += [f"{name} = {{ values = {json.dumps(vals)} }}" for name, vals in values.items() if vals]
    lines += ["", "[parameters]"]
    for name, vals in values.items():
        if vals:
            binding = f'{{ dictionary = "{name}", probability = 0.7 }}'
            lines += [f'"{name}" = {binding}', f'"body.{name}" = {binding}']
    path.write_text("\n".join(lines) + "\n")
    return path


def st_command(
    base: str, token: str, args: argparse.Namespace, name: str, admin: bool, config: Path
) -> list[str]:
    st = Path(sys.executable).with_name("st")
    cmd = [
        str(st) if st.exists() else "st",
        "--config-file",
        str(config),
        "run",
        f"{base}/openapi.json",
        "--url",
        base,
        "-H",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(args.max_examples),
        "--max-time",
        str(args.max_time),
        "--max-redirects",
        "0",
        "--request-timeout",
        "10",
        # One worker: hypothesis's lambda-source parsing is not thread-safe on Python 3.11
        # ("AST constructor recursion depth mismatch" with several workers).
        "--workers",
        "1",
        "--seed",
        str(args.seed),
        "--suppress-health-check",
        "all",
        "--report",
        "junit,ndjson",
        "--report-dir",
        str(args.report_dir / name),
    ]
    for op in ADMIN_OPERATIONS:
        cmd += ["--include-operation-id" if admin else "--exclude-operation-id", op]
    return cmd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.schemathesis_run", description=__doc__.split("\n\n")[0])
    p.add_argument("--max-examples", type=int, default=20, help="Test cases per operation and phase.")
    p.add_argument("--max-time", type=int, default=60, help="Time budget of each of the two st runs, seconds.")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--report-dir", type=Path, default=Path("schemathesis-report"))
    p.add_argument("--keep", action="store_true", help="Keep the server's data dir and log.")
    args = p.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="tracker-st-"))
    serve = EmbeddedServe(work / "data")
    failed = True
    try:
        serve.start()
        s = seed(serve.base, serve.admin_token, influencers=3, campaigns=2, stores=2, name="Schemathesis Brand")
        print(f"tracker serve at {serve.base}; link /{s.links[0]['code']}, store {s.stores[0]['id']}", flush=True)
        config = write_config(work / "schemathesis.toml", s)
        codes = []
        for name, token, admin in (("brand", s.brand["api_key"], False), ("admin", serve.admin_token, True)):
            cmd = st_command(serve.base, token, args, name, admin, config)
            print(f"\n== schemathesis ({name} routes) ==", flush=True)
            codes.append(subprocess.run(cmd, timeout=args.max_time + 300, check=False).returncode)
        if serve.proc is not None and serve.proc.poll() is not None:
            print(f"tracker serve died during the run:\n{serve.output()[-3000:]}", file=sys.stderr)
            return 1
        failed = any(codes)
        print(f"\nschemathesis: {'FAILED' if failed else 'passed'} (exit codes {codes})")
        return 1 if failed else 0
    finally:
        serve.stop()
        if args.keep or failed:
            print(f"server log: {serve.log_path}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
