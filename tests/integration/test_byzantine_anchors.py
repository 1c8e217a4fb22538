"""Issue 14, rule 1: anchor verification is a pure function of evidence and
local policy.  A malicious federation member runs as its own process (the
harness :mod:`remembrancer.testing.byzantine`, with a registry key the test
holds) against real node processes, and tries each attack on anchors:

- a fake Bitcoin anchor (an OpenTimestamps proof with only a pending
  calendar attestation) claimed ``verified``, for countersigning and in
  ``remembrancer anchor verify``;
- an EVM anchor one block deep, claimed ``verified`` or ``requiredDepth: 1``,
  against nodes whose rail requires 12 confirmations (a real anvil);
- fake Bitcoin claims against a genuine RFC 3161 anchor in the replica view
  and its conflict order;
- a coordinator's unverifiable aggregate in collaborative anchoring;
- an anchor that does not cover the checkpoint it is claimed for.

Each test asserts the specific refusal code, that no countersignature (or
countersigning request) left the honest nodes, and that nothing was stored.
docs/federation.md ("Threat model: anchors") points at each of them."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail
from remembrancer.cli.client import api_json
from remembrancer.core.aggregation import AggregateAnchor, AggregationTree
from remembrancer.core.anchor import Anchor, AnchorReceipt, Finality, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, format_vkey
from remembrancer.demo.procs import NodeProcess, cli, init_node, wire_federation
from remembrancer.demo.records import example_record
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    BundleContent,
    HeartbeatContent,
    ReceiptContent,
)
from remembrancer.federation.receipts import FederationReceipt
from remembrancer.testing.byzantine import ByzantinePeer, forged_ots_evidence

FED = "byz-anchors"
NS = "dao:vaultmesh"
TSA = "rfc3161:tsa"
BTC = "btc:regtest"
EVM = "eip155:31337"
ALL_ROLES = ["witness", "anchor", "countersign", "relay", "coordinator"]


def get(url: str) -> Any:
    return api_json("GET", url)


def wait_until(check: Callable[[], Any], what: str, nodes: list[NodeProcess],
               timeout: float = 20.0) -> Any:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.url}\n{n.log_tail(4000)}" for n in nodes)
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(0.1)


@dataclass
class World:
    """Two honest nodes and mallory, a registry member played by a separate process."""

    alpha: NodeProcess
    beta: NodeProcess
    mallory: ByzantinePeer
    key: SigningKey  # mallory's registry key, held by the test
    origin: str  # mallory's own log, which the honest nodes witness
    tsa: DevTsaServer
    tsa_ca: Path
    headers: Path  # the honest nodes' Bitcoin headers (none)

    @property
    def nodes(self) -> list[NodeProcess]:
        return [self.alpha, self.beta]

    def note(self, size: int, seed: bytes = b"") -> tuple[bytes, bytes]:
        """A checkpoint of mallory's log signed by her key, and its digest."""
        root = checkpoint_digest(b"root %d %s" % (size, seed))
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.key)
        return note, checkpoint_digest(Note.from_bytes(note).text.encode())

    def receipt(self, note: bytes, anchor: Anchor) -> FederationReceipt:
        r = FederationReceipt(FED, NS, self.origin, note, anchor)
        return r.with_signature(r.countersign(self.key, "anchor", int(time.time())))

    def genuine_tsa(self, digest: bytes) -> Anchor:
        rail = Rfc3161Rail.from_config(TSA, {"url": self.tsa.url, "trust_bundle": str(self.tsa_ca)})
        return rail.submit(digest, now=int(time.time()))


def refusals(node: NodeProcess, receipt_id: str) -> list[dict[str, Any]]:
    return [r for r in get(f"{node.url}/v1/federation")["claim_refusals"]
            if r["receipt"] == receipt_id]  # fmt: skip


