"""What every benchmark suite shares: the row, the plain-text table, the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


def row(name: str, ours: float, reference: float, goal: float | None, unit: str) -> Row:
    """One figure: ``ours`` against ``reference`` measured in the same run (goal: ratio >= goal)."""
    return {"name": name, "ours": ours, "reference": reference,
            "ratio": ours / reference if reference else float("inf"), "goal": goal, "unit": unit}  # fmt: skip


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def format_rows(rows: list[Row]) -> str:
    """A plain-text table of benchmark rows."""
    lines = [f"{'benchmark':<92} {'ours':>12} {'reference':>12} {'ratio':>9} {'goal':>6}  ok"]
    for r in rows:
        goal = r["goal"]
        ok = "-" if goal is None else ("yes" if r["ratio"] >= goal else "NO")
        lines.append(
            f"{r['name']:<92} {fmt(r['ours']):>12} {fmt(r['reference']):>12} "
            f"{fmt(r['ratio']):>9} {'-' if goal is None else fmt(goal):>6}  {ok}"
        )
    return "\n".join(lines)


def suite_main(
    run: Callable[[bool], list[Row]],
    prog: str,
    doc: str | None,
    argv: list[str] | None = None,
    quick_help: str = "small sizes",
) -> int:
    """``python -m bench.<suite> [--quick]``: print the suite's table; exit 1 if a goal is missed."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    rows = run(args.quick)
    print(format_rows(rows))
    return 1 if any(r["goal"] is not None and r["ratio"] < r["goal"] for r in rows) else 0
