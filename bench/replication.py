"""Anti-entropy catch-up on loopback, real node processes (issue 7).

Figure: a node that missed 100,000 entries of a peer's log is back in sync
within 10 s.  Two nodes, ``src`` and ``mirror``; the mirror witnesses the
source's log with ``mirror: true``.  With the mirror stopped, the source's
log grows by N entries of about 700 bytes (loaded offline with the
sequencer's bulk append, then the source is started again and signs them).
The mirror is started; the time is taken from its first answer on
``/readyz`` to the moment ``GET /v1/federation/replicas`` reports the
replica at the source's size with every entry mirrored (fetched, hashed,
verified against the signed checkpoint and stored): an absolute budget of
10 s.  The mirrored tiles are then compared with the source's, byte for byte.

Run ``python -m bench.replication`` (``--quick``: 20,000 entries).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from bench.common import Row, budget, suite_main
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.tiles import TILE_WIDTH, Tile
from remembrancer.demo.procs import NodeProcess, init_node, wire_federation, wire_witnessing
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.sequencer import Sequencer
from remembrancer.node.config import check_data_dir, load_node_config
from remembrancer.node.keyfile import read_key_file
from remembrancer.storage import open_store

GOAL_S = 10.0
NS = "dao:vaultmesh"


def _get(url: str, timeout: float = 10) -> Any:
    """An API answer, parsed from JSON."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _raw(url: str, timeout: float = 10) -> bytes:
    """A tile or an entry bundle, as bytes (which may well start with ``{``)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()  # type: ignore[no-any-return]


def preload(node: NodeProcess, namespace: str, count: int, entry_size: int = 700) -> None:
    """Append ``count`` raw entries to a stopped node's log, offline (bulk load)."""
    config = load_node_config(node.config)
    doc = yaml.safe_load(config.namespaces.read_text())

    check_data_dir(config.data_dir)

    async def run() -> None:
        store = open_store(config.storage)
        seq = Sequencer(store, read_key_file(config.node_key), config.origin_prefix,
                        StaticNamespaces(parse_namespaces(doc)))  # fmt: skip
        try:
            done = 0
            while done < count:
                n = min(8192, count - done)
                entries = [os.urandom(8) + b"x" * (entry_size - 8) for _ in range(n)]
                await asyncio.to_thread(seq.append_raw, namespace, entries)
                done += n
        finally:
            await seq.close()
            store.close()

    asyncio.run(run())


def _replica(node: NodeProcess, origin: str) -> dict[str, Any]:
    status = _get(f"{node.url}/v1/federation/replicas")
    return next(r for r in status["replicas"] if r["origin"] == origin)  # type: ignore[no-any-return]


def measure(entries: int) -> tuple[float, int]:
    """Seconds from the mirror's readiness to a complete, verified mirror; tiles compared."""
    with tempfile.TemporaryDirectory(prefix="rv-bench-replication-") as d:
        tmp = Path(d)
        src = init_node(tmp / "src", origin_prefix="src.bench")
        mirror = init_node(tmp / "mirror", origin_prefix="mirror.bench")
        wire_witnessing([src, mirror], quorum=0)
        wire_federation([src, mirror], quorum=2, heartbeat_seconds=0.5)
        doc = yaml.safe_load(mirror.config.read_text())
        for log in doc["witness"]["logs"]:
            log["mirror"] = True
        doc["federation"]["antientropy_seconds"] = 1.0
        mirror.config.write_text(yaml.safe_dump(doc))
        src.edit_config(scheduler={"enabled": False})
        mirror.edit_config(scheduler={"enabled": False})
        origin = f"src.bench/{NS}"
        preload(src, NS, entries)
        src.start()
        try:
            size = int(_get(f"{src.url}/v1/namespaces/{NS}")["size"])
            mirror.start(timeout=60)
            ready = time.perf_counter()
            deadline = ready + 120
            while time.perf_counter() < deadline:
                r = _replica(mirror, origin)
                if r["size"] == size and r["mirror_size"] == size:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"the mirror did not catch up: {_replica(mirror, origin)}")
            elapsed = time.perf_counter() - ready
            _compare_tiles(src, mirror, origin, size)
        finally:
            mirror.stop()
            src.stop()
    return elapsed, size


def _compare_tiles(src: NodeProcess, mirror: NodeProcess, origin: str, size: int) -> None:
    """Every entry bundle and hash tile of the mirror equals the source's."""
    bundles = (size + TILE_WIDTH - 1) // TILE_WIDTH
    for i in sorted({0, bundles // 2, bundles - 1}):
        t = Tile(0, i, min(TILE_WIDTH, size - i * TILE_WIDTH))
        a = _raw(f"{src.url}/logs/{NS}/{t.entries_path()}")
        b = _raw(f"{mirror.url}/v1/replicas/{origin}/{t.entries_path()}")
        assert a == b, f"entry bundle {i} differs"
        a = _raw(f"{src.url}/logs/{NS}/{t.path()}")
        b = _raw(f"{mirror.url}/v1/replicas/{origin}/{t.path()}")
        assert a == b, f"tile 0/{i} differs"
    top = Tile(1, 0, min(TILE_WIDTH, size >> 8)) if size >= TILE_WIDTH else None
    if top is not None:
        assert _raw(f"{src.url}/logs/{NS}/{top.path()}") == _raw(
            f"{mirror.url}/v1/replicas/{origin}/{top.path()}"
        ), "tile 1/0 differs"


def run(quick: bool) -> list[Row]:
    entries = 20_000 if quick else 100_000
    elapsed, size = measure(entries)
    return [
        budget(f"mirror catches up {size:,} missed entries after restart ({size / elapsed:,.0f} entries/s)",
               elapsed, GOAL_S, "s", better="lower"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    return suite_main(run, "python -m bench.replication", __doc__, argv)


if __name__ == "__main__":
    raise SystemExit(main())
