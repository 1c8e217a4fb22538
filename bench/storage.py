"""Storage benchmarks: batch-append throughput, PostgreSQL against SQLite.

Run ``python -m bench.storage`` (``--quick`` for a short run; ``--raw-only``
for the raw rows alone, ``--raw-entries N`` to grow the raw log to N).  Both
backends get the same batches, appended in alternation (SQLite first on even
batches, PostgreSQL first on odd ones) so that machine noise hits both alike.

Record appends (entries that carry keys):

* each batch is 1,000 entries of 256 bytes with the keys a record carries
  (event hash, event id, actor, nonce), plus the tiles a real integrator
  writes for it: every level-0 tile the batch touches (full ones and the
  partial one at the end, rewritten wider by the next batch) and the partial
  tiles above it, and a new log state with its signed checkpoint;
* row "PostgreSQL vs SQLite": entries/s of PostgreSQL against SQLite on the
  same machine.  Goal: at least 0.3.
* rows "vs 50 ms budget": entries/s of each backend against 20,000 entries/s
  (1,000 entries in 50 ms, the most an append may cost if the node is to
  sustain 10,000 signed records/s end to end).  Goal for SQLite: at least 1
  on average while its log grows to 300,000 entries (30,000 with
  ``--quick``); PostgreSQL's row is informative.  The rows also give the
  median and 99th percentile time of one append.

With random keys the cost of an append grows with the log: each of the three
key indexes (event hash, event id, actor+nonce) takes one random insert per
entry, and SQLite's WAL writes every page a commit dirties, ~3 pages per
entry once the indexes outgrow the batch.  PostgreSQL logs row changes and
writes pages lazily, so it degrades far less.

Raw appends (entries without keys, stored only in tlog-tiles entry bundles):

* batches of 1,000 entries of 256 bytes with their tiles, state and
  checkpoint, until the log holds ``--raw-entries`` (1,000,000; 100,000 with
  ``--quick``); the rows give the mean cost on the empty log (the first tenth
  of the batches, at least ``RAW_WINDOW``, leaving out the one that creates
  the log) and at the end (the last tenth), in entries/s and µs/entry.  The
  windows are that wide because SQLite's WAL checkpoints (every ~100 raw
  batches) cost ~40 ms each: a narrower window catches one or none by luck;
* SQLite on the empty log against pymerkle 7's ``SqliteTree.append_entries``
  given the same entries in the same batches (if pymerkle is installed;
  pymerkle also hashes the leaves, the store is given them hashed).  Goal: 1.5;
* SQLite at the end against SQLite on the empty log (flat = 1.0).  Goal: 0.8.

Every commit is durable (SQLite WAL with synchronous=FULL, PostgreSQL with
synchronous_commit on), so the figures include the fsyncs of this disk.
PostgreSQL is reached at ``$REMEMBRANCER_BENCH_PG``, else
``$REMEMBRANCER_TEST_PG``, else ``postgresql://postgres@127.0.0.1:5432/test``;
it runs in a fresh schema that is dropped at the end.  Without a server the
PostgreSQL rows are left out (with a note on stderr).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid

from bench.common import Row, fmt
from remembrancer.storage.base import AppendBatch, EntryRow, LogState, Store
from remembrancer.storage.sqlite import SqliteStore

NAMESPACE = "bench:storage"
BATCH = 1_000
ENTRY_SIZE = 256
BUDGET_RATE = BATCH / 0.050  # entries/s if a 1,000-entry append took 50 ms
RAW_WINDOW = 20  # fewest batches averaged for the "empty log" and "at the end" raw rows
RAW_ENTRIES = 1_000_000
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
ACTORS = [f"did:key:z6Mk{secrets.token_hex(20)}" for _ in range(16)]

# Hashes and leaves are slices of one random pool: consistent from batch to
# batch (a tile rewritten wider keeps its prefix) and free to produce.
_POOL_HASHES = 1 << 16
_POOL = secrets.token_bytes(32 * _POOL_HASHES + ENTRY_SIZE)


def _tree_hash(level: int, position: int) -> bytes:
    k = (position * 2654435761 + level * 40503) % _POOL_HASHES
    return _POOL[32 * k : 32 * k + 32]


def _tiles(start: int, end: int) -> list[tuple[int, int, bytes]]:
    """The tlog-tiles growing the tree from ``start`` to ``end`` leaves writes."""
    out = []
    level, lo, hi = 0, start, end
    while hi > 0:
        for index in range(lo // 256, (hi - 1) // 256 + 1):
            width = min(256, hi - index * 256)
            hashes = b"".join(_tree_hash(level, index * 256 + k) for k in range(width))
            out.append((level, index, hashes))
        level, lo, hi = level + 1, lo // 256, hi // 256
    return out


def make_batch(start: int, n: int = BATCH) -> AppendBatch:
    """Entries ``[start, start + n)`` with random keys, as real records have.

    Event hashes are SHA-256 outputs and event ids and nonces are chosen at
    random by actors, so every key index takes random inserts; sequential
    keys would flatter both backends.
    """
    entries = []
    for i in range(start, start + n):
        offset = (i * 97) % (32 * _POOL_HASHES)
        entries.append(
            EntryRow(
                leaf=_POOL[offset : offset + ENTRY_SIZE],
                event_hash=secrets.token_bytes(32),
                event_id=str(uuid.UUID(bytes=secrets.token_bytes(16), version=4)),
                actor=ACTORS[i % len(ACTORS)],
                nonce=secrets.token_urlsafe(16),
            )
        )
    size = start + n
    note = (
        f"example.org/{NAMESPACE}\n{size}\n{secrets.token_bytes(32).hex()}\n\n"
        f"— example.org/{NAMESPACE} {secrets.token_hex(50)}\n"
    ).encode()
    return AppendBatch(
        namespace=NAMESPACE,
        start=start,
        entries=entries,
        tiles=_tiles(start, size),
        state=LogState(NAMESPACE, size, _tree_hash(99, size), note),
        checkpoint_time=1_764_100_000 + start // BATCH,
    )


def make_raw_batch(start: int, n: int = BATCH) -> AppendBatch:
    """Entries ``[start, start + n)`` without keys (raw 256-byte leaves)."""
    entries = []
    for i in range(start, start + n):
        offset = (i * 97) % (32 * _POOL_HASHES)
        entries.append(EntryRow(leaf=_POOL[offset : offset + ENTRY_SIZE]))
    size = start + n
    note = f"example.org/{NAMESPACE}\n{size}\n{_tree_hash(99, size).hex()}\n".encode()
    return AppendBatch(
        namespace=NAMESPACE,
        start=start,
        entries=entries,
        tiles=_tiles(start, size),
        state=LogState(NAMESPACE, size, _tree_hash(99, size), note),
        checkpoint_time=1_764_100_000 + start // BATCH,
    )


def _pg_dsn() -> str:
    return (
        os.environ.get("REMEMBRANCER_BENCH_PG")
        or os.environ.get("REMEMBRANCER_TEST_PG")
        or DEFAULT_PG
    )


def _open_postgres() -> tuple[Store, str] | None:
    try:
        from remembrancer.storage.postgres import PostgresStore

        schema = f"rmb_bench_{secrets.token_hex(4)}"
        return PostgresStore(_pg_dsn(), schema=schema, timeout=5), schema
    except Exception as e:
        print(f"bench.storage: PostgreSQL rows left out: {e}", file=sys.stderr)
        return None


def _drop_schema(schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(_pg_dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _rate_row(
    name: str, ours: float, reference: float, goal: float | None, times: list[float]
) -> Row:
    times = sorted(times)
    return {
        "name": name,
        "ours": ours,
        "reference": reference,
        "ratio": ours / reference if reference else float("inf"),
        "goal": goal,
        "unit": "entries/s",
        "p50_ms": 1000 * statistics.median(times) if times else None,
        "p99_ms": 1000 * times[min(len(times) - 1, int(len(times) * 0.99))] if times else None,
    }


def bench_append(batches: int) -> list[Row]:
    """Append ``batches`` batches to SQLite and PostgreSQL in alternation."""
    tmp = tempfile.mkdtemp(prefix="rmb-bench-")
    sqlite_store = SqliteStore(os.path.join(tmp, "bench.db"))
    pg = _open_postgres()
    stores: list[tuple[str, Store]] = [("sqlite", sqlite_store)]
    if pg is not None:
        stores.append(("postgresql", pg[0]))
    times: dict[str, list[float]] = {name: [] for name, _ in stores}
    try:
        # One untimed batch each: connections, statement caches, first pages.
        warm = make_batch(0)
        for _, store in stores:
            store.append(warm)
        for b in range(1, batches + 1):
            batch = make_batch(b * BATCH)
            order = stores if b % 2 == 0 else stores[::-1]
            for name, store in order:
                started = time.perf_counter()
                store.append(batch)
                times[name].append(time.perf_counter() - started)
    finally:
        for _, store in stores:
            store.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if pg is not None:
            _drop_schema(pg[1])

    rate = {name: BATCH * len(t) / sum(t) for name, t in times.items()}
    size = f"{batches} x {BATCH:,} x {ENTRY_SIZE} B entries + tiles"
    rows = [
        _rate_row(
            f"storage append {size}: SQLite vs 50 ms budget",
            rate["sqlite"],
            BUDGET_RATE,
            1.0,
            times["sqlite"],
        )
    ]
    if "postgresql" in rate:
        rows.insert(
            0,
            _rate_row(
                f"storage append {size}: PostgreSQL vs SQLite",
                rate["postgresql"],
                rate["sqlite"],
                0.3,
                times["postgresql"],
            ),
        )
        rows.append(
            _rate_row(
                f"storage append {size}: PostgreSQL vs 50 ms budget",
                rate["postgresql"],
                BUDGET_RATE,
                None,
                times["postgresql"],
            )
        )
    return rows


def _pymerkle_rate(batches: int) -> float | None:
    """pymerkle 7 ``SqliteTree.append_entries`` on the raw entries of ``batches`` batches."""
    try:
        from pymerkle import SqliteTree
    except ImportError:
        print("bench.storage: pymerkle is not installed; its row is left out", file=sys.stderr)
        return None
    tmp = tempfile.mkdtemp(prefix="rmb-bench-pymerkle-")
    tree = SqliteTree(os.path.join(tmp, "pymerkle.db"))
    elapsed = 0.0
    try:
        for b in range(batches):
            leaves = [bytes(e.leaf) for e in make_raw_batch(b * BATCH).entries]
            started = time.perf_counter()
            tree.append_entries(leaves)
            elapsed += time.perf_counter() - started
    finally:
        tree.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return BATCH * batches / elapsed


def bench_raw(total: int) -> list[Row]:
    """Append raw batches to SQLite and PostgreSQL until the logs hold ``total`` entries."""
    batches = max(total // BATCH, 2 * RAW_WINDOW)
    tmp = tempfile.mkdtemp(prefix="rmb-bench-raw-")
    sqlite_store = SqliteStore(os.path.join(tmp, "raw.db"))
    pg = _open_postgres()
    stores: list[tuple[str, Store]] = [("sqlite", sqlite_store)]
    if pg is not None:
        stores.append(("postgresql", pg[0]))
    times: dict[str, list[float]] = {name: [] for name, _ in stores}
    try:
        for b in range(batches):
            batch = make_raw_batch(b * BATCH)
            order = stores if b % 2 == 0 else stores[::-1]
            for name, store in order:
                started = time.perf_counter()
                store.append(batch)
                times[name].append(time.perf_counter() - started)
    finally:
        for _, store in stores:
            store.close()
        shutil.rmtree(tmp, ignore_errors=True)
        if pg is not None:
            _drop_schema(pg[1])

    def rate(t: list[float]) -> float:
        return BATCH * len(t) / sum(t)

    # The very first batch creates the log (and warms caches): leave it out.
    window = max(RAW_WINDOW, batches // 10)
    early = {name: t[1 : window + 1] for name, t in times.items()}
    late = {name: t[-window:] for name, t in times.items()}
    head = f"raw append {BATCH:,} x {ENTRY_SIZE} B"
    end = f"at {batches * BATCH:,}"
    rows: list[Row] = []
    reference = _pymerkle_rate(window + 1)
    if reference is not None:
        rows.append(
            _rate_row(
                f"{head}, empty log: SQLite vs pymerkle SqliteTree.append_entries",
                rate(early["sqlite"]),
                reference,
                1.5,
                early["sqlite"],
            )
        )
    rows.append(
        _rate_row(
            f"{head}, {end} vs empty log: SQLite (flat = 1)",
            rate(late["sqlite"]),
            rate(early["sqlite"]),
            0.8,
            late["sqlite"],
        )
    )
    if "postgresql" in times:
        rows.append(
            _rate_row(
                f"{head}, empty log: PostgreSQL vs SQLite",
                rate(early["postgresql"]),
                rate(early["sqlite"]),
                None,
                early["postgresql"],
            )
        )
        rows.append(
            _rate_row(
                f"{head}, {end} vs empty log: PostgreSQL (flat = 1)",
                rate(late["postgresql"]),
                rate(early["postgresql"]),
                None,
                late["postgresql"],
            )
        )
    return rows


# --- entry points -------------------------------------------------------------------------


def run(quick: bool, *, raw_only: bool = False, raw_entries: int | None = None) -> list[Row]:
    """Run the storage benchmarks; rows of ``{name, ours, reference, ratio, goal, unit, ...}``."""
    rows = [] if raw_only else bench_append(30 if quick else 300)
    total = raw_entries if raw_entries is not None else RAW_ENTRIES // (10 if quick else 1)
    return rows + bench_raw(total)


def format_rows(rows: list[Row]) -> str:
    """A plain-text table of benchmark rows (with per-batch latency)."""
    lines = [
        f"{'benchmark':<84} {'ours':>10} {'reference':>10} {'ratio':>7} {'goal':>5}  ok"
        f" {'p50 ms':>7} {'p99 ms':>7} {'us/entry':>8} {'ref us':>7}"
    ]
    for r in rows:
        goal = r["goal"]
        ok = "-" if goal is None else ("yes" if r["ratio"] >= goal else "NO")
        lines.append(
            f"{r['name']:<84} {fmt(r['ours']):>10} {fmt(r['reference']):>10} "
            f"{fmt(r['ratio']):>7} {'-' if goal is None else fmt(goal):>5}  {ok:<3}"
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f}"
            f" {1e6 / r['ours']:>8.2f} {1e6 / r['reference']:>7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="30 record batches instead of 300, 100,000 raw entries"
    )
    parser.add_argument("--raw-only", action="store_true", help="only the raw-append rows")
    parser.add_argument(
        "--raw-entries",
        type=int,
        default=None,
        help=f"grow the raw log to this many entries (default {RAW_ENTRIES:,})",
    )
    args = parser.parse_args(argv)
    rows = run(args.quick, raw_only=args.raw_only, raw_entries=args.raw_entries)
    print(format_rows(rows))
    failed = [r for r in rows if r["goal"] is not None and r["ratio"] < r["goal"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
