"""Redis's number syntax, arithmetic and formatting for string values.

Integers follow string2ll. INCRBYFLOAT follows string2ld, x86's 80-bit long double (64-bit
significand, round half to even) and ld2string: redis-server computes in that format, so it is
emulated here with exact integers, and every reply matches Redis digit for digit.

Counter totals that are not integers are Decimals holding exact values. Their sums must stay
exact (every replica must read the same digits whatever order it adds them in), so all Decimal
arithmetic goes through ``add``/``subtract``, which never round.
"""

from __future__ import annotations

import re
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction
from typing import Final

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

Number = int | Decimal

# A long double: an exact Fraction when finite, a float for +-inf and NaN.
LongDouble = Fraction | float

# Arithmetic on exact Decimals: unbounded precision, so no operation ever rounds.
EXACT: Final = Context(prec=MAX_PREC, rounding=ROUND_HALF_EVEN, Emax=MAX_EMAX, Emin=MIN_EMIN)

# x87 extended precision: a 64-bit significand; the smallest subnormal is 2**-16445 and the
# greatest finite value is (2**64 - 1) * 2**16320.
_LD_BITS: Final = 64
_LD_MIN_LSB: Final = -16445
_LD_MAX_TOP: Final = 16383

# Redis's MAX_LONG_DOUBLE_CHARS: string2ld refuses strings this long or longer.
_MAX_FLOAT_CHARS: Final = 5 * 1024

# Decimal exponents (of the leading digit) past which a nonzero value surely overflows
# (1e4933 > max) or rounds to zero (1e-4952 < 2**-16446); in between, rounding decides.
_DEC_SURE_OVERFLOW: Final = 4933
_DEC_SURE_UNDERFLOW: Final = -4953

_DECIMAL_TEXT: Final = re.compile(rb"([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?)(\d+))?")
_HEX_TEXT: Final = re.compile(
    rb"([+-]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?)(\d+))?"
)
_INF_TEXT: Final = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)

_QUANTUM: Final = Decimal(1).scaleb(-17)  # %.17Lf prints 17 decimals


# -- integers -----------------------------------------------------------------------------------


def parse_int(s: bytes) -> int | None:
    """string2ll: an int64 written with no sign but '-', no leading zeros, no spaces."""
    n = len(s)
    if n == 0 or n > 20:
        return None
    if s == b"0":
        return 0
    neg = s[0] == 45
    digits = s[1:] if neg else s
    if not digits or not digits.isdigit() or digits[0] == 48:
        return None
    v = -int(digits) if neg else int(digits)
    return v if INT64_MIN <= v <= INT64_MAX else None


# -- exact sums -----------------------------------------------------------------------------------


def add(a: Number, b: Number) -> Number:
    """a + b, exactly."""
    if type(a) is int and type(b) is int:
        return a + b
    return EXACT.add(a, b)


def subtract(a: Number, b: Number) -> Number:
    """a - b, exactly."""
    if type(a) is int and type(b) is int:
        return a - b
    return EXACT.subtract(a, b)


def normalize(v: Number) -> Number:
    """An integral Decimal within int64 as an int, so that integer counters keep int arithmetic
    (and msgpack, which carries no wider ints, can ship them as they are)."""
    if (
        isinstance(v, Decimal)
        and v.is_finite()
        and v == v.to_integral_value(context=EXACT)
        and INT64_MIN <= v <= INT64_MAX
    ):
        return int(v)
    return v


# -- floats as Redis reads them (string2ld) ------------------------------------------------------


def parse_float(s: bytes) -> Decimal | None:
    """The exact value of ``s`` when Redis's string2ld accepts it, else None.

    string2ld is strtold with no leading space, nothing after the number, no NaN, and no
    value that overflows or underflows to zero; +-inf are accepted. Hex floats are too.
    """
    if not s or len(s) >= _MAX_FLOAT_CHARS:
        return None
    m = _DECIMAL_TEXT.fullmatch(s)
    if m is not None:
        return _decimal_value(m)
    m = _HEX_TEXT.fullmatch(s)
    if m is not None:
        return _hex_value(m)
    m = _INF_TEXT.fullmatch(s)
    if m is not None:
        return Decimal("-Infinity") if m.group(1) == b"-" else Decimal("Infinity")
    return None


