"""Issue 19, cases 1 and 5: a hostile federation member cannot win by volume
against a node's disk or its anchoring budget (docs/operations.md,
"Resource budget: storage and anchoring").

Real node processes; the attacker is a registry member in a process of its
own (:mod:`remembrancer.testing.byzantine`), with a key the test holds.

- Disk: the attacker sends the victim bundle after bundle of anchor claims
  on checkpoints of its own log, each anchor on a rail no node has (so it
  stays unverified) with large ``evidence``.  The store grows by at most the
  (peer, log) budget, the oversized claims are refused and cost the attacker
  its score, and a third node that the attacker never contacts stores none
  of them, while a verified claim does reach it through the victim.
- Anchoring: a member hands the coordinator fresh self-signed checkpoints
  for logs it does not host (refused: no anchor at all), then fresh ones of
  its own log for three targets every epoch (at most ``anchors_per_epoch``
  aggregates per epoch); an honest member's log is still anchored.

Each test prints the figures it observed (``-s`` shows them).
"""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail
from remembrancer.cli.client import api_json
from remembrancer.core.aggregation import EpochClock
from remembrancer.core.anchor import Anchor, AnchorReceipt, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, format_vkey
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import example_record
from remembrancer.federation.protocol.contents import BundleContent, CheckpointContent
from remembrancer.net.http import request
from remembrancer.testing.byzantine import ByzantinePeer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

NS = "dao:vaultmesh"
TSA = "rfc3161:tsa"
ALIEN = "rfc3161:elsewhere"  # a rail no node here has: claims on it stay unverified
MEMBER_ROLES = ["witness", "anchor", "countersign", "relay"]
BUDGET_BYTES = 256 * 1024  # federation.budget.unverified_bytes_per_peer_log (default)
BUDGET_CLAIMS = 16  # federation.budget.unverified_claims_per_peer_log (default)


def get(url: str) -> Any:
    return api_json("GET", url)


def wait_until(check: Callable[[], Any], what: str, nodes: list[NodeProcess],
               timeout: float = 60.0) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.url}\n{n.log_tail(4000)}" for n in nodes)
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


def send(peer: ByzantinePeer, url: str, content: Any, nodes: list[NodeProcess]) -> None:
    """Send until the node takes it (202): a 429 (the per-peer message rate) is waited out."""

    def sent() -> bool:
        status, answer = peer.send(url, content)
        assert status in (202, 429), (status, answer)
        return status == 202

    wait_until(sent, "the node to take the message", nodes, timeout=30)


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    text = request("GET", node.url + "/metrics", timeout=10, limit=8 << 20,
                   trust_env=False).content.decode()  # fmt: skip
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def replica_anchors(node: NodeProcess, origin: str) -> list[dict[str, Any]]:
    """Every anchor receipt the node holds for ``origin``, a page at a time."""
    out: list[dict[str, Any]] = []
    after = -1
    quoted = urllib.parse.quote(origin, safe="/:")
    for _ in range(1000):
        try:
            page = get(f"{node.url}/v1/replicas/{quoted}/anchors?after={after}&limit=50")
        except RemembrancerError as e:
            if "HTTP 404" in str(e):  # no replica of it here yet
                return out
            raise
        out += page["receipts"]
        if page["next"] is None:
            return out
        after = page["next"]
    raise AssertionError("more pages than any budget allows")


def stored_claim_bytes(node: NodeProcess) -> int:
    """Bytes of the anchor-claim rows in the node's SQLite store (read-only)."""
    db = node.directory / "data" / "remembrancer.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        (n,) = conn.execute("SELECT COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) FROM state"
                            " WHERE scope LIKE 'replica-anchors%'").fetchone()  # fmt: skip
    return int(n)


def store_file_bytes(node: NodeProcess) -> int:
    data = node.directory / "data"
    return sum(p.stat().st_size for p in data.glob("remembrancer.db*"))


class Mallory:
    """The attacker's own log and the claims and checkpoints she signs for it."""

    def __init__(self, key: SigningKey, origin: str) -> None:
        self.key, self.origin = key, origin

    def note(self, size: int, origin: str | None = None) -> bytes:
        origin = origin or self.origin
        root = checkpoint_digest(f"{origin} root {size}".encode())
        return sign_checkpoint(Checkpoint(origin, size, root), self.key)

    def claim(
        self, size: int, anchor: Anchor | None = None, *, evidence: int = 0
    ) -> dict[str, Any]:
        note = self.note(size)
        digest = checkpoint_digest(Note.from_bytes(note).text.encode())
        anchor = anchor or Anchor(ALIEN, digest, "submitted", f"junk-{size}",
                                  anchor_ts=int(time.time()), evidence={"blob": "x" * evidence})  # fmt: skip
        return AnchorReceipt(self.origin, size, note, digest, (anchor,)).to_dict()


