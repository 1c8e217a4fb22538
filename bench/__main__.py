"""Run every benchmark and write BENCHMARKS.md.

    python -m bench            # full sizes (an hour or so on two cores)
    python -m bench --quick    # small sizes (CI: tests/e2e/test_bench.py)
    python -m bench --only merkle,records

Two kinds of figure (bench/common.py): ratios, ours against a reference
measured in the same run on the same data (hashlib, PyNaCl's verify rate,
pymerkle, SQLite, the in-process node, ...), which mean the same on any
machine; and absolute budgets, a measured value against a constant (a
latency budget, a rate an issue names), which depend on the machine.

Exits 1 when a goal or budget is missed, or a suite fails (the others still run).  With --quick the goals that only
full sizes can meet are not checked (each such row says why).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import traceback
from pathlib import Path

from bench import (
    backup,
    cluster,
    collab,
    explorer,
    federation,
    ha,
    merkle,
    messaging,
    node,
    receipts,
    records,
    replication,
    simulation,
    storage,
    tsa,
)
from bench.common import Row, checked, format_rows, kind, met, missed, unchecked_in_quick, verdict

SUITES = {
    "merkle": merkle,
    "records": records,
    "storage": storage,
    "receipts": receipts,
    "node": node,
    "federation": federation,
    "cluster": cluster,
    "ha": ha,
    "collab": collab,
    "replication": replication,
    "backup": backup,
    "explorer": explorer,
    "messaging": messaging,
    "simulation": simulation,
    "tsa": tsa,
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        sqlite = __import__("sqlite3").sqlite_version
    except Exception:
        sqlite = "?"
    return (f"{os.cpu_count()} cores ({cpu}){mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; SQLite {sqlite}")  # fmt: skip


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


class LoadSampler:
    """Samples the 1-minute load average every few seconds while a suite runs
    (the machine is shared: the load says how much of it the suite had)."""

    def __init__(self, every: float = 3.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(os.getloadavg()[0])
            except OSError:
                return
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "?"
        mean = sum(self.samples) / len(self.samples)
        return f"mean {mean:.1f}, max {max(self.samples):.1f} (2 cores)"


HEADER = """\
Two kinds of figure, in two tables per section:

- **Ratios**: ours against a reference measured in the same run, on the same
  data and machine (goal: ratio >= goal). These mean the same on any machine;
  they are the figures the issues name.
- **Absolute budgets**: a measured value against a constant (a latency budget,
  a rate an issue names, a theoretical count), with the side of it that meets
  the budget (`better`). These depend on the machine, here a shared one: read
  them with the load average each section notes (a load above 2 means other
  work was taking CPU time from the benchmark). Rows marked "(information)"
  have no goal.

