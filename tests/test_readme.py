"""The README's quickstart is a script a newcomer pastes top to bottom: run it against a fresh
embedded ``tracker serve`` and check what it prints and the report it ends with.

Also the first start's message: the admin token and the next steps.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.serve import EmbeddedServe

README = Path(__file__).resolve().parent.parent / "README.md"


def quickstart() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart:begin -->\n```bash\n(.*?)```\n<!-- quickstart:end -->", text, re.S)
    assert match, "the README lost its quickstart markers"
    return match.group(1)


def test_the_quickstart_uses_no_placeholders() -> None:
    script = quickstart()
    assert "…" not in script and "<" not in script.replace("<t>.<body>", "")
    assert "jq" not in script.split()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedServe]:
    serve = EmbeddedServe(tmp_path / "var", env={"TRACKER_INGEST_BATCH_SECONDS": "0.2"})
    try:
        yield serve.start(timeout=120)
    finally:
        serve.stop()


@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("curl") is None, reason="needs curl and openssl")
def test_the_quickstart_runs_against_a_fresh_server(server: EmbeddedServe, tmp_path: Path) -> None:
    log = server.output()
    assert "generated an admin token" in log
    assert f"Open {server.base}/app" in log and "Next steps" in log
    assert httpx.get(server.base + "/").headers["location"] == "/app"

    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quickstart()],
        env={"PATH": "/usr/bin:/bin", "TRACKER": server.base, "DATA_DIR": str(server.data_dir), "HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert f"Anna's link: {server.base}/" in out
    assert "a follower lands on: https://shop.example/spring?click_id=" in out
    assert '"attributed":true' in out and '"attribution":"click"' in out and '"commission":"4.99"' in out
    assert ("Anna: clicks 1, bot_clicks 1, conversions 1, revenue 49.90, commission 4.99, fees 20.00, "
            "cost 24.99, roi 0.996799") in out
    # The README promises exactly that line.
    assert "It ends with `Anna: clicks 1, bot_clicks 1, conversions 1, revenue 49.90, commission 4.99, fees 20.00,\n" \
           "cost 24.99, roi 0.996799`" in README.read_text(encoding="utf-8")
    key = re.search(r"sign in with the key (trk_\S+) ", out)
    assert key is not None
    signin = httpx.post(server.base + "/app/signin", json={"key": key.group(1)})
    assert signin.status_code == 200 and signin.json()["brand"]["name"] == "Acme"
    # A second start prints no new token.
    server.stop()
    again = EmbeddedServe(server.data_dir, env=server.env).start(timeout=120)
    try:
        assert "Next steps" not in again.output()
    finally:
        again.stop()