def _decimal_value(m: re.Match[bytes]) -> Decimal | None:
    sign, whole, frac, exp_sign, exp_digits = m.groups()
    digits = (whole or b"") + (frac or b"")
    if not digits:
        return None
    negative = 1 if sign == b"-" else 0
    significant = digits.lstrip(b"0")
    if not significant:
        return Decimal((negative, (0,), 0))  # a zero, whatever its exponent
    exponent = 0
    if exp_digits is not None:
        exp_digits = exp_digits.lstrip(b"0") or b"0"
        if len(exp_digits) > 7:  # |exponent| >= 1e7: far outside the long double range
            return None
        exponent = -int(exp_digits) if exp_sign == b"-" else int(exp_digits)
    exponent -= len(frac or b"")
    leading = exponent + len(significant) - 1  # the decimal exponent of the leading digit
    if leading >= _DEC_SURE_OVERFLOW or leading <= _DEC_SURE_UNDERFLOW:
        return None
    d = Decimal((negative, tuple(c - 48 for c in significant), exponent))
    if (leading >= _DEC_SURE_OVERFLOW - 1 or leading <= _DEC_SURE_UNDERFLOW + 3) and not _fits(
        Fraction(d)
    ):
        return None
    return d


def _hex_value(m: re.Match[bytes]) -> Decimal | None:
    sign, whole, frac, exp_sign, exp_digits = m.groups()
    whole = whole or b""
    frac = frac or b""
    if not whole and not frac:
        return None
    mantissa = int(whole + frac, 16)
    exponent = 0
    if exp_digits is not None:
        exp_digits = exp_digits.lstrip(b"0") or b"0"
        if len(exp_digits) > 7:
            return None if mantissa else Decimal((1 if sign == b"-" else 0, (0,), 0))
        exponent = -int(exp_digits) if exp_sign == b"-" else int(exp_digits)
    exponent -= 4 * len(frac)
    if mantissa == 0:
        return Decimal((1 if sign == b"-" else 0, (0,), 0))
    top = mantissa.bit_length() - 1 + exponent
    if top > _LD_MAX_TOP or top < _LD_MIN_LSB - 2:
        return None
    if not _fits(Fraction(mantissa) * Fraction(2) ** exponent):
        return None
    d = _binary_to_decimal(mantissa, exponent)
    return d.copy_negate() if sign == b"-" else d  # copy_negate never rounds; unary minus does


def _fits(x: Fraction) -> bool:
    """Whether strtold would return x without ERANGE to zero or infinity."""
    r = round_long_double(x)
    return isinstance(r, Fraction) and (r != 0 or x == 0)


def _binary_to_decimal(mantissa: int, exponent: int) -> Decimal:
    """mantissa * 2**exponent as an exact Decimal (every binary fraction is a finite decimal)."""
    if exponent >= 0:
        return Decimal(mantissa << exponent)
    return Decimal(mantissa * 5**-exponent).scaleb(exponent, EXACT)


# -- long double arithmetic ------------------------------------------------------------------


def round_long_double(x: Fraction) -> LongDouble:
    """The long double nearest to x (ties to even), or +-inf when x is beyond the range."""
    if x == 0:
        return Fraction(0)
    neg = x < 0
    n, d = (-x.numerator if neg else x.numerator), x.denominator
    top = n.bit_length() - d.bit_length()  # floor(log2(x)) is top or top - 1
    if (n << -top if top < 0 else n) < (d << top if top > 0 else d):
        top -= 1
    lsb = max(top - (_LD_BITS - 1), _LD_MIN_LSB)
    num = n << -lsb if lsb < 0 else n
    den = d << lsb if lsb > 0 else d
    q, r = divmod(num, den)
    if 2 * r > den or (2 * r == den and q & 1):
        q += 1
    if q.bit_length() > _LD_BITS:
        q >>= 1
        lsb += 1
    if q.bit_length() - 1 + lsb > _LD_MAX_TOP:
        return float("-inf") if neg else float("inf")
    v = Fraction(q << lsb) if lsb >= 0 else Fraction(q, 1 << -lsb)
    return -v if neg else v


def parse_long_double(s: bytes) -> LongDouble | None:
    """string2ld: the long double Redis reads from ``s``, or None when it refuses it."""
    d = parse_float(s)
    if d is None:
        return None
    if not d.is_finite():
        return float(d)
    return round_long_double(Fraction(d))


def add_long_double(a: LongDouble, b: LongDouble) -> LongDouble:
    """a + b rounded as the x87 FPU does; inf or NaN when the sum leaves the range."""
    if isinstance(a, float):
        return a + b if isinstance(b, float) else a  # a finite addend leaves inf as it is
    if isinstance(b, float):
        return b
    return round_long_double(a + b)


def format_long_double(v: Fraction) -> bytes:
    """ld2string(LD_STR_HUMAN) of a finite long double."""
    den = v.denominator
    exponent = -(den.bit_length() - 1)
    return format_number(_binary_to_decimal(v.numerator, exponent))


# -- formatting ---------------------------------------------------------------------------------


def format_number(v: Number) -> bytes:
    """ld2string(LD_STR_HUMAN): '%.17Lf' with trailing zeros (and point) trimmed."""
    if isinstance(v, int):
        return b"%d" % v
    if not v.is_finite():
        return b"inf" if v > 0 else b"-inf"
    text = f"{v.quantize(_QUANTUM, context=EXACT):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.encode()
