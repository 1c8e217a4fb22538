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
* absolute budget rows "against 20,000 entries/s": entries/s of each backend
  against a constant, 1,000 entries in 50 ms (the most an append may cost if
  the node is to sustain 10,000 signed records/s end to end).  A goal for
  SQLite, on average while its log grows to 300,000 entries (30,000 with
  ``--quick``); PostgreSQL's row is informative.  The time of one append
  (median and 99th percentile) is printed too;
* rows "at ... vs at the first ...": the last tenth of the batches against
  the first tenth, per backend (information: how the cost grows).

With random keys the cost of an append grows with the log: each of the three
key indexes (event hash, event id, actor+nonce) takes one random insert per
entry, and SQLite's WAL writes every page a commit dirties, ~3 pages per
entry once the indexes outgrow the batch.  PostgreSQL logs row changes and
writes pages lazily, so it degrades far less.

Raw appends (entries without keys, stored only in tlog-tiles entry bundles):

* against pymerkle 7's ``SqliteTree.append_entries`` (if installed), the
  same 256-byte entries in the same batches of 1,000, batch by batch in
  alternation, from an empty log (100 batches; 30 with ``--quick``; the first
  batch, which creates the logs, left out).  Both sides hash: ours computes
  the leaf and inner-node hashes (a :class:`TileTree`), writes the entry
  bundles, the tiles, the state and an unsigned checkpoint; pymerkle hashes
  the leaves and stores entry and leaf hash per row (inner nodes are
  recomputed when it proves).  pymerkle as it ships (rollback journal,
  SQLite's default synchronous=FULL; goal 1.5) and in WAL mode with
  synchronous=FULL, as our store runs (shown for information);
* store only (hashes and tiles precomputed, so that the rows measure the
  storage): batches of 1,000 with their tiles, state and checkpoint, until
  the log holds ``--raw-entries`` (1,000,000; 100,000 with ``--quick``); the
  mean cost on the empty log (the first tenth of the batches, at least
  ``RAW_WINDOW``, leaving out the one that creates the log) and at the end
  (the last tenth), in entries/s.  The windows are that wide because
  SQLite's WAL checkpoints (every ~100 raw batches) cost ~40 ms each: a
  narrower window catches one or none by luck; for the same reason the
  flatness goal is checked at 1,000,000 entries only;
* SQLite at the end against SQLite on the empty log (flat = 1.0).  Goal: 0.8.
* PostgreSQL on the empty log against SQLite, and at the end against itself
  (informative).

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
from typing import Any

from bench.common import Row, budget, missed
from bench.common import format_rows as common_format_rows
from bench.common import row as _row
from remembrancer.core.tiles import TileTree, changed_tiles
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
    name: str,
    ours: float,
    reference: float,
    goal: float | None,
    times: list[float],
    *,
    full_only: str | None = None,
) -> Row:
    return _with_latency(_row(name, ours, reference, goal, "entries/s", full_only=full_only), times)


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
    # How the cost grows with the log: the last tenth of the batches against the first.
    tenth = max(1, batches // 10)
    depth = []
    for name, t in times.items():
        label = "SQLite" if name == "sqlite" else "PostgreSQL"
        first, last = BATCH * tenth / sum(t[:tenth]), BATCH * tenth / sum(t[-tenth:])
        depth.append(_row(f"storage append with random keys: {label} at {(batches - tenth) * BATCH:,}"
                          f" to {batches * BATCH:,} entries vs at the first {tenth * BATCH:,}"
                          " (flat = 1; information)", last, first, None, "entries/s"))  # fmt: skip
    rows = [
        _with_latency(
            budget(f"storage append {size}: SQLite, against 20,000 entries/s (1,000 in 50 ms)",
                   rate["sqlite"], BUDGET_RATE, "entries/s", better="higher"),
            times["sqlite"],
        )
    ]  # fmt: skip
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
            _with_latency(
                budget(f"storage append {size}: PostgreSQL, against 20,000 entries/s (information)",
                       rate["postgresql"], BUDGET_RATE, "entries/s", better="higher",
                       checked=False),
                times["postgresql"],
            )
        )  # fmt: skip
    return rows + depth


def _with_latency(r: Row, times: list[float]) -> Row:
    """The row with the median and 99th percentile time of one append."""
    times = sorted(times)
    r["p50_ms"] = 1000 * statistics.median(times) if times else None
    r["p99_ms"] = 1000 * times[min(len(times) - 1, int(len(times) * 0.99))] if times else None
    return r


