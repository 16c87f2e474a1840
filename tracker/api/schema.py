"""Request and response shapes: one pydantic model per shape, the single source of truth.

A request model validates a body or a query string and names the bad field in a
``{"error": {"code", "message"}}`` answer; an answer model produces the JSON a
route sends; ``tracker.api.openapi`` generates the OpenAPI document from both.
pydantic v2 was measured against msgspec on these paths (``loadtests/bench_models.py``):
both decode and validate a postback in 1-2 µs, under 1% of a request, so the
choice rests on JSON Schema output, validators and pydantic-settings.

Request models are strict: a string where an integer belongs, a number where
money belongs, or an unknown field is refused, one way everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from tracker.core.errors import BadRequest, Unprocessable
from tracker.core.text import has_control_chars, is_utf8
from tracker.core.timeutil import iso

M = TypeVar("M", bound=BaseModel)
# Error types of validators of ours carry our error code after this prefix.
_OURS = "trk."


class Model(BaseModel):
    """A request shape: strict types, unknown fields refused, immutable once parsed."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)


class Query(BaseModel):
    """A query-string shape: values arrive as strings and are converted (``limit=10`` -> 10)."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True, hide_input_in_errors=True)


class Answer(BaseModel):
    """A response shape. ``dump`` gives the JSON-ready dict (Decimal as string)."""

    # Every field is in every answer, defaulted or not: the schema says so.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ErrorDetail(Answer):
    code: str = Field(description="Machine-readable code, e.g. `not_found`.")
    message: str = Field(description="A full sentence naming the bad value.")


class Error(Answer):
    """Every error answer: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


def invalid(code: str, message: str) -> PydanticCustomError:
    """A validation failure with our error code; raise it from a validator."""
    return PydanticCustomError(_OURS + code, message.replace("{", "{{").replace("}", "}}"))


# --- shared field types ---------------------------------------------------------------------------


def _plain_text(value: str) -> str:
    if has_control_chars(value):
        raise invalid("invalid_field", "contains control characters")
    if not is_utf8(value):
        raise invalid("invalid_field", "is not valid Unicode text (it holds a lone surrogate)")
    return value


# Printable text without control characters (names, notes).
Text = Annotated[str, AfterValidator(_plain_text)]
# Money in answers: a decimal string such as "49.90".
MoneyOut = Annotated[
    Decimal,
    PlainSerializer(lambda d: str(d), return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": 'A decimal amount, e.g. "49.90".'}
    ),
]
# An instant in answers.
Timestamp = Annotated[
    datetime,
    PlainSerializer(iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# --- parsing ----------------------------------------------------------------------------------------


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _message(err: Mapping[str, Any], model: type[BaseModel]) -> tuple[str, str]:
    """Our (code, message) for pydantic's first error."""
    kind = err["type"]
    where = _where(err["loc"])
    if kind == "missing":
        return "missing_field", f"Field {where!r} is required."
    if kind == "extra_forbidden":
        accepted = ", ".join(model.model_fields)
        return "invalid_field", f"Unknown field {where!r}; this route accepts {accepted}."
    msg: str = err["msg"]
    if kind.startswith(_OURS):
        return kind.removeprefix(_OURS), f"Field {where!r} {msg}." if where else f"{msg}."
    return "invalid_field", f"Field {where!r}: {msg[:1].lower()}{msg[1:]}." if where else f"{msg}."


def validation_error(exc: ValidationError, model: type[BaseModel]) -> Unprocessable:
    code, message = _message(exc.errors(include_url=False)[0], model)
    return Unprocessable(message, code=code)


# ``json.loads(raw, parse_float=Decimal)`` builds a decoder per call; this is that decoder, made once,
# and ``parse_json`` decodes the bytes as ``json.loads`` does (the encoding it detects, surrogatepass).
_BODY_JSON = json.JSONDecoder(parse_float=Decimal)


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, floats as Decimal; 400 ``invalid_json`` otherwise."""
    if not raw.strip():
        raise BadRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        data = _BODY_JSON.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    except RecursionError:
        raise BadRequest("The request body nests JSON too deeply.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def validate(
    model: type[M], data: Mapping[str, Any], context: Mapping[str, Any] | None = None, *, strict: bool | None = None
) -> M:
    """``data`` as ``model``; 422 naming the field otherwise."""
    try:
        return model.model_validate(data, strict=strict, context=dict(context) if context else None)
    except ValidationError as exc:
        raise validation_error(exc, model) from None


def parse_body(model: type[M], raw: bytes, context: Mapping[str, Any] | None = None) -> M:
    return validate(model, parse_json(raw), context)


def parse_query(model: type[M], params: Mapping[str, str], context: Mapping[str, Any] | None = None) -> M:
    # Query values are text: convert them (``"10"`` -> 10) even for a strict model.
    return validate(model, dict(params), context, strict=False)
