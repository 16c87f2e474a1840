"""The project's exception hierarchy.

Leaf module: imports nothing of the project. HTTP handlers turn ``TrackerError``
subclasses into ``{"error": {"code", "message"}}`` bodies with ``status``.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base class. ``code`` is machine-readable, the message a full sentence."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class SettingsError(TrackerError):
    """A setting in the environment is missing or malformed; names the variable."""

    code = "bad_setting"


class MigrationError(TrackerError):
    """A migration file failed; names the file and carries the ClickHouse error."""

    code = "migration_failed"


class StorageUnavailable(TrackerError):
    """Redis or ClickHouse cannot be reached right now (transient: retry with backoff)."""

    status = 503
    code = "storage_unavailable"


class QueryError(TrackerError):
    """ClickHouse rejected a statement (not transient)."""

    code = "query_failed"


class BadRequest(TrackerError):
    status = 400
    code = "bad_request"


class Unauthorized(TrackerError):
    status = 401
    code = "unauthorized"


class Forbidden(TrackerError):
    status = 403
    code = "forbidden"


class NotFound(TrackerError):
    status = 404
    code = "not_found"


class Conflict(TrackerError):
    status = 409
    code = "conflict"


class PayloadTooLarge(TrackerError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(TrackerError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(TrackerError):
    status = 422
    code = "unprocessable"


class RateLimited(TrackerError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        # Whole seconds until the limit lets the caller in again (RFC 9110 §10.2.3).
        self.headers = {"Retry-After": str(max(1, retry_after))}
