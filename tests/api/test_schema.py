"""The request-model layer: one way to refuse a bad body, with our codes and the field named."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import field_validator

from tracker.api.schema import Model, Text, invalid, parse_body, parse_json, parse_query, validate
from tracker.core.errors import BadRequest, Unprocessable


class Thing(Model):
    name: Text
    size: int = 1

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise invalid("invalid_name", "must not be blank")
        return value


@pytest.mark.parametrize(
    ("data", "code", "named"),
    [
        ({}, "missing_field", "name"),
        ({"name": "a", "colour": "red"}, "invalid_field", "colour"),
        ({"name": 5}, "invalid_field", "name"),
        ({"name": "a", "size": "5"}, "invalid_field", "size"),
        ({"name": "a", "size": True}, "invalid_field", "size"),
        ({"name": "a\nb"}, "invalid_field", "name"),
        ({"name": "a\ud800"}, "invalid_field", "name"),
        ({"name": "  "}, "invalid_name", "name"),
    ],
)
def test_bad_bodies_name_the_field(data: dict[str, Any], code: str, named: str) -> None:
    with pytest.raises(Unprocessable) as err:
        validate(Thing, data)
    assert err.value.code == code
    assert repr(named) in err.value.message


@pytest.mark.parametrize("raw", [b"", b"{", b"[1]", b"null", b'"x"', b"[" * 60_000, b'{"name": "\xff"}'])
def test_non_objects_are_bad_requests(raw: bytes) -> None:
    with pytest.raises(BadRequest) as err:
        parse_body(Thing, raw)
    assert err.value.code == "invalid_json"


def test_good_body_and_query() -> None:
    assert parse_body(Thing, b'{"name": "a", "size": 3}') == Thing(name="a", size=3)
    # Query strings carry text: numbers are converted there, not in bodies.
    assert parse_query(Thing, {"name": "a", "size": "3"}).size == 3
    assert isinstance(parse_body(Thing, b'{"name": "a"}').size, int)
    assert Decimal("1.5") == Decimal("1.50")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1.50,"b":"\xc3\xa9","c":[1,2.0,null,true]}',
        '{"a":"é"}'.encode("utf-16"),  # a BOM'd UTF-16 body
        '{"a":1}'.encode("utf-32-le"),
        b'\xef\xbb\xbf{"a":1}',  # a UTF-8 BOM
        b'{"a":"\\ud800"}',  # a lone surrogate escape
        b'{"a":1e999}',
        b'{"a":', b'{"a":NaN}', b"\xff\xfe{", b'{"a":1}x', b'{"a":"\xff"}',
    ],
)
def test_bodies_are_read_as_json_loads_reads_them(raw: bytes) -> None:
    # parse_json keeps one decoder instead of json.loads' per call: the same values and the same errors.
    try:
        expected: Any = json.loads(raw, parse_float=Decimal)
    except ValueError as exc:
        with pytest.raises(BadRequest) as refused:
            parse_json(raw)
        assert str(refused.value) == f"The request body is not valid JSON: {exc}."
        return
    assert parse_json(raw) == expected
    assert [type(v) for v in parse_json(raw).values()] == [type(v) for v in expected.values()]