def bench_vs_pymerkle(batches: int) -> list[Row]:
    """Raw appends to an empty log with the hashing on both sides, against
    pymerkle 7 as it ships and in WAL mode, batch by batch in alternation."""
    try:
        from pymerkle import SqliteTree
    except ImportError:
        print("bench.storage: pymerkle is not installed; its rows are left out", file=sys.stderr)
        return []
    tmp = tempfile.mkdtemp(prefix="rmb-bench-pymerkle-")
    store = SqliteStore(os.path.join(tmp, "ours.db"))
    tree = TileTree()
    default = SqliteTree(os.path.join(tmp, "pymerkle.db"))
    wal = SqliteTree(os.path.join(tmp, "pymerkle-wal.db"))
    wal.con.execute("PRAGMA journal_mode=WAL")
    wal.con.execute("PRAGMA synchronous=FULL")

    def ours(start: int, leaves: list[bytes]) -> None:
        tree.append_many(leaves)
        size = start + len(leaves)
        root = tree.root()
        note = f"example.org/{NAMESPACE}\n{size}\n{root.hex()}\n".encode()
        store.append(AppendBatch(
            namespace=NAMESPACE, start=start, entries=[EntryRow(leaf=x) for x in leaves],
            tiles=[(t.level, t.index, tree.tile(t)) for t in changed_tiles(start, size)],
            state=LogState(NAMESPACE, size, root, note), checkpoint_time=1_764_100_000 + start // BATCH,
        ))  # fmt: skip

    sides: list[tuple[str, Any]] = [
        ("ours", ours),
        ("pymerkle", lambda _start, leaves: default.append_entries(leaves)),
        ("pymerkle-wal", lambda _start, leaves: wal.append_entries(leaves)),
    ]
    spent = dict.fromkeys((name for name, _ in sides), 0.0)
    try:
        for b in range(batches + 1):
            leaves = [bytes(e.leaf) for e in make_raw_batch(b * BATCH).entries]
            k = b % len(sides)
            for name, append in sides[k:] + sides[:k]:
                started = time.perf_counter()
                append(b * BATCH, leaves)
                if b:  # the first batch creates the logs: left out
                    spent[name] += time.perf_counter() - started
    finally:
        store.close()
        default.close()
        wal.close()
        shutil.rmtree(tmp, ignore_errors=True)
    rate = {name: BATCH * batches / t for name, t in spent.items()}
    what = (f"raw append {BATCH:,} x {ENTRY_SIZE} B, the first {batches * BATCH:,} entries, hashing on"
            " both sides: SQLite store (leaf and tree hashes, tiles, state; no checkpoint signature)")  # fmt: skip
    return [
        _row(f"{what} vs pymerkle SqliteTree.append_entries as it ships (leaf hashes only; rollback"
             " journal, synchronous=FULL)", rate["ours"], rate["pymerkle"], 1.5, "entries/s"),
        _row(f"{what} vs pymerkle in WAL mode, synchronous=FULL (as our store)", rate["ours"],
             rate["pymerkle-wal"], None, "entries/s"),
    ]  # fmt: skip


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
    full_only = (
        f"stated for {RAW_ENTRIES:,} entries: in a shorter log the windows catch SQLite's"
        " WAL checkpoints (one per ~100 batches) unevenly"
    )
    rows: list[Row] = []
    rows.append(
        _rate_row(
            f"{head}, store only (hashes and tiles precomputed), {end} vs empty log: SQLite"
            " (flat = 1)",
            rate(late["sqlite"]),
            rate(early["sqlite"]),
            0.8,
            late["sqlite"],
            full_only=full_only,
        )
    )
    if "postgresql" in times:
        rows.append(
            _rate_row(
                f"{head}, store only, empty log: PostgreSQL vs SQLite",
                rate(early["postgresql"]),
                rate(early["sqlite"]),
                None,
                early["postgresql"],
            )
        )
        rows.append(
            _rate_row(
                f"{head}, store only, {end} vs empty log: PostgreSQL (flat = 1)",
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
    return rows + bench_vs_pymerkle(30 if quick else 100) + bench_raw(total)


def format_rows(rows: list[Row], quick: bool = False) -> str:
    """The plain-text tables, then the time of one append (median, 99th percentile)."""
    lines = [
        common_format_rows(rows, quick),
        f"{'time of one append':<92} {'p50 ms':>8} {'p99 ms':>8}",
    ]
    lines += [f"{r['name']:<92} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f}" for r in rows
              if r.get("p50_ms") is not None]  # fmt: skip
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
    print(format_rows(rows, args.quick))
    return 1 if missed(rows, args.quick) else 0


if __name__ == "__main__":
    raise SystemExit(main())
