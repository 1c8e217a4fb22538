"""Federation simulation at scale (issue 7), as a function of the federation size N.

    python -m bench --only simulation          # N in 5, 10, 25, 50, 100 (minutes)
    python -m bench.simulation --quick         # N in 5, 10
    python -m bench.simulation --sizes 5,25 --seed 7 --json out.json --table

Every node runs the real federation code on a simulated network and a
virtual clock (``remembrancer.testing.simulation``, docs/simulation.md), so
the figures are virtual times and message counts, the same for a given seed
on any machine.  The timing rows' reference is what a lossless network with
the links' base latencies gives in the same run (the quorum-th fastest round
trip): the ratio shows what loss, jitter, retries and timeouts add.  Message
counts and convergence times are shown against constants (two or six
messages per peer and request, the heartbeat interval), in the absolute
table, for information.  The CPU row is real processor time per simulated
node against the virtual seconds simulated, for context.

Per N: one run of the three scenarios with 1% message loss (3 witnessed
checkpoints, 3 federation receipts, a 40% partition of 10 s with every log
advancing), then the partition again without loss.  Last, a 30 s partition
of 10 nodes: long enough for nodes on both sides to put each other on
probation, after which the real service sends them no heartbeats (see
docs/simulation.md, "Findings").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.common import Row, budget, format_rows, row
from remembrancer.testing.simulation.config import SIZES, SimulationConfig, SimulationReport
from remembrancer.testing.simulation.federation import simulate

INF = float("inf")
LONG_PARTITION_N = 10
LONG_PARTITION_S = 30.0
LONG_WAIT_S = 30.0


def _row(name: str, ours: float, reference: float, unit: str) -> Row:
    """Against a reference measured in the same run (a lossless simulation)."""
    return row(name, ours, reference, None, unit)


def _const(name: str, ours: float, reference: float, unit: str) -> Row:
    """Against a constant (a message count, the heartbeat interval): information."""
    return budget(name, ours, reference, unit, better="lower", checked=False, judged=False)


def _median(values: Sequence[float | None]) -> float:
    return statistics.median(INF if v is None else v for v in values) if values else INF


def rows_for(report: SimulationReport, lossless: SimulationReport) -> list[Row]:
    """The benchmark rows of one federation size."""
    n = report.n
    out: list[Row] = []
    w, r, p = report.witnessing, report.receipts, report.partition
    if w is not None:
        out += [
            _const(f"simulation N={n}: messages per witnessed checkpoint (constant: 2(N-1))",
                 w.messages_per_checkpoint, 2 * (n - 1), "msgs"),
            _row(f"simulation N={n}: checkpoint to {w.quorum} of {n - 1} cosignatures, median"
                 " (ref: lossless)", _median(w.quorum_ms), w.ideal_ms, "ms"),
            _row(f"simulation N={n}: checkpoint to cosignatures attached by the node, median"
                 " (ref: lossless)", _median(w.round_ms), w.ideal_ms, "ms"),
        ]  # fmt: skip
    if r is not None:
        out += [
            _const(f"simulation N={n}: messages per federation receipt (constant: 6(N-1))",
                 r.messages_per_receipt, 6 * (n - 1), "msgs"),
            _row(f"simulation N={n}: anchor proposal to a quorum of {r.quorum} of {n}, median"
                 " (ref: lossless)", _median(r.quorum_ms), r.ideal_ms, "ms"),
        ]  # fmt: skip
    hb = SimulationConfig().heartbeat_seconds
    for label, part in (("1% loss", p), ("no loss", lossless.partition)):
        if part is None:
            continue
        seconds = INF if part.convergence_s is None else part.convergence_s
        out.append(_const(f"simulation N={n}: all logs everywhere after a {part.partition_s:g} s"
                          f" partition heals, {label} (constant: the heartbeat interval)", seconds, hb, "s"))  # fmt: skip
    scenario_cpu = sum(v for k, v in report.cpu_seconds.items() if k != "setup")
    scenario_s = sum(v for k, v in report.phase_seconds.items() if k != "setup")
    out.append(_row(f"simulation N={n}: real CPU per simulated node (ref: virtual s simulated)",
                    scenario_cpu * 1000 / n, scenario_s, "ms"))  # fmt: skip
    return out


def long_partition_row(report: SimulationReport) -> Row:
    p = report.partition
    assert p is not None
    pairs = report.n * (report.n - 1)
    return _const(f"simulation N={report.n}: (node, log) pairs behind {LONG_WAIT_S:g} s after a"
                  f" {p.partition_s:g} s partition heals (constant: all pairs)", p.stale_pairs, pairs,
                  "pairs")  # fmt: skip


def simulate_all(
    sizes: Sequence[int], seed: int, tsa_dir: Path
) -> tuple[list[SimulationReport], list[SimulationReport], SimulationReport]:
    """The runs behind the rows: per size, all scenarios and a lossless partition;
    and the long partition."""
    reports, lossless = [], []
    for n in sizes:
        print(f"   simulating N={n}", file=sys.stderr, flush=True)
        reports.append(simulate(n, SimulationConfig(seed=seed), tsa_dir=tsa_dir))
        lossless.append(simulate(n, SimulationConfig(seed=seed, loss=0.0),
                                 scenarios=("partition",), tsa_dir=tsa_dir))  # fmt: skip
    long = simulate(LONG_PARTITION_N,
                    SimulationConfig(seed=seed, partition_seconds=LONG_PARTITION_S,
                                     converge_within_s=LONG_WAIT_S),
                    scenarios=("partition",), tsa_dir=tsa_dir)  # fmt: skip
    return reports, lossless, long


def _measure(
    sizes: Sequence[int], seed: int
) -> tuple[list[Row], list[SimulationReport], list[SimulationReport], SimulationReport]:
    with tempfile.TemporaryDirectory(prefix="rv-bench-sim-") as d:
        reports, lossless, long = simulate_all(sizes, seed, Path(d) / "tsa")
    rows = [row for a, b in zip(reports, lossless, strict=True) for row in rows_for(a, b)]
    rows.append(long_partition_row(long))
    return rows, reports, lossless, long


def run(quick: bool) -> list[Row]:
    """Rows of ``{name, ours, reference, ratio, goal, unit}``."""
    return _measure((5, 10) if quick else SIZES, 1)[0]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or value == INF:
        return "never"
    return f"{value:,.{digits}f}"


def markdown_table(
    reports: Sequence[SimulationReport], lossless: Sequence[SimulationReport]
) -> str:
    """The results table of docs/simulation.md."""
    lines = [
        "| N | msgs / checkpoint | cosignature quorum, ms (lossless) | cosignatures attached, ms"
        " | msgs / receipt | receipt quorum, ms (lossless) | receipt sent to all, ms"
        " | converged after heal, s: 1% loss / none | CPU ms / node |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rep, clean in zip(reports, lossless, strict=True):
        w, r, p, q = rep.witnessing, rep.receipts, rep.partition, clean.partition
        assert w is not None and r is not None and p is not None and q is not None
        cpu = sum(v for k, v in rep.cpu_seconds.items() if k != "setup") * 1000 / rep.n
        lines.append(
            f"| {rep.n} | {w.messages_per_checkpoint:.1f} | {_fmt(_median(w.quorum_ms))}"
            f" ({_fmt(w.ideal_ms)}) | {_fmt(_median(w.round_ms))} | {r.messages_per_receipt:.1f}"
            f" | {_fmt(_median(r.quorum_ms))} ({_fmt(r.ideal_ms)}) | {_fmt(_median(r.final_ms))}"
            f" | {_fmt(p.convergence_s, 1)} / {_fmt(q.convergence_s, 1)} | {cpu:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="N in 5 and 10 only")
    parser.add_argument("--sizes", default="", help="comma-separated federation sizes")
    parser.add_argument("--seed", type=int, default=1, help="the simulation's seed (default 1)")
    parser.add_argument("--json", type=Path, help="also write every report to this file")
    parser.add_argument("--table", action="store_true", help="also print the docs' table")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s] or ((5, 10) if args.quick else SIZES)
    rows, reports, lossless, long = _measure(sizes, args.seed)
    print(format_rows(rows))
    if args.table:
        print()
        print(markdown_table(reports, lossless))
    if args.json:
        doc = {
            "reports": [{**r.to_dict(), "cpu_seconds": dict(r.cpu_seconds)} for r in reports],
            "lossless_partition": [r.to_dict() for r in lossless],
            "long_partition": long.to_dict(),
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