@contextmanager
def started(nodes: list[NodeProcess]) -> Iterator[list[NodeProcess]]:
    with ExitStack() as stack:
        for n in nodes:
            n.start()
            stack.callback(n.stop)
        yield nodes


def follow(node: NodeProcess, origin: str, key: SigningKey) -> None:
    """Make ``node`` witness (and so replicate) the log ``origin`` signed by ``key``."""
    doc = yaml.safe_load(node.config.read_text())
    witness = doc.get("witness") or {}
    witness["logs"] = [*(witness.get("logs") or []), {"vkey": format_vkey(origin, key.public)}]
    node.edit_config(witness=witness)


def no_cadence(node: NodeProcess) -> None:
    ns_file = node.directory / "namespaces.yaml"
    doc = yaml.safe_load(ns_file.read_text())
    for ns in doc["namespaces"].values():
        ns["cadence"] = {}
    ns_file.write_text(yaml.safe_dump(doc))


def set_federation(node: NodeProcess, **changes: Any) -> None:
    doc = yaml.safe_load(node.config.read_text())
    node.edit_config(federation={**doc["federation"], **changes})


# --------------------------------------------------------------------------
# Case 1: disk, through anchor claims in bundles
# --------------------------------------------------------------------------


def test_anchor_claims_from_a_hostile_peer_cannot_fill_the_store(tmp_path: Path) -> None:
    fed = "hostile-storage"
    key = SigningKey.generate()
    mallory = Mallory(key, f"mallory.test/{NS}")
    with (
        DevTsaServer(DevTsa(tmp_path / "tsa")) as tsa,
        ByzantinePeer.start(tmp_path / "mallory", key, federation_id=fed) as peer,
    ):
        ca = tmp_path / "tsa" / "ca.pem"
        victim = init_node(tmp_path / "victim", origin_prefix="victim.test")
        third = init_node(tmp_path / "third", origin_prefix="third.test")
        nodes = [victim, third]
        wire_witnessing(nodes)
        wire_federation(nodes, quorum=2, federation_id=fed, heartbeat_seconds=0.5,
                        extra_peers=[peer.registry_entry(MEMBER_ROLES)])  # fmt: skip
        for n in nodes:
            follow(n, mallory.origin, key)
            no_cadence(n)
            n.edit_config(anchoring={"rfc3161": {"tsa": {"url": tsa.url, "trust_bundle": str(ca)}}},
                          scheduler={"enabled": False})  # fmt: skip
            set_federation(n, antientropy_seconds=0.5)
        with started(nodes):
            peer.heartbeats([victim.url], interval=0.5)  # she never contacts the third node
            # A genuine claim: her checkpoint anchored on the TSA both nodes trust.
            # The victim verifies it and relays it to the third node.
            rail = Rfc3161Rail.from_config(TSA, {"url": tsa.url, "trust_bundle": str(ca)})
            good_note = mallory.note(1)
            good = rail.submit(checkpoint_digest(Note.from_bytes(good_note).text.encode()),
                               now=int(time.time()))  # fmt: skip
            send(peer, victim.url, BundleContent(NS, (), (mallory.claim(1, good),)), nodes)
            wait_until(lambda: any(a["txRef"] == good.tx_ref for r in replica_anchors(
                third, mallory.origin) for a in r["anchors"]),
                "the verified claim relayed to the third node", nodes)  # fmt: skip

            before_rows, before_file = stored_claim_bytes(victim), store_file_bytes(victim)
            started_at = time.monotonic()
            # The attack: 40 bundles with ~150 KB of evidence each, then 40 with
            # ~30 KB (under the 32 KiB cap of rfc3161), all on a rail nobody has.
            for size in range(2, 42):
                send(peer, victim.url, BundleContent(NS, (), (mallory.claim(size, evidence=150_000),)),
                     nodes)  # fmt: skip
            for size in range(100, 140):
                send(peer, victim.url, BundleContent(NS, (), (mallory.claim(size, evidence=30_000),)),
                     nodes)  # fmt: skip
            sent_bytes = 40 * 150_000 + 40 * 30_000
            wait_until(lambda: metric(victim, "remembrancer_replica_refused_total",
                                      code="anchor_evidence_too_large") >= 40
                       and any(r["size"] == 139 for r in replica_anchors(victim, mallory.origin)),
                       "the victim to judge every bundle", nodes)  # fmt: skip
            attack_s = time.monotonic() - started_at
            growth = stored_claim_bytes(victim) - before_rows
            file_growth = store_file_bytes(victim) - before_file
            held = replica_anchors(victim, mallory.origin)
            junk = sorted(r["size"] for r in held if r["size"] >= 2)
            print(f"\n[storage] {sent_bytes} bytes of claims in 80 bundles ({attack_s:.1f} s):"
                  f" claim rows grew {growth} bytes (budget {BUDGET_BYTES}), store files"
                  f" {file_growth} bytes; kept {len(junk)} unverified claims: {junk}")  # fmt: skip
            # The bound: at most the (peer, log) budget, plus the claims' own framing.
            assert growth <= BUDGET_BYTES + 16 * 1024
            assert 1 <= len(junk) <= BUDGET_CLAIMS and junk == list(range(140 - len(junk), 140))
            assert all(s >= 100 for s in junk)  # every 150 KB claim was refused
            # The verified claim is never dropped by the budget.
            assert any(a["txRef"] == good.tx_ref for r in held for a in r["anchors"])
            # Reads are paged: a page holds what it was asked for, and says where to go on.
            quoted = urllib.parse.quote(mallory.origin, safe="/:")
            page = get(f"{victim.url}/v1/replicas/{quoted}/anchors?limit=3")
            assert len(page["receipts"]) == 3 and page["next"] == page["receipts"][-1]["size"]
            # The oversized claims cost her her standing at the victim.
            history = get(f"{victim.url}/v1/federation")["history"]
            assert any(c["peer"] == peer.did and c["new"] == "probation" for c in history), history

            # The third node: after two more of its anti-entropy rounds with the
            # victim, it holds the verified claim and none of hers.
            def rounds() -> int:
                return int(get(f"{third.url}/v1/federation/replicas")["rounds"])

            start = rounds()
            wait_until(lambda: rounds() >= start + 2, "two anti-entropy rounds at the third node",
                       nodes)  # fmt: skip
            at_third = replica_anchors(third, mallory.origin)
            assert [r["size"] for r in at_third] == [1]
            assert [a["txRef"] for a in at_third[0]["anchors"]] == [good.tx_ref]
            assert stored_claim_bytes(third) < 64 * 1024

            # Honest work goes on: a record at the victim reaches the third node's replica.
            api_json("POST", f"{victim.url}/v1/namespaces/{NS}/records",
                     example_record(NS, 0, timestamp=int(time.time())).leaf)  # fmt: skip
            origin = f"victim.test/{NS}"
            wait_until(lambda: any(r["origin"] == origin and r["size"] >= 1 for r in
                                   get(f"{third.url}/v1/federation/replicas")["replicas"]),
                       "the third node's replica of the victim's log", nodes)  # fmt: skip


