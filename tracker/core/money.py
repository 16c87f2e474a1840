"""Money: Decimal end to end, ISO 4217 codes and their minor units.

Leaf module. Amounts are rounded half-up to the currency's minor unit
(JPY 0 decimals, USD 2, KWD 3).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

# ISO 4217 active codes -> minor unit digits (list of 2024; X* funds/metals omitted).
_THREE = {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
_ZERO = {
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
    "XAF", "XOF", "XPF",
}
_TWO = {
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CNY", "COP",
    "CRC", "CUP", "CVE", "CZK", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR",
    "JMD", "KES", "KGS", "KHR", "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL",
    "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB",
    "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP",
    "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD", "UZS", "VES", "WST",
    "XCD", "YER", "ZAR", "ZMW", "ZWL",
}

MINOR_UNITS: dict[str, int] = {**{c: 2 for c in _TWO}, **{c: 0 for c in _ZERO}, **{c: 3 for c in _THREE}}

ZERO = Decimal(0)

# The contract's decimal string: ASCII digits, an optional sign and fraction. Python's
# Decimal() would also take "1_000", full-width digits, "1E+2", " 10" and "NaN"; none is money.
DECIMAL_TEXT = re.compile(r"-?[0-9]+(\.[0-9]+)?")
DECIMAL_PATTERN = "^" + DECIMAL_TEXT.pattern + "$"
MAX_DECIMAL_TEXT = 40

# The money columns (amounts, refunds, commissions, fees) are ClickHouse Decimal(18, 4):
# 14 digits before the point, 4 after. A value beyond them cannot be inserted.
MONEY_PRECISION, MONEY_SCALE = 18, 4
MONEY_COLUMN_MAX = Decimal("99999999999999.9999")


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in MINOR_UNITS


def minor_units(currency: str) -> int:
    return MINOR_UNITS[currency]


# The minor unit of each currency (0.01 for USD), made once: every money value of every postback is
# rounded to one, and Decimal(1).scaleb() each time was a tenth of decoding an order's state.
_QUANTA: dict[str, Decimal] = {c: Decimal(1).scaleb(-n) for c, n in MINOR_UNITS.items()}


def quantum(currency: str) -> Decimal:
    return _QUANTA[currency]


# Wide enough to round any amount a payload may carry (platform figures are read below 10^40) so
# that one too large to store is refused by the column check with its reason, not by an exception.
# Half-up is the context's own rounding: ``_ROUNDING.quantize(a, q)`` is
# ``a.quantize(q, rounding=ROUND_HALF_UP, context=...)`` without the keyword parsing, half its
# cost; a replay rounds five values (tests/core/test_money.py compares the two forms).
_ROUNDING = Context(prec=60, rounding=ROUND_HALF_UP)
_quantize = _ROUNDING.quantize


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit."""
    return _quantize(amount, _QUANTA[currency])


def round_to(amount: Decimal, quantum: Decimal) -> Decimal:
    """``round_money`` with the currency's ``quantum`` looked up already."""
    return _quantize(amount, quantum)


def plain(value: Decimal) -> Decimal:
    """A Decimal without a storage column's trailing zeros (10.0000 -> 10, 2.5000 -> 2.5)."""
    if value == value.to_integral_value():
        return value.quantize(Decimal(1))
    return value.normalize()


def parse_decimal_text(value: object, field: str = "value") -> Decimal:
    """A Decimal from a decimal string such as "49.90"; ValueError naming ``field`` otherwise.

    JSON numbers are refused too: the contract sends money as strings, so that no client
    rounds it through a float on the way.
    """
    if not isinstance(value, str):
        kind = "a JSON number" if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool) else (
            "null" if value is None else f"a {type(value).__name__}")
        raise ValueError(f'{field} must be a decimal string such as "49.90", not {kind}.'.lstrip())
    if len(value) > MAX_DECIMAL_TEXT or not DECIMAL_TEXT.fullmatch(value):
        shown = value if len(value) <= MAX_DECIMAL_TEXT else value[:MAX_DECIMAL_TEXT] + "..."
        raise ValueError(
            f'{field} {shown!r} is not a decimal string such as "49.90" (digits, an optional "-" and '
            'fraction; no spaces, exponents or digit separators).'.lstrip()
        )
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only what Decimal reads
        raise ValueError(f"{field} {value!r} is not a decimal amount.".lstrip()) from None


def parse_amount(value: object, currency: str, *, field: str = "amount") -> Decimal:
    """A positive amount with at most the currency's decimals, from a decimal string; ValueError otherwise."""
    amount = parse_decimal_text(value, field)
    if amount <= 0:
        raise ValueError(f"{field} must be greater than 0, got {amount}.".lstrip())
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > MINOR_UNITS[currency]:
        raise ValueError(
            f"{field} {amount} has more decimals than {currency} allows ({MINOR_UNITS[currency]}).".lstrip())
    if amount >= Decimal("1e13"):
        raise ValueError(f"{field} {amount} is too large.".lstrip())
    return amount


def fits_column(value: Decimal, precision: int = MONEY_PRECISION, scale: int = MONEY_SCALE) -> bool:
    """Whether ``value`` can be stored in a ClickHouse ``Decimal(precision, scale)`` column as it is."""
    if not value.is_finite():
        return False
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return -exponent <= scale and abs(value) < Decimal(10) ** (precision - scale)