def judged_claim(node: NodeProcess, mallory: ByzantinePeer, receipt_id: str,
                 nodes: list[NodeProcess]) -> dict[str, Any]:  # fmt: skip
    """Wait until ``node`` refused the claim ``receipt_id`` or countersigned it
    (a ``countersign`` message reached mallory); fail if it countersigned,
    else return the refusal."""

    def done() -> Any:
        signed = [m for m in mallory.inbox("countersign", sender=node.info["did"])
                  if m["content"]["receipt_id"] == receipt_id]  # fmt: skip
        return signed or refusals(node, receipt_id)

    got = wait_until(done, f"{node.url} to judge {receipt_id}", nodes)
    assert "code" in got[0], f"{node.url} countersigned the claim: {got[0]['content']}"
    (refused,) = got
    return refused  # type: ignore[no-any-return]


def final_receipts(node: NodeProcess) -> list[dict[str, Any]]:
    return list(get(f"{node.url}/v1/federation/receipts")["receipts"])


def evidence_count(node: NodeProcess) -> int:
    return len(get(f"{node.url}/v1/federation/evidence")["evidence"])


def start_federation(base: Path, mallory: ByzantinePeer, *, anchoring: dict[str, Any],
                     witness_origin: str | None, strategy: str = "independent",
                     epoch_seconds: int | None = None, roles: list[str] | None = None,
                     cadence: dict[str, Any] | None = None) -> list[NodeProcess]:  # fmt: skip
    """alpha and beta, with mallory in the registry (quorum 2), the given rails
    (verify-only unless they name a url), witnessing mallory's log."""
    import yaml

    nodes = [init_node(base / name, origin_prefix=f"{name}.test") for name in ("alpha", "beta")]
    wire_federation(nodes, quorum=2, federation_id=FED, heartbeat_seconds=60,
                    extra_peers=[mallory.registry_entry(mallory_roles(strategy))],
                    anchor_strategy=strategy, epoch_seconds=epoch_seconds, roles=roles)  # fmt: skip
    for n in nodes:
        changes: dict[str, Any] = {"anchoring": anchoring}
        if witness_origin is not None:
            vkey = format_vkey(witness_origin, mallory.key.public)
            changes["witness"] = {"name": f"{n.directory.name}.test/witness",
                                  "logs": [{"vkey": vkey}]}  # fmt: skip
        changes["scheduler"] = ({"tick_seconds": 0.2, "reverify_seconds": 0.5} if cadence
                                else {"enabled": False})  # fmt: skip
        n.edit_config(**changes)
        ns_file = n.directory / "namespaces.yaml"
        doc = yaml.safe_load(ns_file.read_text())
        for name, ns in doc["namespaces"].items():
            ns["cadence"] = (cadence or {}) if name == NS else {}
        ns_file.write_text(yaml.safe_dump(doc))
    started: list[NodeProcess] = []
    try:
        for n in nodes:
            started.append(n.start())
    except BaseException:
        for n in started:
            n.stop()
        raise
    return nodes


def mallory_roles(strategy: str) -> list[str]:
    # As a coordinator, mallory is the only one: every member delegates to her.
    return ALL_ROLES if strategy == "independent" else ["coordinator", "countersign"]


def rails(tsa_ca: Path, headers: Path, evm_rpc: str | None = None) -> dict[str, Any]:
    """Verify-only rails: this node's own trust bundle, Bitcoin headers (none
    here, no calendars) and, with ``evm_rpc``, a chain that needs 12 blocks."""
    out: dict[str, Any] = {
        "rfc3161": {"tsa": {"trust_bundle": str(tsa_ca)}},
        "btc": {"regtest": {"headers_file": str(headers), "calendars": [], "upgrade": False}},
    }
    if evm_rpc is not None:
        out["eip155"] = {"31337": {"rpc": evm_rpc, "confirmations": 12}}
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("byz-anchors")
    key = SigningKey.generate()
    headers = base / "headers.txt"
    headers.write_text("# this node has no Bitcoin headers\n")
    with (
        DevTsaServer(DevTsa(base / "tsa")) as tsa,
        ByzantinePeer.start(base / "mallory", key, federation_id=FED) as mallory,
    ):
        origin = f"mallory.test/{NS}"
        nodes = start_federation(base, mallory, anchoring=rails(base / "tsa" / "ca.pem", headers),
                                 witness_origin=origin)  # fmt: skip
        try:
            yield World(nodes[0], nodes[1], mallory, key, origin, tsa, base / "tsa" / "ca.pem",
                        headers)  # fmt: skip
        finally:
            for n in nodes:
                n.stop()


