"""Report money as integer units of 10^-MONEY_SCALE, rounded half-up and written as decimal text.

The report queries send every money sum as an integer count of the money columns' smallest unit
(``Decimal(18, 4)``: 0.0001), which Python adds exactly and cheaply. Rounding is integer
arithmetic on the exact value or quotient, half away from zero (``ROUND_HALF_UP``). The text is
``f"{Decimal.quantize(..., rounding=ROUND_HALF_UP):f}"`` of the same value, down to the sign of a
rounded zero ("-0.00" for -0.004, "-0.000000" for 0 / -5). Decimal divides to 28 significant
digits before it rounds; the two agree while the dividend stays below 10^23 currency units (a
quotient that far from a rounding boundary's tie is at least 1 / (divisor * 10^4) away from it).
"""

from __future__ import annotations

from collections.abc import Sequence

from tracker.core import money

SCALE = money.MONEY_SCALE
# Ratios (roi, conversion_rate) are rounded half-up to this many places.
RATIO_PLACES = 6


def _pattern(places: int) -> tuple[int, str]:
    """``pattern % divmod(rounded, base)``: a non-negative count of 10^-places as decimal text
    with ``places`` digits (for 0 places, ``%.0s`` writes the remainder as nothing)."""
    return 10**places, f"%d.%0{places}d" if places else "%d%.0s"


class Writer:
    """How one report writes its figures: money in one currency (its minor unit), ratios.

    ``money(units)``, ``per(units, count)`` (aov, epc) and ``ratio(numerator, denominator)``
    (roi, conversion_rate: both in one unit) are plain functions made for the currency, a report
    calls them ~60,000 times; a quotient over 0 is None."""

    __slots__ = ("money", "per", "places", "ratio")

    def __init__(self, places: int) -> None:
        if not 0 <= places <= SCALE:
            raise ValueError(f"A currency with {places} decimal places is finer than the money columns.")
        self.places = places
        step = 10 ** (SCALE - places)
        half = step // 2  # step is 1 or even
        base, pattern = _pattern(places)
        one, ratio_pattern = _pattern(RATIO_PLACES)
        zero: str = pattern % (0, 0)

        def money(units: int) -> str:
            text: str
            if units > 0:
                text = pattern % divmod((units + half) // step, base)
                return text
            if units < 0:
                text = pattern % divmod((half - units) // step, base)
                return "-" + text
            return zero

        def per(units: int, count: int) -> str | None:
            if not count:
                return None
            d = step * count
            text: str
            if units >= 0:
                text = pattern % divmod((2 * units + d) // (2 * d), base)
                return text
            text = pattern % divmod((d - 2 * units) // (2 * d), base)
            return "-" + text

        def ratio(numerator: int, denominator: int) -> str | None:
            text: str
            if numerator >= 0 and denominator > 0:  # most of them
                text = ratio_pattern % divmod((2 * numerator * one + denominator) // (2 * denominator), one)
                return text
            if not denominator:
                return None
            d = abs(denominator)
            text = ratio_pattern % divmod((2 * abs(numerator) * one + d) // (2 * d), one)
            # Decimal's sign: a zero numerator over a negative denominator is "-0.000000".
            return "-" + text if (numerator < 0) != (denominator < 0) else text

        self.money, self.per, self.ratio = money, per, ratio


# ---------------------------------------------------------------- from ClickHouse
_HIGH = 2**64


def units_sql(decimal_sum: str, name: str) -> tuple[str, str]:
    """A money sum as units, in two Int64 columns ``name`` and ``name_hi`` (``units_of``).

    A sum of Decimal(18, 4) is a Decimal(38, 4), stored as the Int128 count of 0.0001 that
    ``reinterpretAsInt128`` hands over exactly. The client reads Int64 columns in bulk but
    Int128 ones value by value in Python (~7 ms for the 5 sums of 6,000 rows): the low 64 bits
    go as they are (``toInt64`` wraps) and the rest, 0 for any sum below 9.2 * 10^14 currency
    units, beside them."""
    units = f"reinterpretAsInt128({decimal_sum})"
    return f"toInt64({units}) AS {name}", f"toInt64(intDiv({units} - {name}, toInt128('{_HIGH}'))) AS {name}_hi"


def units_of(low: Sequence[int], high: Sequence[int]) -> Sequence[int]:
    """The sums of ``units_sql``'s two columns."""
    if not any(high):
        return low
    return [h * _HIGH + lo for lo, h in zip(low, high, strict=True)]