# --------------------------------------------------------------------------
# Case 5: the anchoring budget of a collaborative coordinator
# --------------------------------------------------------------------------


EPOCH = 3


def at_epoch_start(within: float = 0.3) -> int:
    """Wait until just after an epoch begins; return that epoch."""
    clock = EpochClock(EPOCH)
    target = (clock.epoch(time.time()) + 1) * EPOCH + within
    while time.time() < target:  # a deadline on the wall clock, not a fixed pause
        time.sleep(min(0.05, max(0.0, target - time.time())))
    return clock.epoch(time.time())


def test_a_member_cannot_spend_the_coordinators_anchoring_budget(tmp_path: Path) -> None:
    fed = "hostile-anchoring"
    key = SigningKey.generate()
    mallory = Mallory(key, f"mallory.test/{NS}")
    dev = DevTsa(tmp_path / "tsa")
    with (
        DevTsaServer(dev) as tsa,
        ByzantinePeer.start(tmp_path / "mallory", key, federation_id=fed) as peer,
    ):
        ca = tmp_path / "tsa" / "ca.pem"
        coord = init_node(tmp_path / "coord", origin_prefix="coord.test")
        honest = init_node(tmp_path / "honest", origin_prefix="honest.test")
        nodes = [coord, honest]
        wire_witnessing(nodes)
        wire_federation(nodes, quorum=2, federation_id=fed, heartbeat_seconds=0.5,
                        extra_peers=[peer.registry_entry(MEMBER_ROLES)],
                        anchor_strategy="collaborative", epoch_seconds=EPOCH)  # fmt: skip
        # Only the coordinator may coordinate: every epoch of every target is its.
        for n in nodes:
            path = n.directory / "federation.yaml"
            doc = yaml.safe_load(path.read_text())
            for p in doc["peers"]:
                if p["endpoint"] != coord.peer_url:
                    p["roles"] = MEMBER_ROLES
            path.write_text(yaml.safe_dump(doc))
        for n in nodes:
            anchor_to_tsa(n, tsa.url, ca, every="1s")
        rail = {"url": tsa.url, "trust_bundle": str(ca)}
        coord.edit_config(anchoring={"rfc3161": {"tsa": rail, "tsa2": rail, "tsa3": rail}})
        set_federation(coord, budget={"anchors_per_epoch": 1})
        no_cadence(coord)
        follow(coord, mallory.origin, key)  # her own log, which the coordinator follows
        with started(nodes):
            peer.heartbeats([coord.url, honest.url], interval=0.5)
            did = coord.info["did"]

            def status() -> dict[str, Any]:
                return dict(get(f"{coord.url}/v1/federation/anchoring"))

            # Phase 1: honest logs idle; each epoch she hands the coordinator fresh
            # self-signed checkpoints of logs she does not host: the honest
            # member's log (under her key) and a log nobody follows.
            size = 1000
            issued = dev.issued
            first = at_epoch_start()
            for _ in range(3):
                epoch = at_epoch_start()
                for origin in (f"honest.test/{NS}", "mallory.test/fin:clearing"):
                    size += 1
                    content = CheckpointContent(origin, mallory.note(size, origin).decode(),
                                                origin.rsplit("/", 1)[1], TSA, epoch)  # fmt: skip
                    send(peer, coord.url, content, nodes)
            wait_until(lambda: EpochClock(EPOCH).epoch(time.time()) >= epoch + 2,
                       "the last epoch's cut-off", nodes)  # fmt: skip
            not_hosted = dev.issued - issued
            print(f"\n[anchoring] 6 checkpoints of logs she does not host over"
                  f" {epoch - first + 1} epochs: {not_hosted} anchors")  # fmt: skip
            assert not_hosted == 0
            assert not [m for m in peer.inbox("receipt") if m["sender"] == did]
            # ... and each cost her score at the coordinator (the honest member's stays).
            scores = {p["did"]: p["score"] for p in get(f"{coord.url}/v1/federation")["peers"]}
            print(f"[anchoring] scores at the coordinator: hers {scores[peer.did]},"
                  f" the honest member's {scores[honest.info['did']]}")  # fmt: skip
            assert scores[peer.did] < scores[honest.info["did"]] - 5

            # Phase 2: fresh checkpoints of her own log for three targets, every
            # epoch; the honest member's log grows meanwhile and is anchored.
            made_before = status()["counters"]["made"]
            first = at_epoch_start()
            api_json("POST", f"{honest.url}/v1/namespaces/{NS}/records",
                     example_record(NS, 0, timestamp=int(time.time())).leaf)  # fmt: skip
            epochs = 6
            for _ in range(epochs):
                epoch = at_epoch_start()
                for target in (TSA, "rfc3161:tsa2", "rfc3161:tsa3"):
                    size += 1
                    content = CheckpointContent(mallory.origin, mallory.note(size).decode(), NS,
                                                target, epoch)  # fmt: skip
                    send(peer, coord.url, content, nodes)
            wait_until(lambda: EpochClock(EPOCH).epoch(time.time()) >= epoch + 2,
                       "the last epoch's deadline", nodes)  # fmt: skip
            made = status()["counters"]["made"] - made_before
            window = epoch + 2 - first  # epochs in which the coordinator could anchor
            counters = status()["counters"]
            print(f"[anchoring] {3 * epochs} fresh checkpoints of her own log for 3 targets over"
                  f" {epochs} epochs: {made} anchors in {window} epochs (cap 1 per epoch);"
                  f" counters {counters}")  # fmt: skip
            assert made <= window
            assert counters["deferred"] >= 1

            # The honest member's checkpoint is anchored all the same (in an
            # aggregate, or alone after its deadline).
            def anchored() -> bool:
                got = get(f"{honest.url}/v1/namespaces/{NS}/anchors")["receipts"]
                return any(a["status"] == "verified" for r in got for a in r["anchors"])

            wait_until(anchored, "the honest member's log anchored", nodes, timeout=90)