# --------------------------------------------------------------------------
# The harness itself
# --------------------------------------------------------------------------


def test_the_malicious_peer_is_a_separate_process_with_its_own_endpoint(world: World) -> None:
    m = world.mallory
    assert m.proc.pid != os.getpid() and m.proc.poll() is None
    status, answer = m.send(world.alpha.url, HeartbeatContent(()))
    assert status == 202 and answer["seq"] > 0
    peers = get(f"{world.alpha.url}/v1/federation")["peers"]
    assert next(p for p in peers if p["did"] == m.did)["last_heartbeat"] is not None
    # A replayed seq is refused by the node: the harness sends exactly what it is told.
    assert m.send(world.alpha.url, HeartbeatContent(()), seq=answer["seq"])[0] == 409
    # The honest nodes reach it at its registry endpoint (anti-entropy requests).
    m.wait_for("request", sender=world.alpha.info["did"], timeout=20)
    # Its control API needs the token it wrote at start.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{m.url}/control/inbox", timeout=5)
    assert e.value.code == 403
    e.value.close()


# --------------------------------------------------------------------------
# Countersigning
# --------------------------------------------------------------------------


def test_a_pending_only_ots_proof_claimed_verified_is_never_countersigned(
    world: World, tmp_path: Path
) -> None:
    note, digest = world.note(11)
    evidence = forged_ots_evidence(digest)
    claim = Anchor(BTC, digest, "verified", tx_ref="ots:" + evidence["commitment"], block_number=120,
                   anchor_ts=int(time.time()) - 600, finality=Finality(6, 1, "final"),
                   evidence=evidence)  # fmt: skip
    receipt = world.receipt(note, claim)
    countersigned = len(world.mallory.inbox("countersign"))
    proofs = {n.url: evidence_count(n) for n in world.nodes}
    for n in world.nodes:
        assert world.mallory.send(n.url, AnchorContent(NS, receipt.to_dict()))[0] == 202
    for n in world.nodes:
        refused = judged_claim(n, world.mallory, receipt.id, world.nodes)
        assert refused["code"] == "anchor_claim_unverified"
        assert refused["cause"] == "ots_pending_only"
    # No countersignature left the honest nodes; nothing was stored.
    assert len(world.mallory.inbox("countersign")) == countersigned
    for n in world.nodes:
        assert not [r for r in final_receipts(n) if r["anchor"]["tx_hash"] == claim.tx_ref]
        assert evidence_count(n) == proofs[n.url]

    # `anchor verify` on the same claim: "pending", never "verified", exit 4;
    # with a Bitcoin attestation it cannot check (no header): "unchecked", exit 4.
    receipt_file = tmp_path / "fake-btc.json"
    receipt_file.write_text(
        json.dumps(AnchorReceipt(world.origin, 11, note, digest, (claim,)).to_dict())
    )
    out = cli(
        "anchor", "verify", str(receipt_file), "--btc-headers", str(world.headers), check=False
    )
    assert out.returncode == 4, out.stdout + out.stderr
    assert out.stdout.startswith("pending ") and "ots_pending_only" in out.stdout
    assert "verified" not in out.stdout
    attested = replace(claim, evidence=forged_ots_evidence(digest, bitcoin_height=120))
    receipt_file.write_text(
        json.dumps(AnchorReceipt(world.origin, 11, note, digest, (attested,)).to_dict())
    )
    out = cli("anchor", "verify", str(receipt_file), "--btc-headers", str(world.headers), "--json",
              check=False)  # fmt: skip
    assert out.returncode == 4, out.stdout + out.stderr
    (row,) = json.loads(out.stdout)["anchors"]
    assert (row["status"], row["code"]) == ("unchecked", "btc_header_unavailable")
    # Without any Bitcoin data at all, likewise.
    out = cli("anchor", "verify", str(receipt_file), check=False)
    assert out.returncode == 4 and out.stdout.startswith("unchecked ")


