"""Collaborative and hybrid anchoring with real node processes (3 nodes, 2
namespaces each), the development TSA over HTTP and a real anvil.

The rail transactions are counted where they happen (tokens the TSA issued;
transactions the senders' accounts sent on anvil): one per target per epoch
in collaborative mode against N x M = 6 in independent mode.  Every member
ends with a verified aggregated anchor and a final federation receipt, both
verified offline with the CLI.  A coordinator that is killed costs one epoch
(hybrid members anchor alone, collaborative ones go to the next epoch's
coordinator); a coordinator that lies (a real HTTP peer driven by the test,
signing with its registry key) is refused, proven, put on probation, and
never yields a verified anchor; one that stays silent is scored as missed."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail
from remembrancer.anchoring.scheduler import Delegation
from remembrancer.cli.client import api_json
from remembrancer.core.aggregation import AggregateAnchor, AggregationTree, choose_coordinator
from remembrancer.core.anchor import checkpoint_digest
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_evm,
    anchor_to_tsa,
    cli,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import example_record
from remembrancer.federation.protocol.contents import CheckpointContent, ReceiptContent
from remembrancer.federation.protocol.wire import Message
from remembrancer.testing.prom import scrape, value
from remembrancer.testing.waiting import until

NAMESPACES = ("dao:vaultmesh", "fin:clearing")
FEDERATION = "test-federation"
TSA = "rfc3161:tsa"


def get(url: str) -> Any:
    return api_json("GET", url)


def wait_until(
    check: Callable[[], Any], timeout: float, what: str, nodes: list[NodeProcess]
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.url}\n" + "\n".join(
                line for line in n.log_tail(200_000).splitlines() if "httpx" not in line)[-4000:]
                for n in nodes)  # fmt: skip
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.2)


def unchanged_for_epochs(count: Callable[[], int], nodes: list[NodeProcess], epochs: int,
                         epoch_seconds: int, what: str) -> int:  # fmt: skip
    """An absence check: watch ``count`` until every node's federation reports
    ``epochs`` epochs after the current one; it must not change meanwhile."""

    def epoch() -> int:
        return min(get(f"{n.url}/v1/federation/anchoring")["epoch"] for n in nodes)

    first, last = count(), epoch() + epochs
    deadline = time.monotonic() + (epochs + 2) * epoch_seconds + 10
    while epoch() < last:
        if (now := count()) != first:
            pytest.fail(f"{what}: {first} became {now} in the epochs that followed")
        if time.monotonic() > deadline:
            pytest.fail(f"the nodes did not reach epoch {last} in time")
        time.sleep(0.2)
    assert count() == first, what
    return first


def at_epoch_start(epoch_seconds: int, *, within: float = 0.15) -> int:
    """Sleep until just after an epoch begins; return that epoch."""
    now = time.time()
    start = (int(now // epoch_seconds) + 1) * epoch_seconds
    time.sleep(start - now + within)
    return start // epoch_seconds


def append_everywhere(nodes: list[NodeProcess], namespaces: tuple[str, ...], i: int = 0) -> None:
    """One record into each namespace of each node, all at once."""
    now = int(time.time())
    jobs = [(n, ns) for n in nodes for ns in namespaces]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda j: api_json("POST", f"{j[0].url}/v1/namespaces/{j[1]}/records",
                                         example_record(j[1], i, timestamp=now).leaf), jobs))  # fmt: skip


def anchors(node: NodeProcess, ns: str) -> list[dict[str, Any]]:
    return [
        a for r in get(f"{node.url}/v1/namespaces/{ns}/anchors")["receipts"] for a in r["anchors"]
    ]


def verified(node: NodeProcess, ns: str, target: str) -> list[dict[str, Any]]:
    return [a for a in anchors(node, ns) if a["target"] == target and a["status"] == "verified"]


def all_verified(nodes: list[NodeProcess], namespaces: tuple[str, ...], target: str) -> bool:
    return all(verified(n, ns, target) for n in nodes for ns in namespaces)


@contextmanager
def cluster(tmp_path: Path, strategy: str, epoch_seconds: int, rail: Callable[[NodeProcess, int], None],
            *, roles: list[str] | None = None, extra_peers: list[dict[str, Any]] | None = None,
            quorum: int = 3) -> Iterator[list[NodeProcess]]:  # fmt: skip
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
    for i, n in enumerate(nodes):
        rail(n, i)
    wire_witnessing(nodes)
    wire_federation(nodes, quorum=quorum, anchor_strategy=strategy, epoch_seconds=epoch_seconds,
                    roles=roles, extra_peers=extra_peers)  # fmt: skip
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def check_final_receipts_offline(nodes: list[NodeProcess], tmp_path: Path, target: str,
                                 tsa_ca: Path | None = None, evm_rpc: str | None = None) -> None:  # fmt: skip
    """Every member's own logs have a final federation receipt over their
    aggregated anchor, and receipts verify offline with the CLI."""
    for n in nodes:

        def finals(n: NodeProcess = n) -> list[dict[str, Any]]:
            got = get(f"{n.url}/v1/federation/receipts")["receipts"]
            own = [r for r in got if r["origin"].startswith(n.info["origin_prefix"] + "/")]
            return [r for r in own if r["quorum_met"] and "aggregation" in r["evidence"]["anchor"]]

        got = wait_until(lambda: len({r["namespace"] for r in finals()}) == 2 and finals(), 30,
                         "final federation receipts", nodes)  # fmt: skip
        receipt_file = tmp_path / f"fed-{n.port}.json"
        receipt_file.write_text(json.dumps(got[0]))
        ok = cli(
            "federation",
            "verify",
            str(receipt_file),
            "--registry",
            str(n.directory / "federation.yaml"),
        )
        assert ok.stdout.startswith("OK:")
        # The anchor receipt of that checkpoint, re-verified on the verifier's own rail.
        ns = got[0]["namespace"]
        receipts = get(f"{n.url}/v1/namespaces/{ns}/anchors")["receipts"]
        anchor_file = tmp_path / f"anchor-{n.port}.json"
        anchor_file.write_text(json.dumps(receipts[-1]))
        args = ["--tsa-trust", str(tsa_ca)] if tsa_ca else ["--evm-rpc", str(evm_rpc)]
        out = cli("anchor", "verify", str(anchor_file), *args)
        assert out.stdout.startswith("verified") and target in out.stdout
    # A path that was tampered with no longer covers the checkpoint, offline.
    forged = json.loads(receipt_file.read_text())
    path = forged["evidence"]["anchor"]["aggregation"]["path"]
    if path:
        path[0] = "sha256:" + "00" * 32
        receipt_file.write_text(json.dumps(forged))
        bad = cli("federation", "verify", str(receipt_file), "--registry",
                  str(nodes[0].directory / "federation.yaml"), check=False)  # fmt: skip
        assert bad.returncode == 1 and "receipt_root_mismatch" in bad.stderr


def check_aggregates(nodes: list[NodeProcess], target: str) -> dict[str, str]:
    """Every member's checkpoint is in exactly one aggregate; the members of one
    aggregate agree on its root and hold every leaf index of its tree once.
    Returns the root of each aggregate by its transaction."""
    found = [a for n in nodes for ns in NAMESPACES for a in verified(n, ns, target)]
    assert len(found) == 6 and all("aggregation" in a for a in found)
    roots: dict[str, str] = {}
    for tx_ref in {a["txRef"] for a in found}:
        members = [a for a in found if a["txRef"] == tx_ref]
        (size,) = {a["aggregation"]["treeSize"] for a in members}
        assert sorted(a["aggregation"]["leafIndex"] for a in members) == list(range(size))
        (roots[tx_ref],) = {a["root"] for a in members}
    return roots


AGGREGATE_MADE = re.compile(
    r"anchored the aggregate of (\d+) checkpoints for (\S+) \(epoch (\d+)\)"
)


def aggregates_made(nodes: list[NodeProcess], target: str) -> list[tuple[int, int]]:
    """(epoch, leaves) of each aggregate the coordinators say they anchored
    (their own log lines)."""
    made = []
    for n in nodes:
        text = (n.directory / "node.log").read_text(errors="replace")
        for leaves, t, epoch in AGGREGATE_MADE.findall(text):
            if t == target:
                made.append((int(epoch), int(leaves)))
    return sorted(made)


def check_one_anchor_per_epoch(nodes: list[NodeProcess], target: str, sent: int) -> dict[str, str]:
    """The six delegations normally fall in one epoch: one aggregate, one anchor
    (``sent``: tokens or transactions).  On a loaded machine the appends and
    cadences can straddle an epoch boundary, and then each epoch's coordinator
    rightly makes its own aggregate.  What must hold: one anchor per epoch used
    (at most two epochs), every checkpoint in exactly one aggregate, no
    delegation missed.  Returns the root of each aggregate by its txRef."""
    made = aggregates_made(nodes, target)
    assert len(made) == sent, f"{sent} anchors sent for the aggregates {made}"
    assert len({epoch for epoch, _ in made}) == len(made), f"two aggregates in one epoch: {made}"
    assert sum(leaves for _, leaves in made) == 6
    assert len(made) <= 2, f"the delegations spread over {len(made)} epochs"
    for n in nodes:
        counters = get(f"{n.url}/v1/federation/anchoring")["counters"]
        assert counters["missed"] == counters["fallback"] == 0, counters
    by_tx = check_aggregates(nodes, target)
    assert len(by_tx) == sent
    return by_tx


# --------------------------------------------------------------------------
# One anchor per target per epoch: the development TSA
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["independent", "collaborative"])
def test_rfc3161_tokens_collaborative_vs_independent(tmp_path: Path, strategy: str) -> None:
    epoch = 3
    tsa_dir = tmp_path / "tsa"
    dev = DevTsa(tsa_dir)
    with DevTsaServer(dev) as tsa:

        def rail(n: NodeProcess, _: int) -> None:
            anchor_to_tsa(n, tsa.url, tsa_dir / "ca.pem", every="1s")

        with cluster(tmp_path, strategy, epoch, rail) as nodes:
            before = dev.issued
            first = at_epoch_start(epoch)
            append_everywhere(nodes, NAMESPACES)
            wait_until(
                lambda: all_verified(nodes, NAMESPACES, TSA), 30, "every log anchored", nodes
            )
            # Nothing more is anchored in the next epochs: the logs did not grow.
            tokens = unchanged_for_epochs(lambda: dev.issued, nodes, 3, epoch,
                                          "TSA tokens issued") - before  # fmt: skip
            if strategy == "independent":
                assert tokens == 6  # N x M
                assert not any("aggregation" in a for n in nodes for ns in NAMESPACES
                               for a in anchors(n, ns))  # fmt: skip
                return
            check_one_anchor_per_epoch(nodes, TSA, tokens)
            epochs = aggregates_made(nodes, TSA)  # [(epoch, leaves)], one in most runs
            assert epochs[0][0] in (first, first + 1)
            dids = [n.info["did"] for n in nodes]
            by = [choose_coordinator(FEDERATION, TSA, e, dids) for e, _ in epochs]
            made = {n.info["did"]: get(f"{n.url}/v1/federation/anchoring") for n in nodes}
            last_epoch, last_leaves = epochs[-1]
            assert made[by[-1]]["targets"][TSA]["last_aggregate"]["epoch"] == last_epoch
            assert made[by[-1]]["targets"][TSA]["last_aggregate"]["leaves"] == last_leaves
            assert sum(s["counters"]["made"] for s in made.values()) == len(epochs)
            assert all(s["counters"]["received"] == 2 and s["counters"]["refused"] == 0
                       for s in made.values())  # fmt: skip
            with urllib.request.urlopen(f"{nodes[dids.index(by[-1])].url}/metrics") as r:
                text = r.read().decode()
            mine = by.count(by[-1])
            assert f'remembrancer_aggregates_total{{event="made",target="{TSA}"}} {mine}.0' in text
            text = cli("federation", "status", "--url", nodes[0].url).stdout
            assert "collaborative anchoring: epoch" in text and f"{TSA}: coordinator" in text
            check_final_receipts_offline(nodes, tmp_path, TSA, tsa_ca=tsa_dir / "ca.pem")


# --------------------------------------------------------------------------
# One transaction per target per epoch: a real anvil
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["independent", "collaborative"])
def test_evm_transactions_collaborative_vs_independent(
    tmp_path: Path, anvil, strategy: str
) -> None:  # type: ignore[no-untyped-def]
    from eth_account import Account

    epoch = 4
    target = f"eip155:{anvil.chain_id}"
    accounts = [Account.create() for _ in range(3)]  # one funded sender per node
    for a in accounts:
        anvil.rpc("anvil_setBalance", a.address, hex(10**20))

    def rail(n: NodeProcess, i: int) -> None:
        anchor_to_evm(n, anvil.url, "0x" + bytes(accounts[i].key).hex(), chain_id=anvil.chain_id)

    def sent() -> int:
        return sum(
            int(anvil.rpc("eth_getTransactionCount", a.address, "latest"), 16) for a in accounts
        )

    with cluster(tmp_path, strategy, epoch, rail) as nodes:
        before = sent()
        at_epoch_start(epoch)
        append_everywhere(nodes, NAMESPACES)
        wait_until(lambda: all_verified(nodes, NAMESPACES, target), 40, "every log anchored", nodes)
        # Nothing more is sent in the next epochs: the logs did not grow.
        txs = unchanged_for_epochs(sent, nodes, 3, epoch, "transactions sent") - before
        if strategy == "independent":
            assert txs == 6
            return
        # The six delegations normally fall in one epoch: one aggregate, one
        # transaction.  On a loaded machine the appends and cadences can straddle
        # an epoch boundary, and then each epoch's coordinator rightly makes its
        # own aggregate; what must hold is one transaction per epoch used, every
        # checkpoint in exactly one aggregate, and no delegation missed.
        by_tx = check_one_anchor_per_epoch(nodes, target, txs)
        for tx_hash, root in by_tx.items():
            tx = anvil.rpc("eth_getTransactionByHash", tx_hash)
            assert tx["input"] == "0x5256" + root[7:]  # calldata "RV" || aggregation root
        check_final_receipts_offline(nodes, tmp_path, target, evm_rpc=anvil.url)


# --------------------------------------------------------------------------
# A coordinator that is down
# --------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["hybrid", "collaborative"])
def test_a_killed_coordinator_costs_at_most_one_epoch(tmp_path: Path, strategy: str) -> None:
    epoch = 3
    tsa_dir = tmp_path / "tsa"
    dev = DevTsa(tsa_dir)
    with DevTsaServer(dev) as tsa:

        def rail(n: NodeProcess, _: int) -> None:
            anchor_to_tsa(n, tsa.url, tsa_dir / "ca.pem", every="1s")

        with cluster(tmp_path, strategy, epoch, rail) as nodes:
            dids = [n.info["did"] for n in nodes]
            now = time.time()
            nxt = int(now // epoch) + 1
            if (nxt * epoch) - now < 0.6:  # too close to the boundary to kill in time
                nxt += 1
            dead = nodes[dids.index(choose_coordinator(FEDERATION, TSA, nxt, dids))]
            time.sleep(max(0.0, nxt * epoch - time.time() - 0.4))
            dead.stop(9)  # SIGKILL, just before its epoch
            alive = [n for n in nodes if n is not dead]
            assert at_epoch_start(epoch, within=0.1) == nxt
            before = dev.issued
            append_everywhere(alive, NAMESPACES)
            wait_until(
                lambda: all_verified(alive, NAMESPACES, TSA), 30, "the survivors anchored", alive
            )
            status = [get(f"{n.url}/v1/federation/anchoring") for n in alive]
            assert all(s["counters"]["missed"] >= 1 for s in status)
            found = [a for n in alive for ns in NAMESPACES for a in verified(n, ns, TSA)]
            if strategy == "hybrid":
                # Each member gave up on the dead coordinator and anchored alone.
                assert not any("aggregation" in a for a in found)
                assert dev.issued - before == 4
                assert all(s["counters"]["fallback"] >= 1 for s in status)
                # The anchor counters show it: a delegation failed, then a direct anchor.
                for n in alive:
                    samples = scrape(n.url)
                    for ns in NAMESPACES:
                        lv = {"namespace": ns, "target": TSA}
                        assert (
                            value(
                                samples, "remembrancer_anchors_failed_total", **lv, via="delegated"
                            )
                            >= 1
                        )
                        assert (
                            value(
                                samples, "remembrancer_anchors_attempted_total", **lv, via="direct"
                            )
                            >= 1
                        )
                        assert (
                            value(
                                samples, "remembrancer_anchors_succeeded_total", **lv, via="direct"
                            )
                            >= 1
                        )
            else:
                # Each member went to the coordinator of the next epoch: one aggregate.
                assert (
                    all("aggregation" in a for a in found) and len({a["txRef"] for a in found}) == 1
                )
                assert dev.issued - before == 1
                epochs = {s["targets"][TSA]["last_received"]["epoch"] for s in status}
                assert epochs == {nxt + 1}
                assert all(s["counters"]["fallback"] == 0 for s in status)
                # Delegated twice (the second coordinator answered), never anchored alone.
                for n in alive:
                    samples = scrape(n.url)
                    for ns in NAMESPACES:
                        lv = {"namespace": ns, "target": TSA}
                        assert (
                            value(
                                samples,
                                "remembrancer_anchors_attempted_total",
                                **lv,
                                via="delegated",
                            )
                            >= 2
                        )
                        assert (
                            value(
                                samples, "remembrancer_anchors_failed_total", **lv, via="delegated"
                            )
                            >= 1
                        )
                        assert (
                            value(
                                samples,
                                "remembrancer_anchors_succeeded_total",
                                **lv,
                                via="delegated",
                            )
                            >= 1
                        )
                        assert (
                            value(
                                samples, "remembrancer_anchors_attempted_total", **lv, via="direct"
                            )
                            == 0
                        )


# --------------------------------------------------------------------------
# A coordinator that lies, and one that stays silent
# --------------------------------------------------------------------------


class FakeCoordinator:
    """A federation peer played by the test: a real HTTP endpoint that accepts
    every message (202) and keeps the checkpoints sent to it; the test signs
    what it sends back with the peer's registry key."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.checkpoints: list[tuple[str, CheckpointContent]] = []
        self.seq = int(time.time() * 1e6)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                msg = Message.parse(body)
                if isinstance(msg.content, CheckpointContent) and msg.content.for_aggregation:
                    outer.checkpoints.append((msg.sender, msg.content))
                answer = json.dumps({"seq": msg.seq}).encode()
                self.send_response(202)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def peer(self) -> dict[str, Any]:
        return {"did": self.key.did, "endpoint": self.url, "pubkey": self.key.did,
                "status": "active", "roles": ["coordinator"]}  # fmt: skip

    def send(self, node: NodeProcess, namespace: str, claim: dict[str, Any]) -> None:
        self.seq += 1
        msg = Message.sign(self.key, ReceiptContent(namespace, claim), federation_id=FEDERATION,
                           seq=self.seq, timestamp=int(time.time()), sender=self.key.did)  # fmt: skip
        api_json("POST", f"{node.url}/federation/v1/messages", msg.to_bytes())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_lying_or_silent_coordinator_is_refused_scored_and_costs_one_epoch(
    tmp_path: Path,
) -> None:
    epoch = 3
    tsa_dir = tmp_path / "tsa"
    dev = DevTsa(tsa_dir)
    fake = FakeCoordinator()
    with DevTsaServer(dev) as tsa:

        def rail(n: NodeProcess, _: int) -> None:
            anchor_to_tsa(n, tsa.url, tsa_dir / "ca.pem", every="1s")

        # Only the fake peer may coordinate, so every member delegates to it.
        with cluster(tmp_path, "hybrid", epoch, rail, roles=["witness", "anchor", "countersign"],
                     extra_peers=[fake.peer()]) as nodes:  # fmt: skip
            liar_path, liar_rail, silent = nodes
            append_everywhere(nodes, ("dao:vaultmesh",))
            got = wait_until(lambda: len(fake.checkpoints) == 3 and fake.checkpoints, 15,
                             "three member checkpoints at the fake coordinator", nodes)  # fmt: skip
            by_sender = {sender: content for sender, content in got}
            assert set(by_sender) == {n.info["did"] for n in nodes}
            digests = {s: checkpoint_digest(Note.from_bytes(c.note.encode()).text.encode())
                       for s, c in by_sender.items()}  # fmt: skip
            tree = AggregationTree.build(digests.values())
            rfc3161 = Rfc3161Rail.from_config(
                TSA, {"url": tsa.url, "trust_bundle": str(tsa_dir / "ca.pem")}
            )
            honest = rfc3161.submit(tree.root, now=int(time.time()))
            other = rfc3161.submit(bytes(32), now=int(time.time()))  # a token for another digest

            def claim(node: NodeProcess, anchor: Any) -> AggregateAnchor:
                c = by_sender[node.info["did"]]
                assert c.epoch is not None
                size = int(c.note.split("\n")[1])
                return AggregateAnchor(FEDERATION, fake.key.did, TSA, c.epoch, c.origin, size,
                                       digests[node.info["did"]], anchor)  # fmt: skip

            # 1. A wrong path (it leads from the member's leaf elsewhere).
            agg = tree.aggregation(digests[liar_path.info["did"]])
            wrong = replace(agg, path=(bytes(32), *agg.path[1:]))
            fake.send(
                liar_path,
                "dao:vaultmesh",
                claim(liar_path, replace(honest, aggregation=wrong)).to_dict(),
            )
            wait_until(lambda: any(r["code"] == "aggregate_path_invalid"
                                   for r in get(f"{liar_path.url}/v1/federation/anchoring")["refusals"]),
                       10, "the wrong path refused", nodes)  # fmt: skip
            # 2. A true path, but evidence that does not verify for that root.
            forged = replace(
                honest,
                evidence=other.evidence,
                aggregation=tree.aggregation(digests[liar_rail.info["did"]]),
            )
            fake.send(liar_rail, "dao:vaultmesh", claim(liar_rail, forged).to_dict())
            # 3. Nothing for the third member: it waits until its deadline.

            def anchored_alone() -> bool:
                return all(any("aggregation" not in a for a in verified(n, "dao:vaultmesh", TSA))
                           for n in nodes)  # fmt: skip

            wait_until(anchored_alone, 3 * epoch + 10, "every member anchored alone", nodes)
            for n in nodes:
                # Nothing the fake coordinator sent became an anchor anywhere.
                assert not any("aggregation" in a for a in anchors(n, "dao:vaultmesh"))
                peer = next(
                    p for p in get(f"{n.url}/v1/federation")["peers"] if p["did"] == fake.key.did
                )
                assert peer["status"] != "active"  # probation or suspended: proven twice over
            status = {n.url: get(f"{n.url}/v1/federation/anchoring") for n in nodes}
            codes = {u: {r["code"] for r in s["refusals"]} for u, s in status.items()}
            assert codes[liar_path.url] == {"aggregate_path_invalid"}
            assert codes[liar_rail.url] == {"aggregate_anchor_unverified"}
            assert codes[silent.url] == set() and status[silent.url]["counters"]["missed"] == 1
            assert all(s["counters"]["fallback"] == 1 for s in status.values())
            # The evidence is kept and gossiped: both proofs, at every node.
            for n in nodes:

                def findings(n: NodeProcess = n) -> set[str]:
                    out = set()
                    for e in get(f"{n.url}/v1/federation/evidence")["evidence"]:
                        doc = json.loads(e["file"])
                        if doc.get("accused") == fake.key.did:
                            out.add(doc["finding"])
                    return out

                wait_until(lambda: findings() == {"root_mismatch", "rail_failed"}, 10,
                           "both proofs at every node", nodes)  # fmt: skip
    fake.close()


