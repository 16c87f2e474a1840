"""What the web pages share: the directory of their files, and the headers of the brand app's and
the portal's pages (this origin's scripts, styles and images only; never cached)."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it browsers send "Origin: null" on the page's own form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
