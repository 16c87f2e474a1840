"""The app's wiring: which paths the redirect may answer."""

from __future__ import annotations

from starlette.routing import Mount, Route

from tracker.app import _routes
from tracker.core.codes import RESERVED, is_redirect_path


def test_every_route_owns_a_reserved_first_segment() -> None:
    """A route whose first segment is not in ``codes.RESERVED`` would be shadowed by the redirect
    and could be taken by a vanity code."""
    for route in _routes():
        assert isinstance(route, Route | Mount)
        if route.path == "/":  # GET / (leads to /app): no code is empty
            assert not is_redirect_path("/")
            continue
        first = route.path.lstrip("/").split("/", 1)[0]
        assert first in RESERVED, f"{route.path}: add {first!r} to tracker.core.codes.RESERVED"
        assert not is_redirect_path("/" + first)