Values measured for context only (fill rates, build times) follow the tables.
`python -m bench` exits 1 when a goal or budget is missed. `--quick` (run in
CI by `tests/e2e/test_bench.py`) uses small sizes and does not check the
goals that only full sizes can meet; they are listed at the end."""


def to_markdown(results: dict[str, list[Row]], quick: bool, load: tuple[str, str],
                loads: dict[str, str], errors: dict[str, str]) -> str:  # fmt: skip
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (`make bench`, every suite in one command; "
        "`--only a,b` re-measures those suites and keeps the others). Each section "
        "says when and at which commit it was measured.",
        "",
        f"Machine: {machine()}. Shared with other work while measured: load average "
        f"(1 / 5 / 15 min) {load[0]} at the start of the run, {load[1]} at its end.",
        "",
        HEADER,
        "",
    ]
    for suite, rows in results.items():
        lines += suite_section(suite, rows, quick, commit + ("+" if dirty else ""),
                               loads.get(suite), errors.get(suite))  # fmt: skip
    return "\n".join(lines)


def _cell(value: float, unit: str = "") -> str:
    text = f"{value:,.1f}" if abs(value) >= 0.05 or value == 0 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def suite_section(suite: str, rows: list[Row], quick: bool, commit: str,
                  load: str | None = None, error: str | None = None) -> list[str]:  # fmt: skip
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {suite}",
        "",
        f"Measured {stamp}, commit {commit or '?'}{' (quick sizes)' if quick else ''}"
        + (f"; load average (1 min) while it ran: {load}" if load else "")
        + ".",
        "",
    ]
    if error:
        lines += [f"**The suite failed** (the run exits 1): `{error}`", ""]
    ratios = [r for r in rows if kind(r) == "ratio"]
    budgets = [r for r in rows if kind(r) == "budget"]
    infos = [r for r in rows if kind(r) == "info"]
    if ratios:
        lines += ["| ratio (same run) | ours | reference | ratio | goal | met |",
                  "|---|---:|---:|---:|---:|:---:|"]  # fmt: skip
        for r in ratios:
            goal = "-" if r["goal"] is None else f"{r['goal']:g}"
            lines.append(f"| {r['name']} | {_cell(r['ours'], r['unit'])} | {_cell(r['reference'])} | "
                         f"{r['ratio']:.3g} | {goal} | {_met(r, quick)} |")  # fmt: skip
        lines.append("")
    if budgets:
        lines += ["| absolute budget | measured | budget | better | met |",
                  "|---|---:|---:|:---:|:---:|"]  # fmt: skip
        for r in budgets:
            limit = _cell(r["budget"], r["unit"])
            if r["goal"] is None:
                limit += " (information)"
            lines.append(f"| {r['name']} | {_cell(r['ours'], r['unit'])} | {limit} | {r['better']} | "
                         f"{_met(r, quick)} |")  # fmt: skip
        lines.append("")
    if infos:
        lines += [f"For context: {r['name']}: {_cell(r['ours'], r['unit'])}." for r in infos]
        lines.append("")
    return lines


def _met(r: Row, quick: bool) -> str:
    v = verdict(r, quick)
    if v == "NO":
        return "**no**"
    if v.startswith("not checked"):
        return f"not checked (quick): {r['full_only']}"
    return v


def quick_section(results: dict[str, list[Row]]) -> list[str]:
    """The goals that ``--quick`` does not check, and why."""
    lines = ["## Goals not checked with --quick", "",
             "Quick sizes cannot meet these goals; `python -m bench --quick` shows them without"
             " checking them (the full run checks them):", ""]  # fmt: skip
    for suite, rows in results.items():
        for r in unchecked_in_quick(rows):
            lines.append(f"- {suite}: {r['name']} (goal {r['goal']:g}): {r['full_only']}.")
    return [*lines, ""]


def merge_sections(old: str, new: str) -> str:
    """``new`` with the suites it lacks taken from ``old`` (a partial run with
    ``--only`` updates its own sections and keeps the others' last results),
    in the order of SUITES."""

    def sections(text: str) -> tuple[str, dict[str, str]]:
        head, *parts = text.split("\n## ")
        return head, {p.split("\n", 1)[0].strip(): "## " + p.rstrip("\n") + "\n" for p in parts}

    head, fresh = sections(new)
    _, kept = sections(old)
    merged = {**kept, **fresh}
    order = [s for s in SUITES if s in merged] + [s for s in merged if s not in SUITES]
    return head.rstrip("\n") + "\n\n" + "\n".join(merged[s] for s in order)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="small sizes (minutes, for CI)")
    parser.add_argument("--only", default="", help="comma-separated suites: " + ",".join(SUITES))
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="do not write --out")
    parser.add_argument("--json", default="", help="also write every row and its verdict here")
    args = parser.parse_args(argv)
    chosen = [s for s in (args.only.split(",") if args.only else SUITES) if s]
    unknown = [s for s in chosen if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite {unknown[0]!r}; the suites are {', '.join(SUITES)}")
    started = load_average()
    results: dict[str, list[Row]] = {}
    loads: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        with LoadSampler() as sampler:
            try:
                results[name] = SUITES[name].run(args.quick)
            except Exception as e:  # reported, and the other suites still run
                traceback.print_exc()
                errors[name] = f"{type(e).__name__}: {e}"
                results[name] = []
        loads[name] = sampler.summary()
        print(format_rows(results[name], args.quick), flush=True)
        print(f"load average while it ran: {loads[name]}", file=sys.stderr, flush=True)
    load = (started, load_average())
    failed = [(suite, r) for suite, rows in results.items() for r in missed(rows, args.quick)]
    if not args.no_write:
        text = to_markdown(results, args.quick, load, loads, errors) + "\n"
        out = Path(args.out)
        if args.only and out.exists():
            text = merge_sections(out.read_text(), text)
        if args.quick or not args.only:
            text = text.rstrip("\n") + "\n\n" + "\n".join(quick_section(results))
        out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        doc = {"quick": args.quick, "load": load, "errors": errors, "suites": {
            suite: [{**r, "met": met(r), "checked": checked(r, args.quick)} for r in rows]
            for suite, rows in results.items()}}  # fmt: skip
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if args.quick:
        skipped = [(suite, r) for suite, rows in results.items() for r in unchecked_in_quick(rows)]
        for suite, r in skipped:
            print(
                f"not checked with --quick: {suite}: {r['name']}: {r['full_only']}", file=sys.stderr
            )
    for suite, r in failed:
        print(f"goal missed: {suite}: {r['name']}", file=sys.stderr)
    for suite, error in errors.items():
        print(f"suite failed: {suite}: {error}", file=sys.stderr)
    return 1 if failed or errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
