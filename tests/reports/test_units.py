"""Report money as integer units: written exactly as the Decimal definitions in ``answer`` write it,
by Python and by the SQL twins the conversions query uses."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from tracker.reports import units
from tracker.reports.answer import money_ratio, money_str, ratio, writer
from tracker.storage.clickhouse import ClickHouse

# Ties, their neighbours and zeros, in units of 0.0001, both signs.
EDGES = sorted({s * v for s in (1, -1) for v in (
    0, 1, 4, 5, 6, 49, 50, 51, 99, 100, 101, 149, 150, 151, 499, 500, 501, 4999, 5000, 5001, 9999, 10000,
    10001, 12345, 123450, 99999999999999_9999,
)})
COUNTS = (1, 2, 3, 4, 7, 8, 10, 16, 400, 3636, 10**6 + 3)


def _values(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [*EDGES, *(rng.randint(-10**12, 10**12) for _ in range(n)), *(rng.randint(-999, 999) for _ in range(n))]


def _decimal(value: int) -> Decimal:
    return Decimal(value).scaleb(-units.SCALE)


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD", "XXX"])
def test_money_is_written_as_the_decimal_definition_writes_it(currency: str) -> None:
    write = writer(currency)
    for value in _values(3000, 1):
        assert write(value) == money_str(_decimal(value), currency), value
        assert write(value) == write(value)  # the second time from the memo


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_money_per_count_is_the_decimal_quotient_rounded(currency: str) -> None:
    write = writer(currency)
    rng = random.Random(2)
    for value in _values(1000, 3):
        for count in (*COUNTS, rng.randint(1, 10**7)):
            assert write.per(value, count) == money_ratio(_decimal(value), Decimal(count), currency), (value, count)


def test_ratios_are_the_decimal_quotient_rounded() -> None:
    write = writer("USD")
    rng = random.Random(4)
    values = _values(1000, 5)
    for numerator in values:
        for denominator in (*rng.sample(values, 8), 3, -3, 7, 8, -16, 2 * 10**6, 10**30 + 1):
            if denominator:
                expected = ratio(_decimal(numerator), _decimal(denominator))
                assert write.ratio(numerator, denominator) == expected, (numerator, denominator)
    # A zero numerator keeps the sign of the quotient: over a negative cost, roi is "-0.000000".
    assert write.ratio(0, -5) == ratio(Decimal(0), Decimal(-5)) == "-0.000000"
    assert write.ratio(-4, 10**7) == "-0.000000"
    assert write(-40) == "-0.00"


def test_a_currency_finer_than_the_money_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="finer than the money columns"):
        units.Writer(5)


def test_money_sums_leave_clickhouse_as_exact_units(ch: ClickHouse) -> None:
    """What the report queries send: the sum of Decimal(18, 4) values as its Int128 count of 0.0001."""
    rows = [("a", "0.0001"), ("a", "-0.0050"), ("b", "99999999999999.9999"), ("b", "99999999999999.9999"),
            ("c", "-12.3456")]
    got = dict(ch.query(
        f"SELECT k, {units.units_sql('sum(v)')} FROM (SELECT tupleElement(t, 1) AS k, "
        "toDecimal64(tupleElement(t, 2), 4) AS v FROM (SELECT arrayJoin({rows:Array(Tuple(String, String))}) AS t)) "
        "GROUP BY k",
        {"rows": rows},
    ))
    assert got == {"a": -49, "b": 2 * 99999999999999_9999, "c": -123456}
    # Far beyond any real sum, still exact (a multiplication by 10^4 would have wrapped).
    huge = ch.query(
        f"SELECT {units.units_sql('sum(v)')} FROM (SELECT toDecimal128({{v:String}}, 4) AS v FROM numbers(3))",
        {"v": str(10**33)},
    )
    assert huge == [(3 * 10**37,)]


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
def test_the_sql_twins_write_what_python_writes(ch: ClickHouse, currency: str) -> None:
    """Money, money per count and ratios, as the conversions query writes them (both signs, ties,
    zeros over negative values, sums far beyond real ones)."""
    write = writer(currency)
    rng = random.Random(6)
    values = [*_values(300, 6), 10**33, -(10**33)]
    cases = [(v, c, w) for v in values for c, w in ((1, v), (2, -v), (3, 0), (7, v + 1), (16, rng.choice(values)),
                                                        (10**6 + 3, rng.randint(-10**6, 10**6)))]
    money = "reinterpret(toInt128(tupleElement(t, {})), 'Decimal(38, 4)')"
    got = ch.query(
        f"SELECT {units.money_sql('v', '{places:UInt8}')}, {units.per_sql('v', 'c', '{places:UInt8}')}, "
        f"if(v = 0, NULL, {units.ratio_sql('w - v', 'v')}), if(v = 0, NULL, {units.ratio_sql('w', 'v')}) "
        f"FROM (SELECT {money.format(1)} AS v, toUInt64(tupleElement(t, 2)) AS c, {money.format(3)} AS w "
        "FROM (SELECT arrayJoin({cases:Array(Tuple(String, UInt64, String))}) AS t))",
        {"cases": [(str(v), c, str(w)) for v, c, w in cases], "places": write.places},
    )
    expected = [
        (write(v), write.per(v, c), *((write.ratio(w - v, v), write.ratio(w, v)) if v else (None, None)))
        for v, c, w in cases
    ]
    assert got == expected