# --------------------------------------------------------------------------
# The scheduler's delegation hook, in process, with the real TSA rail
# --------------------------------------------------------------------------


class TakeOver:
    """A delegate that takes every due level over (or none), and says which."""

    def __init__(self, take: bool) -> None:
        self.take = take
        self.requests: list[Delegation] = []

    async def delegate(self, request: Delegation) -> bool:
        self.requests.append(request)
        return self.take


def test_the_scheduler_hands_due_levels_to_its_delegate(tmp_path: Path) -> None:
    from importlib import resources

    from remembrancer.anchoring.base import RailRegistry, VerifyContext
    from remembrancer.anchoring.scheduler import Scheduler
    from remembrancer.core.errors import VerificationError
    from remembrancer.core.namespace import parse_namespaces
    from remembrancer.log.namespaces import StaticNamespaces
    from remembrancer.log.sequencer import Sequencer
    from remembrancer.storage import open_store

    doc = yaml.safe_load(
        resources.files("remembrancer.examples").joinpath("namespaces.yaml").read_text()
    )
    doc["namespaces"]["dao:vaultmesh"]["cadence"] = {"cold": {"target": TSA, "every": "1s"}}
    doc["namespaces"]["fin:clearing"]["cadence"] = {}
    dev = DevTsa(tmp_path / "tsa")

    async def go(tsa_url: str) -> None:
        store = open_store(f"sqlite:///{tmp_path / 's.db'}")
        seq = Sequencer(
            store, SigningKey.generate(), "alpha.test", StaticNamespaces(parse_namespaces(doc))
        )
        rails = RailRegistry(
            {"rfc3161": {"tsa": {"url": tsa_url, "trust_bundle": str(tmp_path / "tsa" / "ca.pem")}}}
        )
        sched = Scheduler(store, seq, rails)
        notified: list[Any] = []

        async def on_verified(ns: str, anchor: Any, note: bytes) -> None:
            notified.append((ns, anchor))

        sched.on_verified.append(on_verified)
        delegate = TakeOver(take=True)
        sched.delegate = delegate
        await seq.submit(example_record("dao:vaultmesh", 0, timestamp=int(time.time())).leaf)
        before = dev.issued
        outcomes = dict(((ns, lv), o) for ns, lv, o in await sched.tick())
        assert outcomes[("dao:vaultmesh", "cold")] == "delegated" and dev.issued == before
        (req,) = delegate.requests
        head = seq.head("dao:vaultmesh")
        assert head is not None and (req.size, req.target, req.level) == (head.size, TSA, "cold")
        assert req.digest == checkpoint_digest(Note.from_bytes(head.checkpoint).text.encode())
        assert sched.level_state("dao:vaultmesh", "cold").last_size == head.size
        assert dict(((ns, lv), o) for ns, lv, o in await sched.tick())[("dao:vaultmesh", "cold")] in (
            "not_due", "unchanged")  # fmt: skip
        # The delegate hands back an aggregated anchor made on the real rail.
        rail = rails.get(TSA)
        tree = AggregationTree.build([req.digest, bytes(32)])
        made = rail.submit(tree.root, now=int(time.time()))
        ctx = VerifyContext(int(time.time()))
        other = replace(made, aggregation=tree.aggregation(bytes(32)))
        with pytest.raises(VerificationError):  # the path of the other leaf does not cover ours
            await sched.add_anchor("dao:vaultmesh", req.size, req.checkpoint, other,
                                   rail.verify(other, ctx))  # fmt: skip
        # The stored status is this node's verdict, never the claim's: a claim
        # of "verified" whose token does not verify here is kept as failed.
        ours = replace(made, aggregation=tree.aggregation(req.digest))
        broken = replace(ours, tx_ref="broken", evidence={**ours.evidence, "nonce": "1"})
        kept = await sched.add_anchor("dao:vaultmesh", req.size, req.checkpoint, broken,
                                      rail.verify(broken, ctx))  # fmt: skip
        assert broken.status == "verified" and kept.status == "failed"
        await sched.add_anchor("dao:vaultmesh", req.size, req.checkpoint, ours,
                               rail.verify(ours, ctx))  # fmt: skip
        receipt = sched.receipt("dao:vaultmesh", req.size)
        assert receipt is not None and receipt.verified[0].aggregation is not None
        assert receipt.verified[0].key == ours.key
        # The hooks run as tasks, in the order they were started: had the failed
        # anchor notified, its call would be the first.
        await until(lambda: notified, "the on_verified hook")
        assert [(ns, a.key) for ns, a in notified] == [("dao:vaultmesh", ours.key)]
        covering = sched.covering("dao:vaultmesh", 0)
        assert covering is not None and covering.size == req.size
        # The hybrid fallback: nothing to do while a live anchor covers the head ...
        assert await sched.anchor_direct("dao:vaultmesh", "cold") == "unchanged"
        # ... and a direct anchor on the node's own rail once the log grew.
        await seq.submit(example_record("dao:vaultmesh", 1, timestamp=int(time.time())).leaf)
        assert await sched.anchor_direct("dao:vaultmesh", "cold") == "verified"
        assert dev.issued == before + 2  # the aggregate (made above) and the direct anchor
        assert len(delegate.requests) == 1  # anchor_direct never delegates
        # A delegate that declines: the scheduler anchors itself, as without one.
        sched.delegate = TakeOver(take=False)
        await seq.submit(example_record("dao:vaultmesh", 2, timestamp=int(time.time())).leaf)
        last = sched.level_state("dao:vaultmesh", "cold").last_anchor_at
        await until(lambda: int(time.time()) >= last + 1, "the level to be due again (every 1s)")
        assert (
            dict(((ns, lv), o) for ns, lv, o in await sched.tick())[("dao:vaultmesh", "cold")]
            == "verified"
        )
        await seq.close()
        store.close()

    with DevTsaServer(dev) as tsa:
        asyncio.run(go(tsa.url))