def test_an_evm_anchor_one_block_deep_is_not_countersigned_where_12_are_required(
    tmp_path: Path, anvil: Any
) -> None:
    from remembrancer.anchoring.evm.rail import EvmRail
    from remembrancer.demo.anvil import DEV_KEYS

    key = SigningKey.generate()
    headers = tmp_path / "headers.txt"
    headers.write_text("")
    DevTsa(tmp_path / "tsa")
    origin = f"mallory.test/{NS}"
    with ByzantinePeer.start(tmp_path / "mallory", key, federation_id=FED) as mallory:
        nodes = start_federation(tmp_path, mallory, witness_origin=origin,
                                 anchoring=rails(tmp_path / "tsa" / "ca.pem", headers, anvil.url))  # fmt: skip
        try:
            root = checkpoint_digest(b"evm")
            note = sign_checkpoint(Checkpoint(origin, 21, root), key)
            digest = checkpoint_digest(Note.from_bytes(note).text.encode())
            # Mallory's real transaction, mined in one block: 1 confirmation.
            key_file = tmp_path / "evm.key"
            key_file.write_text(DEV_KEYS[1] + "\n")
            key_file.chmod(0o600)
            made = EvmRail.from_config(EVM, {"rpc": anvil.url, "key_file": str(key_file)}).submit(
                digest, now=int(time.time())
            )
            assert made.block_number is not None and made.finality.observed_depth == 1
            claims = {
                "claimed verified": replace(made, status="verified", finality=Finality(1, 1, "final")),
                "claimed 12 deep": replace(made, status="verified", finality=Finality(12, 12, "final")),
            }  # fmt: skip
            for n, (why, claim) in zip(nodes, claims.items(), strict=True):
                r = FederationReceipt(FED, NS, origin, note, claim)
                r = r.with_signature(r.countersign(key, "anchor", int(time.time())))
                assert mallory.send(n.url, AnchorContent(NS, r.to_dict()))[0] == 202, why
                refused = judged_claim(n, mallory, r.id, nodes)
                assert refused["code"] == "anchor_claim_depth_insufficient", why
                assert refused["cause"] == "anchor_depth_insufficient"
                assert "1 confirmation(s), this node requires 12" in refused["reason"]
            assert mallory.inbox("countersign") == []
            assert all(final_receipts(n) == [] for n in nodes)
            # A policy difference, not a lie: no evidence, no blame.
            assert all(evidence_count(n) == 0 for n in nodes)
            peers = get(f"{nodes[0].url}/v1/federation")["peers"]
            assert next(p for p in peers if p["did"] == key.did)["status"] == "active"

            # The control: 11 more blocks make it 12 deep; the same claim is countersigned.
            anvil.rpc("anvil_mine", hex(11))
            r = FederationReceipt(FED, NS, origin, note, claims["claimed verified"])
            r = r.with_signature(r.countersign(key, "anchor", int(time.time())))
            for n in nodes:
                assert mallory.send(n.url, AnchorContent(NS, r.to_dict()))[0] == 202
            got = mallory.wait_for("countersign", count=2, timeout=20)
            assert {m["sender"] for m in got} == {n.info["did"] for n in nodes}
            assert {m["content"]["receipt_id"] for m in got} == {r.id}
        finally:
            for n in nodes:
                n.stop()


