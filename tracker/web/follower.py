"""Followers' pages: what a person's browser gets on a short link that leads nowhere.

The redirect (``tracker.redirect.handler``) answers these on its miss path only: an
unknown code (404), a disabled or expired link (410) when its campaign has no
``fallback_url``. A request that does not accept ``text/html`` (an API client, curl)
keeps the JSON error. One self-contained page: its only style is inline and allowed by
its hash in the Content-Security-Policy, so the page loads nothing from anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from functools import cache

from tracker.web.pages import STATIC

_STYLE = re.compile(r"<style>(.*?)</style>", re.S)

TEXTS = {
    404: ("This link does not exist", "Check the link for typos, or ask whoever shared it for a new one."),
    410: ("This link has ended", "The offer behind this link is no longer available."),
}


@cache
def _template() -> tuple[str, bytes]:
    page = (STATIC / "follower.html").read_text(encoding="utf-8")
    match = _STYLE.search(page)
    assert match is not None, "follower.html keeps its style inline"
    digest = base64.b64encode(hashlib.sha256(match.group(1).encode()).digest()).decode()
    csp = (f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    return page, csp.encode()


@cache
def page(status: int) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]]:
    """The body and headers (without status) of the follower page for 404 or 410."""
    template, csp = _template()
    title, text = TEXTS[status]
    body = template.replace("{title}", html.escape(title)).replace("{text}", html.escape(text)).encode()
    headers = (
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"content-security-policy", csp),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    )
    return body, headers


def wants_html(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """A browser navigating: its Accept names text/html (API clients and curl send */* or JSON)."""
    for name, value in headers:
        if name == b"accept":
            return b"text/html" in value.lower()
    return False
