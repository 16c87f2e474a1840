"""Where a link may send a follower: safe absolute http(s) URLs within a campaign's domains.

Pure checks, no I/O: the request models use them for the shape of a URL, the link
store again with the campaign's ``allowed_domains`` once it has read the campaign.
Allowed domains are kept in ASCII (IDNA) form, so ``bücher.example`` matches
``xn--bcher-kva.example``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

from tracker.core.errors import Unprocessable
from tracker.core.text import has_control_chars, is_utf8

MAX_URL_LENGTH = 2048
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class BadDestination(ValueError):
    """Why a URL cannot be a destination: an error code and the problem, worded after the field name."""

    def __init__(self, code: str, problem: str) -> None:
        super().__init__(problem)
        self.code = code
        self.problem = problem


def _host_problem(url: str, host: str, allowed_domains: Sequence[str]) -> BadDestination | None:
    host = host.rstrip(".").lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return BadDestination("invalid_destination", f"{url!r} has no valid host")
    if not any(host == d or host.endswith("." + d) for d in allowed_domains):
        return BadDestination(
            "domain_not_allowed",
            f"host {host!r} is not within the campaign's allowed domains ({', '.join(allowed_domains)})",
        )
    return None


def destination_problem(url: str, allowed_domains: Sequence[str] = ()) -> BadDestination | None:
    """None when ``url`` is safe to redirect to (and within ``allowed_domains`` when given)."""
    bad = "invalid_destination"
    if not is_utf8(url):
        return BadDestination(bad, "is not valid Unicode text (it holds a lone surrogate)")
    if has_control_chars(url):
        return BadDestination(bad, f"{url[:100]!r} contains control characters (CR, LF or others)")
    if url != url.strip() or " " in url:
        return BadDestination(bad, f"{url[:100]!r} contains spaces")
    if len(url) > MAX_URL_LENGTH:
        return BadDestination(bad, f"is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return BadDestination(bad, f"{url!r} is not a valid URL")
    if parts.scheme.lower() not in ("http", "https"):
        return BadDestination(bad, f"{url!r} must be an absolute http or https URL")
    if not host or host.startswith(".") or ".." in host:
        return BadDestination(bad, f"{url!r} has no valid host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        return BadDestination(bad, f"{url!r} must not carry credentials (user:password@)")
    if "\\" in url:
        return BadDestination(bad, f"{url!r} contains a backslash")
    return _host_problem(url, host, allowed_domains) if allowed_domains else None


def check_destination(url: object, allowed_domains: Sequence[str] = ()) -> str:
    """The destination URL if it is safe to redirect to; Unprocessable naming the problem otherwise."""
    if not isinstance(url, str):
        raise Unprocessable("destination_url must be a string.", code="invalid_field")
    problem = destination_problem(url, allowed_domains)
    if problem is not None:
        raise Unprocessable(f"destination_url {problem.problem}.", code=problem.code)
    return url


def normalize_domain(raw: str) -> str | None:
    """An allowed domain in its stored form (lower case, ASCII, no ``*.``), or None when it is none."""
    d = raw.strip().lower().rstrip(".").removeprefix("*.")
    try:
        d = d.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    labels = d.split(".")
    if len(d) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        return None
    return d