def test_a_genuine_anchor_with_made_up_facts_is_not_countersigned(world: World) -> None:
    """The TSA token is real and covers the checkpoint, but the claim states an
    earlier anchor time (to win the conflict order) than the token's genTime:
    a countersignature would commit to that time, so none is given."""
    note, digest = world.note(12)
    real = world.genuine_tsa(digest)
    assert real.anchor_ts is not None
    receipt = world.receipt(note, replace(real, anchor_ts=real.anchor_ts - 86_400))
    countersigned = len(world.mallory.inbox("countersign"))
    assert world.mallory.send(world.beta.url, AnchorContent(NS, receipt.to_dict()))[0] == 202
    refused = judged_claim(world.beta, world.mallory, receipt.id, world.nodes)
    assert (refused["code"], refused["cause"]) == ("anchor_claim_facts_mismatch", "anchor_verified")
    assert "anchor time" in refused["reason"]
    assert len(world.mallory.inbox("countersign")) == countersigned
    assert not [r for r in final_receipts(world.beta) if r["anchor"]["tx_hash"] == real.tx_ref]


# --------------------------------------------------------------------------
# The replica view and the conflict order
# --------------------------------------------------------------------------


def replica_view(node: NodeProcess, origin: str, size: int) -> dict[str, Any] | None:
    try:
        views = get(f"{node.url}/v1/replicas/{origin}/anchors")["receipts"]
    except RemembrancerError as e:  # nothing held yet
        if e.code != "replica_unknown":
            raise
        return None
    return next((v for v in views if v["size"] == size), None)


def refused_metric(node: NodeProcess, code: str) -> float:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("remembrancer_replica_refused_total{") and f'code="{code}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_fake_btc_claim_never_supersedes_a_genuine_tsa_anchor(world: World) -> None:
    note, digest = world.note(31)
    tsa = world.genuine_tsa(digest)
    send = world.mallory.send

    def bundle(anchor: Anchor) -> BundleContent:
        return BundleContent(
            NS, anchors=(AnchorReceipt(world.origin, 31, note, digest, (anchor,)).to_dict(),)
        )

    for n in world.nodes:
        assert send(n.url, bundle(tsa))[0] == 202
    for n in world.nodes:
        view = wait_until(
            lambda n=n: replica_view(n, world.origin, 31), "the TSA anchor", world.nodes
        )
        assert view["reverified_here"] == [tsa.key]

    # 1. A Bitcoin anchor claimed verified, earlier than the TSA anchor, whose
    #    proof holds only a pending calendar attestation: refused, not kept.
    ots = forged_ots_evidence(digest)
    fake = Anchor(BTC, digest, "verified", tx_ref="ots:" + ots["commitment"], block_number=100,
                  anchor_ts=(tsa.anchor_ts or 0) - 3600, finality=Finality(6, 1, "final"),
                  evidence=ots)  # fmt: skip
    before = {n.url: refused_metric(n, "replica_anchor_unverified") for n in world.nodes}
    for n in world.nodes:
        assert send(n.url, bundle(fake))[0] == 202
    for n in world.nodes:

        def judged(n: NodeProcess = n) -> Any:
            view = replica_view(n, world.origin, 31)
            kept = view is not None and len(view["anchors"]) > 1
            return kept or refused_metric(n, "replica_anchor_unverified") > before[n.url]

        wait_until(judged, "the claim to be judged", world.nodes)
        view = replica_view(n, world.origin, 31)
        assert view is not None and [a["txRef"] for a in view["anchors"]] == [tsa.tx_ref], view
        assert view["anchors"][0]["superseded_by"] is None
        assert refused_metric(n, "replica_anchor_unverified") == before[n.url] + 1

    # 2. One with a Bitcoin attestation at a height these nodes have no header
    #    for: kept as the claim it is, never verified here, so it ranks after
    #    the TSA anchor this node verified (before the fix, btc > rfc3161 made
    #    it the winner).
    attested = forged_ots_evidence(digest, bitcoin_height=100)
    unchecked = replace(fake, tx_ref="ots:" + attested["commitment"], evidence=attested)
    for n in world.nodes:
        assert send(n.url, bundle(unchecked))[0] == 202
    for n in world.nodes:
        view = wait_until(lambda n=n: (v := replica_view(n, world.origin, 31)) and len(v["anchors"]) == 2 and v,
                          "the unchecked claim", world.nodes)  # fmt: skip
        first, second = view["anchors"]
        assert (first["target"], first["txRef"], first["superseded_by"]) == (TSA, tsa.tx_ref, None)
        assert (second["target"], second["superseded_by"]) == (BTC, tsa.key)
        assert view["reverified_here"] == [tsa.key]
    assert world.mallory.inbox("countersign") == []
    for n in world.nodes:
        assert not [r for r in final_receipts(n) if r["origin"] == world.origin]


