"""The /t.js click-id carrier: small, dependency-free, and doing what DESIGN says under a fake browser."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "tracker" / "web" / "static" / "t.js"
HARNESS = Path(__file__).resolve().parent / "tjs_harness.js"


def test_under_3_kb() -> None:
    assert SCRIPT.stat().st_size < 3072


@pytest.mark.parametrize(
    "piece",
    [
        "trk_click_id",  # the cookie
        "data-param",  # the campaign's parameter name, from the script tag
        "'click_id'",  # its default, and the Shopify cart attribute's name
        "Max-Age=' + AGE",
        "90 * 86400",
        "SameSite=Lax",
        "Secure",
        "https:",
        "trk.clickId",
        "w.Shopify",
        "/cart/update.js",
        "attributes: { click_id: id }",
    ],
)
def test_mentions_the_pieces(piece: str) -> None:
    assert piece in SCRIPT.read_text(encoding="utf-8")


def test_no_dependency() -> None:
    text = SCRIPT.read_text(encoding="utf-8")
    for outside in ("import ", "require(", "http://", "jQuery", "$(", "localStorage", "eval("):
        assert outside not in text


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_runs_under_node_with_a_fake_window() -> None:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run([node, str(HARNESS), str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
