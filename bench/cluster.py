"""A three-node federation on loopback, real processes (issue: federation).

Both figures are absolute budgets (machine-dependent):

* A new checkpoint carries a quorum of peer cosignatures within 200 ms at the
  median: each node measures from signing a checkpoint to attaching its
  peers' cosignatures (``GET /v1/witnessing``).
* A verified anchor becomes a final federation receipt within 1 s at the
  median: the time of ``POST /v1/admin/federation/propagate`` (proposal,
  re-verification by each peer with its own TSA trust bundle,
  countersignatures, final receipt).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import Row, budget
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import anchor_to_tsa, init_node, wire_federation, wire_witnessing
from remembrancer.demo.records import ledger_payload, make_record

COSIGN_BUDGET_MS = 200.0
RECEIPT_BUDGET_MS = 1000.0


def _call(url: str, body: bytes | None = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        url, data=body, method="POST" if body is not None else "GET", headers=headers
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def run(quick: bool) -> list[Row]:
    rounds = 20 if quick else 100
    with (
        tempfile.TemporaryDirectory(prefix="rv-bench-cluster-") as d,
        DevTsaServer(DevTsa(Path(d) / "tsa")) as tsa,
    ):
        tmp = Path(d)
        nodes = [init_node(tmp / f"n{i}", origin_prefix=f"n{i}.bench") for i in range(3)]
        for n in nodes:
            anchor_to_tsa(
                n, tsa.url, tmp / "tsa" / "ca.pem", every="1h", scheduler={"tick_seconds": 0.2}
            )
        wire_witnessing(nodes)
        wire_federation(nodes, quorum=3, heartbeat_seconds=2)
        for n in nodes:
            n.start()
        try:
            actor = demo_key("did:vm:actor:demo")
            w = [
                demo_key("did:vm:arbiter:prod-us-east-1"),
                demo_key("did:vm:arbiter:prod-eu-west-1"),
            ]
            for i in range(rounds):
                n = nodes[i % 3]
                rec = make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), actor, w,
                                  timestamp=int(time.time()))  # fmt: skip
                _call(f"{n.url}/v1/namespaces/dao:vaultmesh/records", rec.leaf)
                time.sleep(0.05)
            time.sleep(1)
            medians = [_call(f"{n.url}/v1/witnessing")["median_ms"] for n in nodes]
            cosign = statistics.median([m for m in medians if m is not None])
            alpha = nodes[0]
            token = (alpha.directory / "keys" / "admin.token").read_text().strip()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                got = _call(f"{alpha.url}/v1/namespaces/dao:vaultmesh/anchors")["receipts"]
                if got and any(a["status"] == "verified" for a in got[-1]["anchors"]):
                    break
                time.sleep(0.2)
            times = []
            for _ in range(max(5, rounds // 4)):
                t = time.perf_counter()
                final = _call(
                    f"{alpha.url}/v1/admin/federation/propagate/dao:vaultmesh", b"", token
                )
                times.append(time.perf_counter() - t)
                assert final["quorum_met"]
            receipt = statistics.median(times) * 1000
        finally:
            for n in nodes:
                n.stop()
    return [
        budget(f"3 nodes: checkpoint to a quorum of cosignatures, median of {rounds} checkpoints",
               cosign, COSIGN_BUDGET_MS, "ms", better="lower"),
        budget(f"3 nodes: verified anchor to final federation receipt, median of {len(times)}",
               receipt, RECEIPT_BUDGET_MS, "ms", better="lower"),
    ]  # fmt: skip


if __name__ == "__main__":
    from bench.common import format_rows

    print(format_rows(run(True), True))
