"""Reading anchor receipts: a paged query on the typed table vs the old full scan.

Before schema version 2 a node kept anchor receipts as JSON values in the
generic ``state`` table (scope ``anchors``): ``GET /v1/namespaces/<ns>/anchors``
read every receipt of the store, parsed each, and kept one page; the
scheduler's re-verification did the same every 10 s.  Now they are rows of
``anchor_receipts`` keyed by ``(namespace, size)`` with an index on the
unfinished ones, read a page at a time.

One SQLite store holds the same receipts both ways (the legacy rows in
``state``, as a schema-1 node kept them, and the typed rows), so both sides
read the same data from the same file, alternated, in the same run:

- a page of 50 receipts after a cursor in the middle of the log (the API);
- a re-verification pass, where 1 % of the receipts still wait for
  finality (the scheduler's 10 s loop).

Receipts are realistic: one RFC 3161 anchor each, with a ~3 KB timestamp
token as evidence, and a signed checkpoint note.

    python -m bench.receipts [--quick]
"""

from __future__ import annotations

import base64
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Row, info, row, suite_main
from remembrancer.core.anchor import Anchor, AnchorReceipt, Finality
from remembrancer.storage.base import AnchorReceiptRow
from remembrancer.storage.sqlite import SqliteStore

NS = "dao:vaultmesh"
PAGE = 50
ROUNDS = 7


def _receipt(size: int, final: bool) -> AnchorReceipt:
    root = size.to_bytes(32, "big")
    token = base64.b64encode(bytes(range(256)) * 9).decode()  # ~3 KB, as a TSA token
    anchor = Anchor("rfc3161:freetsa", root, status="verified" if final else "submitted",
                    tx_ref=f"serial-{size}", anchor_ts=1_764_000_000 + size,
                    observed_at=1_764_000_000 + size, verifier="rfc3161-client",
                    finality=Finality(state="final" if final else "pending"),
                    evidence={"token": token})  # fmt: skip
    note = f"example.org/{NS}\n{size}\n{base64.b64encode(root).decode()}\n\n— example.org x\n"
    return AnchorReceipt(f"example.org/{NS}", size, note.encode(), root, (anchor,))


def _fill(store: SqliteStore, count: int) -> None:
    for size in range(1, count + 1):
        receipt = _receipt(size * 10, final=size % 100 != 0)
        doc = json.dumps(receipt.to_dict()).encode()
        store.put_state("anchors", f"{NS}/{receipt.size:020d}", doc)  # as schema 1 kept it
        store.put_anchor_receipt(AnchorReceiptRow(NS, receipt.size, doc, receipt.finished))


def _page_before(store: SqliteStore, after: int) -> list[AnchorReceipt]:
    """The old route: every receipt of the store, parsed, filtered, one page kept."""
    prefix = f"{NS}/"
    receipts = [AnchorReceipt.from_dict(json.loads(v))
                for k, v in sorted(store.list_state("anchors").items()) if k.startswith(prefix)]  # fmt: skip
    return [r for r in receipts if r.size > after][:PAGE]


def _page_after(store: SqliteStore, after: int) -> list[AnchorReceipt]:
    rows = store.anchor_receipts(NS, after=after, limit=PAGE)
    return [AnchorReceipt.from_dict(json.loads(r.receipt)) for r in rows]


def _reverify_before(store: SqliteStore) -> int:
    """The old re-verification pass: every receipt parsed to find the unfinished."""
    prefix = f"{NS}/"
    return sum(not AnchorReceipt.from_dict(json.loads(v)).finished
               for k, v in store.list_state("anchors").items() if k.startswith(prefix))  # fmt: skip


def _reverify_after(store: SqliteStore) -> int:
    found, after = 0, None
    while page := store.unfinished_anchor_receipts(after=after, limit=100):
        found += sum(not AnchorReceipt.from_dict(json.loads(r.receipt)).finished for r in page)
        after = (page[-1].namespace, page[-1].size)
    return found


def _alternate(before: Callable[[], object], after: Callable[[], object]) -> tuple[float, float]:
    """Median seconds of each, run alternately (one warm-up each first)."""
    assert before() == after(), "both sides must read the same receipts"
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(ROUNDS):
        for side, fn in enumerate((before, after)):
            started = time.perf_counter()
            fn()
            times[side].append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def run(quick: bool) -> list[Row]:
    count = 2_000 if quick else 20_000
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "receipts.db")
        try:
            _fill(store, count)
            middle = (count // 2) * 10
            old, new = _alternate(lambda: _page_before(store, middle),
                                  lambda: _page_after(store, middle))  # fmt: skip
            old_rv, new_rv = _alternate(lambda: _reverify_before(store),
                                        lambda: _reverify_after(store))  # fmt: skip
        finally:
            store.close()
    quick_why = "2,000 receipts: the scan is short"
    return [
        row(f"anchor receipts page ({PAGE} after the middle of {count:,} receipts, SQLite):"
            " paged query on anchor_receipts vs full scan + parse of the state rows",
            1 / new, 1 / old, 10.0, "pages/s", full_only=quick_why),
        row(f"re-verification pass over {count:,} receipts, 1 % unfinished (SQLite):"
            " unfinished_anchor_receipts pages vs full scan + parse",
            1 / new_rv, 1 / old_rv, 10.0, "passes/s", full_only=quick_why),
        info(f"anchor receipts page, full scan + parse ({count:,} receipts)", old * 1000, "ms"),
        info(f"anchor receipts page, paged query ({count:,} receipts)", new * 1000, "ms"),
        info(f"re-verification pass, full scan + parse ({count:,} receipts)", old_rv * 1000, "ms"),
        info(f"re-verification pass, unfinished pages ({count:,} receipts)", new_rv * 1000, "ms"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return suite_main(run, "python -m bench.receipts", __doc__, argv, "2,000 receipts")


if __name__ == "__main__":
    raise SystemExit(main())
