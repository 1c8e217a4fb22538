"""What every benchmark suite shares: the rows, their verdicts, the plain-text table, the command line.

Three kinds of row:

* ``ratio`` (:func:`row`): ours against a reference measured in the same run
  on the same data; the goal is a lower bound on ``ours / reference``.  These
  mean the same on any machine.
* ``budget`` (:func:`budget`): a measured value against a constant (a latency
  budget, a rate an issue names, a theoretical count).  These depend on the
  machine; ``better`` says which side of the budget meets it, and ``checked``
  whether it is a goal (else it is shown for information).
* ``info`` (:func:`info`): a measured value with nothing to compare it to
  (a fill rate, a build time), shown for context.

A goal stated for full sizes (``full_only``) is not checked with ``--quick``,
where the sizes cannot meet it; the row says so.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

Row = dict[str, Any]


def row(
    name: str,
    ours: float,
    reference: float,
    goal: float | None,
    unit: str,
    *,
    full_only: str | None = None,
) -> Row:
    """``ours`` against ``reference`` measured in the same run (goal: ratio >= goal).
    ``full_only``: why quick sizes cannot meet the goal (it is then checked in full mode only)."""
    return {"kind": "ratio", "name": name, "ours": ours, "reference": reference,
            "ratio": ours / reference if reference else float("inf"), "goal": goal, "unit": unit,
            "full_only": full_only}  # fmt: skip


def budget(
    name: str,
    measured: float,
    limit: float,
    unit: str,
    *,
    better: str,
    checked: bool = True,
    judged: bool = True,
    full_only: str | None = None,
) -> Row:
    """``measured`` against the constant ``limit`` (``better``: "lower" or "higher");
    a goal if ``checked``, else shown for information (with whether it is met,
    unless not ``judged``: a constant that is a reference, not a budget)."""
    assert better in ("lower", "higher")
    return {"kind": "budget", "name": name, "ours": measured, "budget": limit, "unit": unit,
            "better": better, "goal": limit if checked else None, "judged": judged,
            "full_only": full_only}  # fmt: skip


def info(name: str, measured: float, unit: str) -> Row:
    """A measured value shown for context (no reference, no goal)."""
    return {"kind": "info", "name": name, "ours": measured, "unit": unit, "goal": None}


def kind(r: Row) -> str:
    return str(r.get("kind", "ratio"))


def met(r: Row) -> bool | None:
    """Whether the row meets its goal or budget (None: nothing to meet)."""
    if kind(r) == "info" or r.get("judged") is False:
        return None
    if kind(r) == "budget":
        if r["better"] == "lower":
            return bool(r["ours"] <= r["budget"])
        return bool(r["ours"] >= r["budget"])
    if r["goal"] is None:
        return None
    return bool(r["ratio"] >= r["goal"])


def checked(r: Row, quick: bool) -> bool:
    """Whether the row's goal counts for the exit status of this run."""
    return r["goal"] is not None and not (quick and r.get("full_only"))


def verdict(r: Row, quick: bool) -> str:
    """``yes``, ``NO``, ``-`` (no goal), or ``not checked`` (a full-size goal in a quick run)."""
    m = met(r)
    if r["goal"] is None or m is None:
        return "-" if m is None or kind(r) != "budget" else ("(yes)" if m else "(no)")
    if not checked(r, quick):
        return "not checked (quick)"
    return "yes" if m else "NO"


def missed(rows: Iterable[Row], quick: bool) -> list[Row]:
    """The rows whose checked goal is not met."""
    return [r for r in rows if checked(r, quick) and met(r) is False]


def unchecked_in_quick(rows: Iterable[Row]) -> list[Row]:
    """The rows with a goal that only full sizes can meet."""
    return [r for r in rows if r["goal"] is not None and r.get("full_only")]


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def format_rows(rows: list[Row], quick: bool = False) -> str:
    """The plain-text tables of benchmark rows: ratios, then absolute budgets, then context."""
    out: list[str] = []
    ratios = [r for r in rows if kind(r) == "ratio"]
    budgets = [r for r in rows if kind(r) == "budget"]
    infos = [r for r in rows if kind(r) == "info"]
    if ratios:
        out.append(
            f"{'ratio (same run)':<92} {'ours':>12} {'reference':>12} {'ratio':>9} {'goal':>6}  ok"
        )
        for r in ratios:
            goal = "-" if r["goal"] is None else fmt(r["goal"])
            out.append(f"{r['name']:<92} {fmt(r['ours']):>12} {fmt(r['reference']):>12} "
                       f"{fmt(r['ratio']):>9} {goal:>6}  {verdict(r, quick)}")  # fmt: skip
    if budgets:
        out.append(
            f"{'absolute budget':<92} {'measured':>12} {'budget':>12} {'better':>9} {'':>6}  ok"
        )
        for r in budgets:
            unit = r["unit"]
            out.append(f"{r['name']:<92} {fmt(r['ours']) + ' ' + unit:>12} {fmt(r['budget']):>12} "
                       f"{r['better']:>9} {'':>6}  {verdict(r, quick)}")  # fmt: skip
    for r in infos:
        out.append(f"(context) {r['name']}: {fmt(r['ours'])} {r['unit']}")
    return "\n".join(out)


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
    print(format_rows(rows, args.quick))
    return 1 if missed(rows, args.quick) else 0
