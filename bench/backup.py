"""Backup and restore (docs/operations.md): throughput and flat memory.

Run ``python -m bench.backup`` (``--quick`` for a smaller log).

A node directory is made with ``remembrancer init``'s code, and its SQLite
log (``dao:vaultmesh``) is filled through the sequencer with raw entries of
300 bytes in batches of 5,000 (real tiles and signed checkpoints, one per
batch; raw entries carry no record keys).  Then, in one run:

* reference: SQLite's own online backup API (``sqlite3.Connection.backup``)
  copying the same database file, in entries/s;
* ``create_backup`` (snapshot, write the archive, read it back and verify
  every hash, every checkpoint root and signature), ``verify_backup``, and
  ``restore_backup`` into an empty SQLite store (every check again, and the
  tiles recomputed from the entries) against that reference.  The
  reference copies pages; the archive re-hashes the tree and checks
  signatures, so these ratios are informative (goal: none);
* size: the archive against the SQLite database file (which also holds the
  tiles, which the archive leaves out);
* memory: the peak resident memory that ``create`` and ``restore`` add,
  for a log a tenth as long against the full log (``ours`` is the small log's
  MiB, ``reference`` the full log's: a ratio near 1 means memory does not
  grow with the log).  Goal: 0.5 (with ``--quick`` informational: at
  10,000 against 100,000 entries SQLite's page caches are still filling).
  Linux only (``/proc/self/clear_refs``).
  Restore runs one write transaction, so it fills SQLite's writer page cache
  (64 MiB, ``storage/sqlite.py``) before that stops growing; Python's own
  peak (tracemalloc) is the same for 50,000 and 300,000 entries.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bench.common import Row, suite_main
from bench.common import row as _row
from remembrancer.core.namespace import parse_namespaces
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.sequencer import Sequencer
from remembrancer.node.backup.restore import restore_backup, verify_backup
from remembrancer.node.backup.write import create_backup
from remembrancer.node.config import check_data_dir, load_node_config, write_initial_config
from remembrancer.node.keyfile import read_key_file
from remembrancer.storage import open_store

BATCH = 5_000
ENTRIES = 1_000_000
NS = "dao:vaultmesh"


def _fill(directory: Path, entries: int) -> Path:
    """A node directory whose log holds ``entries`` raw entries; returns node.yaml."""
    write_initial_config(directory, origin_prefix="bench.test")
    config = load_node_config(directory / "node.yaml")
    doc = yaml.safe_load(
        resources.files("remembrancer.examples").joinpath("namespaces.yaml").read_text()
    )
    check_data_dir(config.data_dir)
    store = open_store(config.storage)
    seq = Sequencer(store, read_key_file(config.node_key), config.origin_prefix,
                    StaticNamespaces(parse_namespaces(doc)))  # fmt: skip
    try:
        done = 0
        while done < entries:
            n = min(BATCH, entries - done)
            seq.append_raw(NS, [b"%09d" % (done + i) + b"x" * 291 for i in range(n)])
            done += n
    finally:
        asyncio.run(seq.close())
        store.close()
    return directory / "node.yaml"


def _rss_reset() -> int | None:
    """Reset the peak resident set size; the current one in KiB (None if unsupported)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status("VmRSS")
    except OSError:
        return None


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _phase(fn: Any) -> tuple[float, float | None]:
    """Seconds taken by ``fn()`` and the peak memory it added, in MiB."""
    base = _rss_reset()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    added = None if base is None else max(0, _status("VmHWM") - base) / 1024
    return elapsed, added


def _measure(work: Path, entries: int) -> dict[str, tuple[float, float | None]]:
    source = _fill(work / "node", entries)
    config = load_node_config(source)
    out: dict[str, tuple[float, float | None]] = {}
    db = Path(config.storage.removeprefix("sqlite:///"))

    def sqlite_copy() -> None:
        src, dst = sqlite3.connect(db), sqlite3.connect(work / "copy.db")
        with dst:
            src.backup(dst)
        src.close()
        dst.close()

    out["sqlite backup API"] = _phase(sqlite_copy)
    archive = work / "node.tar"
    out["create"] = _phase(lambda: create_backup(config, archive))
    did = read_key_file(config.node_key).did
    out["verify"] = _phase(lambda: verify_backup(archive, trust=[did]))
    target = work / "restored"
    target.mkdir()
    for name in ("node.yaml", "namespaces.yaml", "keys"):
        src = work / "node" / name
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, target / name)
    out["restore"] = _phase(lambda: restore_backup(load_node_config(target / "node.yaml"), archive))
    out["archive MiB"] = (archive.stat().st_size / (1 << 20), None)
    out["database MiB"] = (db.stat().st_size / (1 << 20), None)
    return out


def run(quick: bool) -> list[Row]:
    """Rows of ``{name, ours, reference, ratio, goal, unit}``."""
    entries = ENTRIES // (10 if quick else 1)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="rmb-bench-backup-") as tmp:
        small_dir, big_dir = Path(tmp) / "small", Path(tmp) / "big"
        small_dir.mkdir()
        big_dir.mkdir()
        small = _measure(small_dir, entries // 10)
        big = _measure(big_dir, entries)
    ref_s, _ = big["sqlite backup API"]
    for phase, what in (("create", "backup create (snapshot, write, verify)"),
                        ("verify", "backup verify (hashes, roots, signatures)"),
                        ("restore", "restore into empty SQLite (verify, load, tiles)")):  # fmt: skip
        seconds, _ = big[phase]
        rows.append(_row(f"{what}, {entries:,} entries: vs SQLite backup API", entries / seconds,
                         entries / ref_s, None, "entries/s"))  # fmt: skip
    for phase in ("create", "restore"):
        _, small_mib = small[phase]
        _, big_mib = big[phase]
        if small_mib is not None and big_mib is not None:
            # Restore writes through SQLite, whose page cache (cache_size, 64 MiB)
            # fills as the database grows: bounded, but not flat between the two
            # sizes, so that row is for information; create's must stay flat.
            goal = None if phase == "restore" else 0.5
            note = (
                " (includes SQLite's page cache, bounded at 64 MiB)" if phase == "restore" else ""
            )
            rows.append(_row(f"peak memory added by {phase}{note}: {entries // 10:,} vs {entries:,} entries",
                             max(small_mib, 1.0), max(big_mib, 1.0), goal, "MiB",
                             full_only="stated for 100,000 vs 1,000,000 entries: smaller, SQLite's page"
                             " caches are still filling"))  # fmt: skip
    rows.append(_row(f"archive size vs the SQLite database, {entries:,} entries",
                     big["archive MiB"][0], big["database MiB"][0], None, "MiB"))  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    return suite_main(
        run,
        "python -m bench.backup",
        __doc__,
        argv,
        quick_help="100,000 entries instead of 1,000,000",
    )


if __name__ == "__main__":
    raise SystemExit(main())
