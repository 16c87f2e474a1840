"""Steps the brand app's browser tests share: Debian's Chromium, signing in with a key, opening a view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).exists()
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def sign_in(page: Any, base: str, key: str) -> None:
    """Open /app, exchange the key for the session cookie, wait for the first view."""
    page.goto(base + "/app")
    page.wait_for_selector("body[data-state=signed-out]")
    page.fill("#signin-key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("body[data-state=ready]")


def go(page: Any, view: str) -> None:
    page.click(f'#nav a[data-view="{view}"]')
    page.wait_for_selector(f"#view-{view}")
    page.wait_for_selector("body[data-state=ready]")
