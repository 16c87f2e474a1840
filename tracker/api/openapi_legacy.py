"""TRANSITIONAL: the hand-written OpenAPI entries of routes that do not describe themselves yet.

The conversions and reports routes are becoming ``ApiRoute``s (the registry's are). Until a
route is one, ``tracker.api.openapi`` takes its entry from ``openapi_legacy.json``
(moved unchanged from the hand-written document), with the component schemas
those entries name. Delete this module and its JSON once no plain ``Route`` is left.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any


@cache
def _entries() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(__file__).with_name("openapi_legacy.json").read_text(encoding="utf-8"))
    return data


def operation(path: str, method: str) -> dict[str, Any] | None:
    """The hand-written entry of ``method path`` (lower-case method), if there is one."""
    entry: dict[str, Any] | None = _entries()["paths"].get(path, {}).get(method)
    return entry


def schemas() -> dict[str, Any]:
    schemas_: dict[str, Any] = _entries()["schemas"]
    return schemas_
