"""Redis's glob matching (util.c stringmatchlen), byte for byte, for KEYS and the SCAN family.

Redis's matcher recurses at every ``*``, but with its ``skipLongerMatches`` cut a failed tail
after a later ``*`` fails the whole match; so only the most recent ``*`` is ever retried, and the
recursion unrolls into the loop below. Its quirks are kept on purpose: bytes compare as signed C
chars in ``[a-z]`` ranges, an unterminated ``[`` set ends at the pattern's end, a ``*`` never
matches the empty rest of a string unless nothing but ``*`` follows, and a pattern that needs more
than 1000 nested ``*`` never matches (Redis's guard against abusive patterns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

_STAR: Final = 42  # *
_QUESTION: Final = 63  # ?
_OPEN: Final = 91  # [
_CLOSE: Final = 93  # ]
_CARET: Final = 94  # ^
_BACKSLASH: Final = 92  # \
_DASH: Final = 45  # -
_MAX_NESTING: Final = 1000


def _signed(b: int) -> int:
    """A byte as x86's signed ``char``: Redis compares range bounds that way."""
    return b - 256 if b > 127 else b


def stringmatch(pattern: bytes, string: bytes) -> bool:
    """Whether ``string`` matches the glob ``pattern`` exactly as Redis decides it."""
    plen = len(pattern)
    slen = len(string)
    p = s = 0
    back_p = back_s = -1  # the latest '*': where its tail starts, and the offset tried last
    stars = 0
    while True:
        outcome = _run(pattern, plen, p, string, slen, s)
        if outcome is True:
            return True
        if outcome is not False:
            # A '*' with more pattern after it: try the tail from here, then one byte later...
            stars += 1
            if stars > _MAX_NESTING:
                return False
            back_p, back_s = outcome
            p, s = outcome
            continue
        if back_p < 0:
            return False
        back_s += 1
        if back_s >= slen:
            return False
        p, s = back_p, back_s


def _run(
    pattern: bytes, plen: int, p: int, string: bytes, slen: int, s: int
) -> bool | tuple[int, int]:
    """Match from (p, s) up to the next '*': True/False, or (tail, s) at a '*' with a tail."""

    def at(i: int) -> int:
        # sds strings end in a NUL that Redis's matcher reads past the pattern's length.
        return pattern[i] if i < plen else 0

    while p < plen and s < slen:
        c = pattern[p]
        if c == _STAR:
            while at(p + 1) == _STAR:
                p += 1
            if plen - p == 1:
                return True
            return (p + 1, s)
        if c == _QUESTION:
            s += 1
        elif c == _OPEN:
            p += 1
            negate = at(p) == _CARET
            if negate:
                p += 1
            matched = False
            ch = string[s]
            while True:
                if at(p) == _BACKSLASH and plen - p >= 2:
                    p += 1
                    if pattern[p] == ch:
                        matched = True
                elif at(p) == _CLOSE:
                    break
                elif p == plen:
                    p -= 1
                    break
                elif plen - p >= 3 and pattern[p + 1] == _DASH:
                    start = _signed(pattern[p])
                    end = _signed(pattern[p + 2])
                    if start > end:
                        start, end = end, start
                    p += 2
                    if start <= _signed(ch) <= end:
                        matched = True
                elif pattern[p] == ch:
                    matched = True
                p += 1
            if negate:
                matched = not matched
            if not matched:
                return False
            s += 1
        else:
            if c == _BACKSLASH and plen - p >= 2:
                p += 1
                c = pattern[p]
            if c != string[s]:
                return False
            s += 1
        p += 1
        if s == slen:
            while at(p) == _STAR:
                p += 1
            break
    return p == plen and s == slen


_SPECIAL: Final = frozenset(b"*?[\\")


def compile_glob(pattern: bytes) -> Callable[[bytes], bool]:
    """A matcher for ``pattern``: the common literal/prefix/suffix/infix shapes skip the loop.

    Each shortcut agrees with ``stringmatch`` on every string, including the empty one.
    """
    stars = pattern.count(b"*")
    if not any(b in _SPECIAL for b in pattern.replace(b"*", b"")):
        literal = pattern.replace(b"*", b"")
        if stars == 0:
            return lambda key: key == literal
        if literal:
            if stars == 1 and pattern.endswith(b"*"):
                return lambda key: key.startswith(literal)
            if stars == 1 and pattern.startswith(b"*"):
                return lambda key: key.endswith(literal)
            if stars == 2 and pattern.startswith(b"*") and pattern.endswith(b"*"):
                return lambda key: literal in key
    return lambda key: stringmatch(pattern, key)