# --------------------------------------------------------------------------
# Collaborative anchoring
# --------------------------------------------------------------------------


def test_a_coordinators_unverifiable_anchor_never_enters_a_members_receipts(tmp_path: Path) -> None:
    key = SigningKey.generate()
    headers = tmp_path / "headers.txt"
    headers.write_text("")
    DevTsa(tmp_path / "tsa")
    rogue = DevTsa(tmp_path / "rogue", name="Rogue TSA")  # a TSA the members do not trust
    cadence = {"cold": {"target": TSA, "every": "1s"}, "strong": {"target": BTC, "every": "1s"}}
    with (
        DevTsaServer(rogue) as rogue_server,
        ByzantinePeer.start(tmp_path / "mallory", key, federation_id=FED) as mallory,
    ):
        nodes = start_federation(tmp_path, mallory, witness_origin=None, strategy="collaborative",
                                 epoch_seconds=2, roles=["witness", "anchor", "countersign", "relay"],
                                 anchoring=rails(tmp_path / "tsa" / "ca.pem", headers),
                                 cadence=cadence)  # fmt: skip
        try:
            now = int(time.time())
            for n in nodes:
                api_json("POST", f"{n.url}/v1/namespaces/{NS}/records",
                         example_record(NS, 0, timestamp=now).leaf)  # fmt: skip
            got = mallory.wait_for("checkpoint", count=4, timeout=30)
            handed = [m for m in got if m["content"].get("target") in (TSA, BTC)]
            assert {(m["sender"], m["content"]["target"]) for m in handed} == {
                (n.info["did"], t) for n in nodes for t in (TSA, BTC)
            }
            rogue_rail = Rfc3161Rail.from_config(TSA, {"url": rogue_server.url,
                                                       "trust_bundle": str(tmp_path / "rogue" / "ca.pem")})  # fmt: skip
            # The pending proof first: the false TSA token is proven misbehaviour,
            # and two proofs (both members gossip theirs) suspend mallory.
            for target in (BTC, TSA):
                mine = [m for m in handed if m["content"]["target"] == target]
                digests = {m["sender"]: checkpoint_digest(Note.from_bytes(m["content"]["note"].encode()).text.encode())
                           for m in mine}  # fmt: skip
                tree = AggregationTree.build(digests.values())
                if target == TSA:  # a real token, from a TSA the members do not trust
                    anchor = rogue_rail.submit(tree.root, now=int(time.time()))
                else:  # a Bitcoin proof with only a pending calendar attestation
                    ots = forged_ots_evidence(tree.root)
                    anchor = Anchor(BTC, tree.root, "verified", tx_ref="ots:" + ots["commitment"],
                                    block_number=100, anchor_ts=int(time.time()),
                                    finality=Finality(6, 1, "final"), evidence=ots)  # fmt: skip
                assert anchor.status == "verified"
                for m in mine:
                    c = m["content"]
                    claim = AggregateAnchor(FED, key.did, target, c["epoch"], c["origin"],
                                            int(c["note"].split("\n")[1]), digests[m["sender"]],
                                            replace(anchor, aggregation=tree.aggregation(digests[m["sender"]])))  # fmt: skip
                    node = next(n for n in nodes if n.info["did"] == m["sender"])
                    assert mallory.send(node.url, ReceiptContent(NS, claim.to_dict()))[0] == 202

            def refused(n: NodeProcess) -> dict[str, str]:
                return {r["target"]: r["code"] + " " + r["reason"]
                        for r in get(f"{n.url}/v1/federation/anchoring")["refusals"]}  # fmt: skip

            def judged(n: NodeProcess) -> Any:
                codes = refused(n)
                received = get(f"{n.url}/v1/federation/anchoring")["counters"]["received"]
                return (len(codes) + received == 2) and (codes, received)

            for n in nodes:
                codes, received = wait_until(lambda n=n: judged(n), "both claims judged", nodes)
                assert received == 0, f"{n.url} took a coordinator's claim: {codes}"
                assert codes[TSA].startswith("aggregate_anchor_unverified")
                assert "tsa_chain_untrusted" in codes[TSA]
                assert codes[BTC].startswith("aggregate_anchor_unverified")
                assert "ots_pending_only" in codes[BTC]
            # The member moves on at once; with no other coordinator it would anchor
            # alone, but its rails here only verify: so nothing at all is stored.
            for n in nodes:
                wait_until(lambda n=n: get(f"{n.url}/v1/federation/anchoring")["counters"]["fallback"] >= 2,
                           "the fallback", nodes)  # fmt: skip
                assert get(f"{n.url}/v1/namespaces/{NS}/anchors")["receipts"] == []
                assert final_receipts(n) == []
            # Nobody was asked to countersign, and nothing was countersigned.
            assert mallory.inbox("anchor") == [] and mallory.inbox("countersign") == []
            # The TSA claim is false on its face (a token that fails the members'
            # own trust): proven, kept as evidence; the pending proof is not proof.
            for n in nodes:
                findings = {json.loads(e["file"]).get("finding")
                            for e in get(f"{n.url}/v1/federation/evidence")["evidence"]}  # fmt: skip
                assert "rail_failed" in findings
        finally:
            for n in nodes:
                n.stop()


