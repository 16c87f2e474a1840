"""The hash chain of a statement: compute it, and verify a saved statement (pure, no I/O).

Each entry carries ``prev_hash`` and ``hash`` = hex SHA-256 of ``prev_hash`` followed by the
entry's canonical JSON: the entry's other fields (``seq``, ``at``, ``kind``, ``object_id``,
``order_id``, ``detail``, ``amount``, ``balance``) with sorted keys, no spaces, UTF-8,
``seq`` an integer and every other value a string. The first entry's ``prev_hash`` is
``GENESIS`` (64 zeros). Editing, removing or reordering any past entry changes every hash
after it, so a statement saved earlier proves what was shown then. ``docs/STATEMENTS.md``
has the same recipe in 20 lines for anyone to run without tracker.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from typing import Any

GENESIS = "0" * 64
FIELDS = ("seq", "at", "kind", "object_id", "order_id", "detail", "amount", "balance")


def canonical(entry: dict[str, Any]) -> bytes:
    body = {f: (int(entry[f]) if f == "seq" else str(entry[f])) for f in FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(entry)).hexdigest()


def link(entries: Iterable[dict[str, Any]], prev_hash: str = GENESIS) -> list[dict[str, Any]]:
    """The entries with ``prev_hash`` and ``hash`` set, in order."""
    out = []
    for e in entries:
        h = entry_hash(prev_hash, e)
        out.append({**e, "prev_hash": prev_hash, "hash": h})
        prev_hash = h
    return out


class BrokenChain(ValueError):
    pass


def verify(entries: list[dict[str, Any]], head_hash: str | None = None) -> str:
    """The head hash when every entry links to the one before; BrokenChain naming the first bad entry."""
    prev = entries[0]["prev_hash"] if entries else GENESIS
    for e in entries:
        if e["prev_hash"] != prev:
            raise BrokenChain(f"entry seq {e['seq']}: prev_hash does not match the hash of the entry before it")
        h = entry_hash(prev, e)
        if h != e["hash"]:
            raise BrokenChain(f"entry seq {e['seq']}: its hash does not match its content (edited?)")
        prev = h
    if head_hash is not None and entries and head_hash != prev:
        raise BrokenChain("head_hash is not the hash of the last entry")
    return prev


def load(text: str) -> tuple[list[dict[str, Any]], str | None]:
    """Entries and head hash of a saved statement: the JSON answer, or the CSV download."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        data = json.loads(stripped)
        return list(data["entries"]), data.get("head_hash")
    rows = list(csv.DictReader(io.StringIO(text)))
    missing = [f for f in (*FIELDS, "prev_hash", "hash") if rows and f not in rows[0]]
    if missing:
        raise BrokenChain(f"the CSV lacks the columns {', '.join(missing)}")
    return rows, None
