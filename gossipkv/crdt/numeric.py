"""Redis's number syntax and formatting for string values (string2ll, strtold, ld2string)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Number = int | Decimal


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


def parse_float(s: bytes) -> Decimal | None:
    """strtold as Redis uses it for INCRBYFLOAT: no spaces, no NaN, finite or +-inf."""
    if not s or len(s) > 5000 or s[0] in b" \t\n\r\v\f" or s[-1] in b" \t\n\r\v\f":
        return None
    try:
        text = s.decode("ascii")
    except UnicodeDecodeError:
        return None
    low = text.lower()
    if "nan" in low or "_" in text:
        return None
    if low.startswith("0x") or low.startswith("-0x") or low.startswith("+0x"):
        try:
            return Decimal(float.fromhex(text))
        except ValueError:
            return None
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    return d


def format_number(v: Number) -> bytes:
    """ld2string(LD_STR_HUMAN): '%.17Lf' with trailing zeros (and point) trimmed."""
    if isinstance(v, int):
        return b"%d" % v
    if v.is_infinite():
        return b"inf" if v > 0 else b"-inf"
    with localcontext() as ctx:
        ctx.prec = 200
        q = v.quantize(Decimal(1).scaleb(-17))
    text = f"{q:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text.encode()


def is_long_double_finite(v: Decimal) -> bool:
    """Whether a long double could hold ``v`` (|v| < ~1.19e4932)."""
    return v.is_finite() and (v == 0 or v.adjusted() < 4932)
