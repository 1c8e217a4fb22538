"""The explorer at 1,000,000 entries, measured with the browser (issue: the explorer).

A real node (`remembrancer serve`) whose `dao:vaultmesh` log holds 1,000,000
entries (raw appends, then signed records on top, so the newest page shows
real records).  Headless Chromium (Debian's, through Playwright) opens each
page with an empty cache; the figure is the first contentful paint measured
from the start of navigation, so it includes the server's time (request to
last byte, shown apart) and the browser's parsing and painting.  An absolute
budget: under 1 s (the median of several loads after one warm-up load).

Also shown, for information: the record page (first paint, and the time
until the browser has verified the proof and signatures) and the live
endpoint's server time per poll.

    python -m bench.explorer [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.common import Row, budget, info, suite_main
from remembrancer.demo.procs import NodeProcess, init_node
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.sequencer import Sequencer
from remembrancer.node.keyfile import read_key_file
from remembrancer.storage import open_store
from remembrancer.testing.browser import NAMESPACE, chromium_path, launch, post_record

BUDGET_MS = 1000.0
LOADS = 7
SIGNED = 50

_TIMING = """() => new Promise((resolve) => {
  const report = () => {
    const nav = performance.getEntriesByType('navigation')[0];
    const paint = performance.getEntriesByName('first-contentful-paint')[0];
    resolve({server: nav.responseEnd - nav.requestStart, ttfb: nav.responseStart - nav.requestStart,
             paint: paint ? paint.startTime : null, bytes: nav.transferSize});
  };
  if (performance.getEntriesByName('first-contentful-paint').length) return report();
  new PerformanceObserver((list, observer) => { observer.disconnect(); report(); })
    .observe({type: 'paint', buffered: true});
  setTimeout(report, 10000);
})"""


def _row(name: str, ours: float, goal: float | None, unit: str = "ms") -> Row:
    """First paint against the 1 s budget (a goal when ``goal`` is set, else information)."""
    return budget(name, ours, BUDGET_MS, unit, better="lower", checked=goal is not None)


def _fill(node: NodeProcess, size: int) -> float:
    """Append ``size`` raw entries to the node's log, in process, before it starts."""
    doc = yaml.safe_load(node.config.read_text())
    doc["limits"] = {"client_rate": 1e9, "client_burst": 10**9}
    node.config.write_text(yaml.safe_dump(doc))
    (node.directory / "data").mkdir(exist_ok=True)
    store = open_store(f"sqlite:///{node.directory / 'data' / 'remembrancer.db'}")
    seq = Sequencer(store, read_key_file(node.directory / "keys" / "node.key"), doc["origin_prefix"],
                    StaticNamespaces({}))  # fmt: skip
    started = time.perf_counter()
    pad = bytes(200)
    for i in range(0, size, 10_000):
        seq.append_raw(NAMESPACE, [b"%012d" % j + pad for j in range(i, min(size, i + 10_000))])
    elapsed = time.perf_counter() - started
    asyncio.run(seq.close())
    store.close()
    return elapsed


def _load(browser: Any, url: str, wait_for: str | None = None) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(url, wait_until="load")
        timing: dict[str, float] = page.evaluate(_TIMING)
        if timing["paint"] is None:
            raise RuntimeError(f"the browser reported no first contentful paint for {url}")
        if wait_for:
            page.wait_for_selector(wait_for, timeout=30_000)
            timing["done"] = (time.perf_counter() - started) * 1000
        return timing
    finally:
        context.close()


def _median(browser: Any, url: str, key: str, wait_for: str | None = None) -> tuple[float, float]:
    _load(browser, url, wait_for)  # warm-up: the node's caches, the browser's process
    runs = [_load(browser, url, wait_for) for _ in range(LOADS)]
    return statistics.median(r[key] for r in runs), statistics.median(r["server"] for r in runs)


def run(quick: bool) -> list[Row]:
    if chromium_path() is None:
        raise SystemExit(
            "bench.explorer needs Chromium at /usr/bin/chromium (apt-get install chromium)"
        )
    size = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="rv-bench-explorer-") as d:
        node = init_node(Path(d) / "node", origin_prefix="bench.explorer")
        fill = _fill(node, size - SIGNED)
        node.start()
        try:
            for i in range(SIGNED):
                post_record(node, i)
            base = node.url
            rows = []
            with launch() as browser:
                for label, path in (("overview", "/explorer"),
                                    ("namespace page", f"/explorer/namespaces/{NAMESPACE}")):  # fmt: skip
                    paint, server = _median(browser, base + path, "paint")
                    rows.append(_row(f"{label} at {size:,} entries: first paint incl. server "
                                     f"({server:.1f} ms server), median of {LOADS}", paint, 1.0))  # fmt: skip
                record = f"/explorer/namespaces/{NAMESPACE}/records/{size - SIGNED // 2}"
                paint, server = _median(browser, base + record, "paint")
                rows.append(_row(f"record page at {size:,} entries: first paint ({server:.1f} ms server)",
                                 paint, None))  # fmt: skip
                done, _ = _median(browser, base + record, "done", '#verdict[data-status="pass"]')
                rows.append(_row("record page: proof, checkpoint, cosignatures and record "
                                 "signatures verified in the browser", done, None))  # fmt: skip
            polls = []
            for _ in range(200):
                started = time.perf_counter()
                with urllib.request.urlopen(base + "/v1/explorer/live", timeout=10) as r:
                    r.read()
                polls.append((time.perf_counter() - started) * 1000)
            rows.append(info("live endpoint, one poll (median of 200, loopback)",
                             statistics.median(polls), "ms"))  # fmt: skip
            rows.append(info(f"filling {size - SIGNED:,} raw entries in process",
                             (size - SIGNED) / fill, "entries/s"))  # fmt: skip
            return rows
        finally:
            node.stop()


def main(argv: list[str] | None = None) -> int:
    return suite_main(run, "python -m bench.explorer", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
