"""Run every benchmark and write BENCHMARKS.md.

    python -m bench            # full sizes (minutes)
    python -m bench --quick    # small sizes (CI smoke)
    python -m bench --only merkle,records

Every figure is a ratio measured in one run against a reference measured in
the same run (hashlib, PyNaCl's verify rate, pymerkle, SQLite, ...), so the
table means the same on any machine; absolute numbers are shown for context.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench import (
    backup,
    cluster,
    collab,
    explorer,
    federation,
    merkle,
    messaging,
    node,
    records,
    replication,
    simulation,
    storage,
    tsa,
)
from bench.common import format_rows

SUITES = {
    "merkle": merkle,
    "records": records,
    "storage": storage,
    "node": node,
    "federation": federation,
    "cluster": cluster,
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


def to_markdown(results: dict[str, list[dict]], quick: bool) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (`make bench`, every suite in one command; "
        "`--only a,b` re-measures those suites and keeps the others). Each section "
        "says when and at which commit it was measured.",
        "",
        f"Machine: {machine()}.",
        "",
        "Each row is a ratio measured in one run: ours against the named reference on the",
        "same data (goal: ratio >= goal). Absolute numbers are noisy on shared machines;",
        "the ratios are the figures the issues name.",
        "",
    ]
    for suite, rows in results.items():
        lines += suite_section(suite, rows, quick, commit)
    return "\n".join(lines)


def suite_section(suite: str, rows: list[dict], quick: bool, commit: str) -> list[str]:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {suite}",
        "",
        f"Measured {stamp}, commit {commit or '?'}{' (quick sizes)' if quick else ''}.",
        "",
        "| benchmark | ours | reference | ratio | goal | met |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        goal = r["goal"]
        met = "-" if goal is None else ("yes" if r["ratio"] >= goal else "**no**")
        unit = f" {r.get('unit', '')}".rstrip()
        lines.append(f"| {r['name']} | {r['ours']:,.1f}{unit} | {r['reference']:,.1f} | {r['ratio']:.3g} | "
                     f"{'-' if goal is None else goal} | {met} |")  # fmt: skip
    lines.append("")
    return lines


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
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated suites: " + ",".join(SUITES))
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    chosen = [s for s in (args.only.split(",") if args.only else SUITES) if s]
    results = {}
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        results[name] = SUITES[name].run(args.quick)
        print(format_rows(results[name]), flush=True)
    if not args.no_write:
        text = to_markdown(results, args.quick) + "\n"
        out = Path(args.out)
        if args.only and out.exists():
            text = merge_sections(out.read_text(), text)
        out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
