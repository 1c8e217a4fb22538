"""The metrics operators alert on (docs/operations.md, "Metrics"), read from
real node processes: a three-node federation in hybrid collaborative mode
with the development TSA over HTTP.

- Delegated anchors count in ``remembrancer_anchors_*_total{via="delegated"}``
  (they used to leave the anchor counters empty in hybrid mode), and nobody
  anchors alone while the coordinators answer.
- Peers' status, score and heartbeat age; countersignature, cosignature and
  receipt latency histograms; receipts by state.
- A node whose key signs a second view of its log: the witness keeps the
  evidence, ``remembrancer_evidence_incidents`` counts it on the witness and
  on the peer it was gossiped to, and the node is shown on probation.
- A node killed with SIGKILL: its heartbeat age grows and the others' scoring
  puts it on probation, as the gauges show."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.cli.client import api_json
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.witness import AddCheckpointRequest
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import example_record
from remembrancer.node.keyfile import read_key_file
from remembrancer.testing.prom import present, scrape, value

NAMESPACES = ("dao:vaultmesh", "fin:clearing")
TSA = "rfc3161:tsa"
KINDS = ("equivocation", "invalid_anchor_claim", "forged_countersignature")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def wait_until(
    check: Callable[[], Any], timeout: float, what: str, nodes: list[NodeProcess]
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.url}\n{n.log_tail(4000)}" for n in nodes)
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.25)


def append_everywhere(nodes: list[NodeProcess], i: int = 0) -> None:
    now = int(time.time())
    jobs = [(n, ns) for n in nodes for ns in NAMESPACES]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda j: api_json("POST", f"{j[0].url}/v1/namespaces/{j[1]}/records",
                                         example_record(j[1], i, timestamp=now).leaf), jobs))  # fmt: skip


@contextmanager
def hybrid_federation(tmp_path: Path, tsa_url: str, ca: Path) -> Iterator[list[NodeProcess]]:
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
    for n in nodes:
        anchor_to_tsa(n, tsa_url, ca, every="1s")
    wire_witnessing(nodes)
    wire_federation(nodes, quorum=3, anchor_strategy="hybrid", epoch_seconds=3)
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def delegated_everywhere(nodes: list[NodeProcess]) -> bool:
    for n in nodes:
        samples = scrape(n.url)
        for ns in NAMESPACES:
            if value(samples, "remembrancer_anchors_succeeded_total", namespace=ns,
                     via="delegated") < 1:  # fmt: skip
                return False
            if value(samples, "remembrancer_federation_receipts_total", namespace=ns,
                     state="final") < 1:  # fmt: skip
                return False
    return True


def test_a_hybrid_federation_reports_peers_latencies_receipts_evidence_and_delegated_anchors(
    tmp_path: Path,
) -> None:
    dev = DevTsa(tmp_path / "tsa")
    with (
        DevTsaServer(dev) as tsa,
        hybrid_federation(tmp_path, tsa.url, tmp_path / "tsa" / "ca.pem") as nodes,
    ):
        dids = [n.info["did"] for n in nodes]
        append_everywhere(nodes)
        wait_until(lambda: delegated_everywhere(nodes), 60,
                   "delegated anchors and final receipts on every node", nodes)  # fmt: skip

        # --- delegated anchors, peers, latencies, receipts ---------------------------
        for n, me in zip(nodes, dids, strict=True):
            # The gauges read from the store are at most 5 s old (StoreMetrics.min_interval).
            wait_until(lambda n=n: all(present(scrape(n.url), "remembrancer_anchoring_last_anchor_timestamp_seconds",
                                               namespace=ns) for ns in NAMESPACES),
                       15, "the anchoring gauges", nodes)  # fmt: skip
            s = scrape(n.url)
            for ns in NAMESPACES:
                lv = {"namespace": ns, "level": "cold", "target": TSA}
                assert value(s, "remembrancer_anchors_attempted_total", **lv, via="delegated") >= 1
                assert value(s, "remembrancer_anchors_succeeded_total", **lv, via="delegated") >= 1
                assert value(s, "remembrancer_anchors_failed_total", **lv, via="delegated") == 0
                # The coordinators answered: nobody anchored alone.
                assert value(s, "remembrancer_anchors_attempted_total", **lv, via="direct") == 0
                assert value(s, "remembrancer_receipt_final_seconds_count", namespace=ns) >= 1
                assert value(s, "remembrancer_federation_receipts_total", namespace=ns,
                             state="not_final") == 0  # fmt: skip
                assert value(s, "remembrancer_anchoring_status", namespace=ns, status="ok") == 1
                assert value(s, "remembrancer_anchoring_status", namespace=ns,
                             status="backing_off") == 0  # fmt: skip
                assert value(s, "remembrancer_anchoring_level_failures", **lv) == 0
                stamp = value(s, "remembrancer_anchoring_last_anchor_timestamp_seconds", **lv)
                assert time.time() - 120 < stamp <= time.time() + 1
            assert value(s, "remembrancer_cosignature_seconds_count") >= 1
            others = [d for d in dids if d != me]
            assert not present(s, "remembrancer_peer_status", peer=me)
            for peer in others:
                assert value(s, "remembrancer_peer_status", peer=peer, status="active") == 1
                assert value(s, "remembrancer_peer_status", peer=peer, status="probation") == 0
                assert value(s, "remembrancer_peer_status", peer=peer, status="suspended") == 0
                assert 80 <= value(s, "remembrancer_peer_score", peer=peer) <= 100
                assert present(s, "remembrancer_peer_heartbeat_age_seconds", peer=peer)
                assert value(s, "remembrancer_peer_heartbeat_age_seconds", peer=peer) < 5
                # quorum 3: both peers countersigned each receipt this node proposed
                assert value(s, "remembrancer_countersignature_seconds_count", peer=peer) >= 2
                for kind in KINDS:
                    assert present(s, "remembrancer_evidence_incidents", subject=peer, kind=kind)
                    assert value(s, "remembrancer_evidence_incidents", subject=peer, kind=kind) == 0
            assert value(s, "remembrancer_evidence_incidents") == 0
            # Series that alerts watch with increase() exist from the start, at 0.
            assert present(
                s, "remembrancer_witness_requests_total", outcome="witness_root_mismatch"
            )
            assert (
                value(s, "remembrancer_witness_requests_total", outcome="witness_root_mismatch")
                == 0
            )
            for event in ("missed", "refused", "fallback"):
                assert present(s, "remembrancer_aggregates_total", event=event, target=TSA)
                assert value(s, "remembrancer_aggregates_total", event=event, target=TSA) == 0
            assert 0 < time.time() - value(s, "remembrancer_store_metrics_timestamp_seconds") < 60
        # The coordinators' aggregates were made, one per epoch with checkpoints.
        made = sum(
            value(scrape(n.url), "remembrancer_aggregates_total", event="made") for n in nodes
        )
        assert made >= 1
        wait_until(lambda: all(value(scrape(n.url), "remembrancer_federation_receipts_pending") == 0
                               for n in nodes), 20, "no receipt pending", nodes)  # fmt: skip

        # --- equivocation: n2's key signs a second view of its log --------------------
        n0, n1, n2 = nodes
        key2 = read_key_file(n2.directory / yaml.safe_load(n2.config.read_text())["node_key"])
        origin = f"n2.test/{NAMESPACES[0]}"
        # n0 says which size it cosigned (tlog-witness: 409 with text/x.tlog.size).
        status, body = post(f"{n0.url}/witness/add-checkpoint",
                            AddCheckpointRequest(0, (), sign_checkpoint(Checkpoint(origin, 1, b"\x07" * 32), key2)).to_bytes())  # fmt: skip
        assert status == 409, body
        size = int(body.decode().strip())
        assert size >= 1
        forged = sign_checkpoint(Checkpoint(origin, size, b"\x09" * 32), key2)
        status, body = post(f"{n0.url}/witness/add-checkpoint",
                            AddCheckpointRequest(size, (), forged).to_bytes())  # fmt: skip
        assert status == 409, body
        for n in (n0, n1):  # kept on n0, gossiped to n1 (n2 itself is the accused)
            wait_until(lambda n=n: value(scrape(n.url), "remembrancer_evidence_incidents",
                                         subject=dids[2], kind="equivocation") == 1,
                       20, f"the evidence counted on {n.url}", nodes)  # fmt: skip
            s = scrape(n.url)
            assert value(s, "remembrancer_evidence_incidents") == 1
            assert value(s, "remembrancer_peer_status", peer=dids[2], status="probation") == 1
            assert value(s, "remembrancer_peer_status", peer=dids[2], status="active") == 0

        # --- a node killed: heartbeat age grows, scoring puts it on probation ---------
        n1.stop(signal.SIGKILL)

        def n1_on_probation() -> bool:
            s = scrape(n0.url)
            return (value(s, "remembrancer_peer_status", peer=dids[1], status="probation") == 1
                    and value(s, "remembrancer_peer_heartbeat_age_seconds", peer=dids[1]) > 2)  # fmt: skip

        wait_until(n1_on_probation, 30, "n1 on probation by its missed heartbeats", nodes)
        s = scrape(n0.url)
        assert value(s, "remembrancer_peer_score", peer=dids[1]) < 50
        # n2 still sends heartbeats: its age stays small while n1's grows.
        assert value(s, "remembrancer_peer_heartbeat_age_seconds", peer=dids[2]) < 3


def post(url: str, body: bytes) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
