"""``/api/v1/admin/dead-letters``: what ingest gave up on, listed, and re-driven once the cause is fixed.

Ingest moves an entry it cannot insert (it fails to decode, or its batch failed
``TRACKER_INGEST_MAX_DELIVERIES`` times and splitting isolated it) to the dead-letter
stream with the stream it came from, its id there and the reason
(``tracker.ingest.recovery``), counts it (``tracker_ingest_dead_letters_total``) and logs
it; ``tracker_stream_length{stream="trk:stream:dead"}`` shows how many wait.

A re-drive puts the entry's original fields back on its stream as a new entry and removes
the dead letter: ingest then handles it as any other entry (a row keyed as before, so a
re-drive of something that did land folds into it). A re-drive whose cause is not fixed
comes back as a new dead letter.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tracker.api import auth, http
from tracker.api.endpoints import Operation, api
from tracker.api.schema import Answer, Query, parse_query
from tracker.core import keys
from tracker.core.errors import Conflict, NotFound
from tracker.services import services

log = logging.getLogger("tracker.ops.deadletters")

TAG = "admin"
_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_META = (b"stream", b"id", b"reason")
_ID_SCHEMA = {"type": "string", "pattern": _ID.pattern, "description": "The dead letter's id (a stream entry id)."}


class DeadLetter(Answer):
    id: str = Field(description="The dead letter's id; re-drive it with POST .../{id}/redrive.")
    stream: str = Field(description="The stream the entry came from (clicks, conversions, webhooks).")
    entry_id: str = Field(description="The entry's id in that stream.")
    reason: str = Field(description="Why ingest gave up on it.")
    redrivable: bool = Field(description="Whether it can be re-driven (its stream is an ingest stream).")
    fields: dict[str, Any] = Field(description="The entry as it was on its stream (JSON values decoded).")


class DeadLetterList(Answer):
    items: list[DeadLetter]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")


class DeadLetterQuery(Query):
    limit: int = Field(100, ge=1, le=1000, description="At most this many, oldest first.")
    cursor: str | None = Field(None, pattern=_ID.pattern, description="The `next_cursor` of the previous page.")


class Redriven(Answer):
    id: str = Field(description="The dead letter's id (now removed).")
    stream: str
    new_entry_id: str = Field(description="The entry's new id on its stream.")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _decoded(value: bytes) -> Any:
    text = _text(value)
    try:
        return json.loads(text)
    except ValueError:
        return text


def ingest_streams(shards: int) -> set[str]:
    """The streams ingest reads: a dead letter from one of them can go back."""
    return {*keys.click_streams(shards), keys.CONVERSION_STREAM}


def _letter(entry_id: bytes | str, fields: dict[Any, Any], streams: set[str]) -> DeadLetter:
    stream = _text(fields.get(b"stream", b""))
    return DeadLetter(
        id=_text(entry_id),
        stream=stream,
        entry_id=_text(fields.get(b"id", b"")),
        reason=_text(fields.get(b"reason", b"")),
        redrivable=stream in streams and any(k not in _META for k in fields),
        fields={_text(k): _decoded(v) for k, v in fields.items() if k not in _META},
    )


@api("GET", "/api/v1/admin/dead-letters", Operation(
    "Entries ingest gave up on (admin token), oldest first.", TAG, ("admin",), query=DeadLetterQuery,
    answers={200: DeadLetterList}, errors=(401, 403, 422, 503),
))
async def list_dead_letters(request: Request) -> Response:
    await auth.require_admin(request)
    q = parse_query(DeadLetterQuery, request.query_params)
    svc = services(request)
    start = f"({q.cursor}" if q.cursor else "-"
    entries: list[Any] = list(
        await svc.redis.xrange(keys.DEAD_LETTER_STREAM, min=start, max="+", count=q.limit + 1) or [])
    streams = ingest_streams(svc.settings.stream_shards)
    items = [_letter(entry_id, fields, streams) for entry_id, fields in entries[: q.limit]]
    more = len(entries) > q.limit
    return http.JSONResponse(DeadLetterList(items=items, next_cursor=items[-1].id if more else None).dump())


@api("POST", "/api/v1/admin/dead-letters/{id}/redrive", Operation(
    "Put a dead-lettered entry back on its stream (admin token), once the cause is fixed.", TAG, ("admin",),
    answers={200: Redriven}, errors=(401, 403, 404, 409, 503), path_params={"id": _ID_SCHEMA},
))
async def redrive_dead_letter(request: Request) -> Response:
    await auth.require_admin(request)
    letter_id = request.path_params["id"]
    svc = services(request)
    found: list[Any] = []
    if _ID.match(letter_id):
        found = list(await svc.redis.xrange(keys.DEAD_LETTER_STREAM, min=letter_id, max=letter_id) or [])
    if not found:
        raise NotFound(f"No dead letter has the id {letter_id[:40]!r} (already re-driven?).")
    letter = _letter(found[0][0], found[0][1], ingest_streams(svc.settings.stream_shards))
    if not letter.redrivable:
        raise Conflict(
            f"Dead letter {letter_id!r} came from {letter.stream!r}, which is not an ingest stream, or kept no "
            "entry: it cannot be re-driven.",
        )
    entry = {k: v for k, v in found[0][1].items() if k not in _META}
    # Added before the dead letter is removed, as two commands (the two keys may live on different
    # Redis Cluster nodes): a crash in between leaves both, and a second re-drive adds the entry
    # again, which ingest folds (rows are keyed: a conversion by order and version, a click by id).
    new = await svc.redis.xadd(letter.stream, entry)
    await svc.redis.xdel(keys.DEAD_LETTER_STREAM, letter_id)
    log.warning("dead letter %s re-driven to %s as %s (it failed with: %s)", letter_id, letter.stream,
                _text(new), letter.reason)
    return http.JSONResponse(Redriven(id=letter_id, stream=letter.stream, new_entry_id=_text(new)).dump())


def routes() -> list[BaseRoute]:
    return [list_dead_letters, redrive_dead_letter]
