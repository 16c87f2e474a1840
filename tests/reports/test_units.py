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
        assert write.money(value) == money_str(_decimal(value), currency), value


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
    assert write.money(-40) == "-0.00"


def test_a_currency_finer_than_the_money_columns_is_refused() -> None:
    with pytest.raises(ValueError, match="finer than the money columns"):
        units.Writer(5)


def test_money_sums_leave_clickhouse_as_exact_units(ch: ClickHouse) -> None:
    """What the report queries send: the sum of Decimal(18, 4) values as its count of 0.0001, in
    two Int64 columns, whatever its size."""
    big = "99999999999999.9999"  # the largest value of a money column
    groups = {"a": ["0.0001", "-0.0050"], "b": [big] * 2, "c": ["-12.3456"], "d": [big] * 93, "e": ["-" + big] * 93,
              "f": [big] * 10**5, "g": ["-" + big] * 10**5}
    cols = ch.query_columns(
        f"SELECT k, {', '.join(units.units_sql('sum(v)', 'units'))} FROM (SELECT tupleElement(t, 1) AS k, "
        "toDecimal64(arrayJoin(tupleElement(t, 2)), 4) AS v FROM (SELECT arrayJoin({groups:Array(Tuple(String, "
        "Array(String)))}) AS t)) GROUP BY k ORDER BY k",
        {"groups": list(groups.items())},
    )
    sums = units.units_of(cols["units"], cols["units_hi"])
    assert dict(zip(cols["k"], sums, strict=True)) == {
        k: sum(int(Decimal(v).scaleb(units.SCALE)) for v in values) for k, values in groups.items()
    }
    assert sums[:3] == [-49, 2 * 99999999999999_9999, -123456] and cols["units"][:3] == sums[:3]
    assert all(sums[3:]) and all(cols["units_hi"][3:])  # beyond 2^63 units
    # Far beyond any real sum, still exact.
    huge = ch.query_columns(
        f"SELECT {', '.join(units.units_sql('sum(v)', 'u'))} FROM (SELECT toDecimal128({{v:String}}, 4) AS v "
        "FROM numbers(3))",
        {"v": str(-(10**33))},
    )
    assert units.units_of(huge["u"], huge["u_hi"]) == [-3 * 10**37]