# --------------------------------------------------------------------------
# The anchor must cover the checkpoint (runs last: it puts mallory on probation)
# --------------------------------------------------------------------------


def test_zz_an_anchor_of_another_checkpoint_is_refused_as_proven(world: World) -> None:
    note, _digest = world.note(41)
    _other_note, other = world.note(42)
    genuine = world.genuine_tsa(other)  # a real token, but for another checkpoint
    receipt = world.receipt(note, genuine)
    countersigned = len(world.mallory.inbox("countersign"))
    assert world.mallory.send(world.alpha.url, AnchorContent(NS, receipt.to_dict()))[0] == 202
    refused = judged_claim(world.alpha, world.mallory, receipt.id, world.nodes)
    assert refused["code"] == "anchor_claim_root_mismatch"
    assert len(world.mallory.inbox("countersign")) == countersigned
    assert not [r for r in final_receipts(world.alpha) if r["anchor"]["tx_hash"] == genuine.tx_ref]
    # Proven misbehaviour: mallory's own signed claim, kept as evidence.
    findings = wait_until(
        lambda: {json.loads(e["file"]).get("finding")
                 for e in get(f"{world.alpha.url}/v1/federation/evidence")["evidence"]},
        "the evidence", world.nodes,
    )  # fmt: skip
    assert "root_mismatch" in findings
    peers = get(f"{world.alpha.url}/v1/federation")["peers"]
    assert next(p for p in peers if p["did"] == world.mallory.did)["status"] != "active"
