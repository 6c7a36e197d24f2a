"""Every differential case file, case by case, against gossipkv and redis-server in RESP2 and 3."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.differential.harness import (
    CASES_DIR,
    Case,
    CaseFormatError,
    SetupFailed,
    format_mismatches,
    parse_cases,
    run_case,
)
from tests.servers import ServerProcess


def _collect() -> list[object]:
    """One param per case; a file that does not parse becomes one failing param, not a crash."""
    params: list[object] = []
    for path in sorted(CASES_DIR.glob("*.txt")):
        try:
            cases = parse_cases(path.read_text(encoding="utf-8"), path)
        except CaseFormatError as exc:
            params.append(pytest.param(exc, id=f"{path.stem}-unparsable"))
            continue
        params.extend(pytest.param(c, id=c.id) for c in cases)
    return params


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
@pytest.mark.parametrize("case", _collect())
def test_case_matches_redis(
    case: Case | CaseFormatError, protocol: int, gkv: ServerProcess, redis_ref: ServerProcess
) -> None:
    if isinstance(case, CaseFormatError):
        pytest.fail(f"case file does not parse: {case}", pytrace=False)
    setup_error = ""
    try:
        mismatches = run_case(case, gkv.port, redis_ref.port, protocol)
    except SetupFailed as exc:
        setup_error = str(exc)
    if setup_error:
        pytest.fail(f"{case.id} ({case.where}): setup failed: {setup_error}", pytrace=False)
    if mismatches:
        pytest.fail(format_mismatches(case, mismatches), pytrace=False)


@pytest.mark.parametrize("case", _collect())
def test_case_is_deterministic_on_redis(
    case: Case | CaseFormatError, redis_ref: ServerProcess, redis_twin: ServerProcess
) -> None:
    """A case must give the same replies on two redis-servers, or it cannot judge gossipkv."""
    if isinstance(case, CaseFormatError):
        pytest.fail(f"case file does not parse: {case}", pytrace=False)
    mismatches = run_case(case, redis_twin.port, redis_ref.port, 2)
    if mismatches:
        pytest.fail(
            "replies differ between two redis-servers; mark the line !sorted, !type or !scan\n"
            + format_mismatches(case, mismatches),
            pytrace=False,
        )


def test_case_format() -> None:
    text = """
# comment
---
!sorted KEYS *
SET "a key" "two words"
---
---
!sleep-ms 5
!scan HSCAN h 0 COUNT 1
"""
    first, second = parse_cases(text, Path("fmt.txt"))
    assert (first.id, second.id) == ("fmt-1-KEYS", "fmt-2-HSCAN")
    assert [(s.directive, s.args, s.lineno) for s in first.steps] == [
        ("!sorted", ("KEYS", "*"), 4),
        (None, ("SET", "a key", "two words"), 5),
    ]
    assert [(s.directive, s.sleep_ms) for s in second.steps] == [("!sleep-ms", 5), ("!scan", 0)]
    for bad in ("!nosuch GET k", "!sleep-ms x", "!scan GET k", "!sleep-ms 99999", 'GET "open'):
        with pytest.raises(CaseFormatError):
            parse_cases(bad, Path("bad.txt"))


def test_harness_reports_a_difference(redis_ref: ServerProcess) -> None:
    """Both sides on one server share state, so the second INCR answers 2: a mismatch to report."""
    (case,) = parse_cases("SET same 1\nINCR n\n!type INCR n\n", Path("self.txt"))
    mismatches = run_case(case, redis_ref.port, redis_ref.port, 2)
    assert [(m.lineno, m.expected, m.actual) for m in mismatches] == [
        (2, "(integer) 1", "(integer) 2")
    ]
