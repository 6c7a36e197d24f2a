"""``python -m chaos [--short] [scenario ...]``: run the scenarios (all by default), printing
each one's verdict line and a summary table; exit status 1 when any fails."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from chaos.scenarios import SCENARIOS, Result, run_scenario


def table(result: Result) -> Table:
    t = Table(title=f"{result.name}: {SCENARIOS[result.name][1]}", title_justify="left")
    t.add_column("check")
    t.add_column("keys", justify="right")
    t.add_column("verified", justify="right")
    t.add_column("violations", justify="right")
    for c in result.verdict.checks:
        style = "red" if c.violations else "green"
        t.add_row(c.name, str(c.keys), str(c.items), f"[{style}]{len(c.violations)}[/]")
    digest = "[green]equal[/]" if result.verdict.digests_equal else "[red]differ[/]"
    t.add_row("DEBUG DIGEST on every node", "", "", digest)
    for what, value in result.figures.items():
        t.add_row(f"[dim]{what}[/]", "", str(value), "")
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos")
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], default=[])
    parser.add_argument("--short", action="store_true", help="shorter phases, lighter load")
    args = parser.parse_args(argv)
    names = args.scenarios or list(SCENARIOS)
    console = Console(highlight=False, width=120)
    results: list[Result] = []
    for name in names:
        console.print(f"[bold]{name}[/]: {SCENARIOS[name][1]} ...")
        result = run_scenario(name, short=args.short)
        results.append(result)
        console.print(result.line(), markup=False)
        console.print(table(result))
        for v in result.verdict.violations()[:10]:
            console.print(f"  [red]{v}[/]")
        if not result.ok:
            console.print(f"  node logs: {result.logs}", markup=False)
    summary = Table(title="chaos summary", title_justify="left")
    for col in ("scenario", "verdict", "acknowledged", "uncertain", "converged in", "violations"):
        summary.add_column(col)
    for r in results:
        summary.add_row(
            r.name, "[green]PASS[/]" if r.ok else "[red]FAIL[/]", str(r.acknowledged),
            str(r.uncertain), f"{r.converge_s:.1f} s" if r.converged else "no",
            str(len(r.verdict.violations())),
        )
    console.print(summary)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
