"""Nobody can be blamed for what they did not sign (issue 14, rule 2).

A real node (``Node``: its FederationService, peer scoring, anti-entropy and
collaborative-anchoring handlers; a SQLite store, and in a second run of the
module a PostgreSQL one) runs in process.  Its
registry lists it (Y), an honest peer X and two attackers, M1 and M2.
Hypothesis drives many sequences of messages from M1 and M2: junk
countersignatures in receipts and bundles, evidence of every kind built from
what X really signed (consistent checkpoints, valid countersignatures over
anchors that hold) and from what X merely relayed (bundles and receipt
messages carrying others' junk), anchor claims, countersignatures in X's
name, aggregate claims naming X.  After every sequence:

- X's status at Y, its score record and its history are exactly as before:
  only liveness (X's own heartbeats) could move them, and X sends nothing;
- Y keeps no evidence about X;
- every countersignature Y stores, and every one it would relay in a
  bundle, verifies against the registry (the relay filter).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remembrancer.core.aggregation import AggregateAnchor, AggregationTree
from remembrancer.core.anchor import Anchor, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import Note, format_vkey
from remembrancer.federation.evidence.claims import ClaimEvidence
from remembrancer.federation.evidence.equivocation import EquivocationEvidence
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    BundleContent,
    CountersignContent,
    EvidenceContent,
    HeartbeatContent,
    ReceiptContent,
)
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    verified_countersignatures,
)
from remembrancer.federation.registry.model import Registry
from remembrancer.federation.registry.scoring import PeerScore
from remembrancer.federation.transport import FederationClient, RetryPolicy
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.log.schemas import bundled_schemas
from remembrancer.node.config import Limits, WitnessedLog
from remembrancer.node.runtime import Node
from remembrancer.node.statuses import federation_answer
from remembrancer.storage import open_store
from remembrancer.testing.naive_merkle import NaiveTree
from remembrancer.testing.waiting import heartbeats_under_way

FED = "blame-federation"
NS = "dao:vaultmesh"
CLOSED = "http://127.0.0.1:9"  # nobody listens: deliveries fail at once
Y = SigningKey.generate(b"\x70" * 32)  # the node under test
X = SigningKey.generate(b"\x71" * 32)  # the honest peer that attackers try to frame
M1 = SigningKey.generate(b"\x72" * 32)
M2 = SigningKey.generate(b"\x73" * 32)
ROLES = ["witness", "anchor", "countersign", "relay", "coordinator"]
X_ORIGIN = f"x.test/{NS}"
M_ORIGIN = f"m1.test/{NS}"
X_TREE = NaiveTree.from_entries([b"x entry %d" % i for i in range(40)])
M_TREE = NaiveTree.from_entries([b"m entry %d" % i for i in range(40)])
EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples"


def _note(key: SigningKey, origin: str, tree: NaiveTree, size: int) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, tree.root(size)), key)


def _digest(note: bytes) -> bytes:
    return checkpoint_digest(Note.from_bytes(note).text.encode("utf-8"))


def _anchor(root: bytes, tx: str) -> Anchor:
    return Anchor("rfc3161:tsa", root, "verified", tx_ref=tx, anchor_ts=int(time.time()),
                  evidence={"type": "rfc3161", "tsr": "AAAA", "nonce": "1"})  # fmt: skip


def _receipt(note: bytes, origin: str, anchor: Anchor) -> FederationReceipt:
    return FederationReceipt(FED, NS, origin, note, anchor)


def _signed(r: FederationReceipt, *keys: tuple[SigningKey, str]) -> FederationReceipt:
    now = int(time.time())
    for key, role in keys:
        r = r.with_signature(r.countersign(key, role, now))  # type: ignore[arg-type]
    return r


# What X really signed: consistent checkpoints of its log, and countersignatures
# over anchors that cover their checkpoints.
X_NOTES = [_note(X, X_ORIGIN, X_TREE, n) for n in range(1, 30)]
M_NOTES = [_note(M1, M_ORIGIN, M_TREE, n) for n in range(1, 30)]
HONEST_X = _signed(_receipt(X_NOTES[9], X_ORIGIN, _anchor(_digest(X_NOTES[9]), "x-tx")),
                   (X, "anchor"), (M1, "witness"))  # fmt: skip
HONEST_M = _signed(_receipt(M_NOTES[9], M_ORIGIN, _anchor(_digest(M_NOTES[9]), "m-tx")),
                   (M1, "anchor"), (X, "witness"))  # fmt: skip
JUNK_NODES = [X.did, M1.did, M2.did, Y.did, SigningKey.generate(b"\x74" * 32).did,
              "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"]  # fmt: skip


def _message(key: SigningKey, content: Any, seq: int) -> bytes:
    return Message.sign(key, content, federation_id=FED, seq=seq, timestamp=int(time.time()),
                        sender=key.did).to_bytes()  # fmt: skip


_SEQ = [int(time.time() * 1e6)]


def _next_seq() -> int:
    _SEQ[0] = max(_SEQ[0] + 1, int(time.time() * 1e6))
    return _SEQ[0]


# --- the node ---------------------------------------------------------------------


class World:
    def __init__(self, tmp: Path, store_url: str) -> None:
        schemas = bundled_schemas()
        import yaml

        doc = yaml.safe_load((EXAMPLES / "namespaces.yaml").read_text())
        namespaces = parse_namespaces(doc, known_schemas=frozenset(schemas.names()))
        peers = [{"did": k.did, "endpoint": CLOSED, "pubkey": k.did, "status": "active",
                  "roles": ROLES} for k in (Y, X, M1, M2)]  # fmt: skip
        registry = Registry.from_dict({"federation_id": FED, "quorum": 2,
                                       "anchor_strategy": "independent", "peers": peers})  # fmt: skip
        self.node = Node(
            store=open_store(store_url), node_key=Y, origin_prefix="y.test",
            namespaces=StaticNamespaces(namespaces), schemas=schemas,
            limits=Limits(client_rate=1e9, client_burst=10**9, namespace_rate=1e9,
                          namespace_burst=10**9),
            witnessed=(WitnessedLog(X_ORIGIN, (format_vkey(X_ORIGIN, X.public),)),
                       WitnessedLog(M_ORIGIN, (format_vkey(M_ORIGIN, M1.public),))),
            scheduler_enabled=False, federation_registry=registry,
            heartbeat_seconds=3600, antientropy_seconds=3600,
        )  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        await self.node.start()
        service = self.node.federation
        assert service is not None
        # Deliveries to the closed endpoints (gossip, answers) fail at once: no retries.
        once = RetryPolicy(max_attempts=1, deadline=2.0)
        service.outbox.client = FederationClient(timeout=2.0, connect_timeout=1.0, retry=once)
        assert self.node.replicator is not None
        self.node.replicator.messages = FederationClient(timeout=2.0, connect_timeout=1.0,
                                                         retry=once)  # fmt: skip
        await heartbeats_under_way()
        self.baseline = set(asyncio.all_tasks())

    def deliver(self, bodies: list[bytes]) -> list[int]:
        return self.loop.run_until_complete(self._deliver(bodies))

    def reinstate_attackers(self) -> None:
        """Lift what M1 and M2 earned so far (their own false statements get them
        suspended), as a quorum-approved registry change would, so that the next
        sequence is judged again rather than refused at the door."""
        service = self.node.federation
        assert service is not None
        for m in (M1, M2):
            service.scores.reinstate(m.did, int(time.time()), reason="test", evidence_ref=None)
        service.peers.save_sync()

    async def _deliver(self, bodies: list[bytes]) -> list[int]:
        service = self.node.federation
        assert service is not None
        out = []
        for body in bodies:
            received = await service.handle(body, "application/json")
            out.append(federation_answer(received)[0])
            await self._settle()
        return out

    async def _settle(self, limit: float = 20.0) -> None:
        """Wait until the work the accepted messages started is done."""
        deadline = time.monotonic() + limit
        me = asyncio.current_task()
        while time.monotonic() < deadline:
            busy = [t for t in asyncio.all_tasks() if t is not me and t not in self.baseline
                    and not t.done() and "heartbeat" not in t.get_name()
                    and "anti-entropy" not in t.get_name()]  # fmt: skip
            if not busy:
                return
            await asyncio.wait(busy, timeout=max(0.01, deadline - time.monotonic()))
        raise AssertionError("the node did not settle")

    def close(self) -> None:
        self.loop.run_until_complete(self.node.stop())
        self.loop.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_store_urls: Any) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("blame"), module_store_urls.new("blame"))
    yield w
    w.close()


def _x_untouched(w: World) -> None:
    service = w.node.federation
    assert service is not None
    assert service.scores.peer_state(X.did).to_dict() == PeerScore().to_dict()
    assert service.scores.history(X.did) == ()
    assert service.scores.status(X.did) == "active"
    assert next(p for p in service.verifier.peers if p.did == X.did).status == "active"
    assert service.evidence_store.incidents(X.did) == {}
    assert service.evidence_store.incidents(X_ORIGIN) == {}


def _only_verified_countersignatures(w: World) -> None:
    """What Y stores, and what it would relay, carries only verified countersignatures."""
    service = w.node.federation
    assert service is not None and w.node.replicator is not None
    keys = service.registry_keys()
    import json

    for row in service.store.federation_receipts(limit=10_000):
        receipt = FederationReceipt.from_dict(json.loads(row.receipt))
        assert verified_countersignatures(receipt, keys)[1] == (), receipt.signatures
    for _, d in w.node.replicator._receipt_items(NS, None, None):
        assert verified_countersignatures(FederationReceipt.from_dict(d), keys)[1] == ()


# --- what the attackers send --------------------------------------------------------


def _junk_sig(node: str, salt: int, receipt: FederationReceipt) -> Countersignature:
    """A countersignature in ``node``'s name that does not verify: random bytes, or a
    real signature by someone else over this statement, or X's over another one."""
    kind = salt % 3
    if kind == 0:
        return Countersignature(node, "witness", int(time.time()), os.urandom(64))
    if kind == 1:
        real = receipt.countersign(M2, "witness", int(time.time()))
        return Countersignature(node, "witness", real.timestamp, real.sig)
    other = _receipt(X_NOTES[3], X_ORIGIN, _anchor(_digest(X_NOTES[3]), "other"))
    real = other.countersign(X, "witness", int(time.time()))
    return Countersignature(node, "witness", real.timestamp, real.sig)


def _with_junk(receipt: FederationReceipt, junk: list[tuple[int, int]]) -> FederationReceipt:
    r = receipt
    for node_i, salt in junk:
        cs = _junk_sig(JUNK_NODES[node_i % len(JUNK_NODES)], salt, receipt)
        r = FederationReceipt(r.federation_id, r.namespace, r.origin, r.checkpoint, r.anchor,
                              (*r.signatures, cs), r.finalized_at)  # fmt: skip
    return r


def _x_relay(junked: FederationReceipt, kind: int) -> tuple[bytes, str]:
    """A message X signed that carries others' junk (what X relayed): its bytes and
    where the receipt is in it."""
    if kind % 2 == 0:
        return _message(X, BundleContent(NS, (junked.to_dict(),), ()), _next_seq()), (
            "/content/receipts/0"
        )
    return _message(X, ReceiptContent(NS, junked.to_dict()), _next_seq()), "/content/receipt"


def _false_aggregate(coordinator: str) -> dict[str, Any]:
    digest = _digest(X_NOTES[5])
    tree = AggregationTree.build([hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()])
    path = tree.aggregation(hashlib.sha256(b"a").digest())
    anchor = Anchor("rfc3161:tsa", tree.root, "verified", tx_ref="agg", anchor_ts=int(time.time()),
                    aggregation=path)  # fmt: skip
    return AggregateAnchor(FED, coordinator, "rfc3161:tsa", 1, X_ORIGIN, 6, digest,
                           anchor).to_dict()  # fmt: skip


def _claim(reporter: SigningKey, message: bytes, pointer: str, finding: str,
           kind: str = "invalid_anchor_claim", countersigner: str | None = None) -> str:  # fmt: skip
    ev = ClaimEvidence.create(
        kind=kind, federation_id=FED, accused=X.did, message=message,  # type: ignore[arg-type]
        receipt_at=pointer, countersigner=countersigner or X.did,
        finding=finding, reporter_key=reporter, reported_at=int(time.time()),  # type: ignore[arg-type]
    )  # fmt: skip
    return ev.to_bytes().decode("utf-8")


def build(action: tuple[int, int, int, list[tuple[int, int]]]) -> bytes:
    """One attacker message: (what, attacker, variant, junk countersignatures)."""
    what, who, variant, junk = action
    m = (M1, M2)[who % 2]
    base = (HONEST_X, HONEST_M)[variant % 2]
    junked = _with_junk(base, junk or [(0, variant)])
    if what == 0:  # a final receipt with junk countersignatures, as a receipt message
        content: Any = ReceiptContent(NS, junked.to_dict())
    elif what == 1:  # the same in a bundle
        content = BundleContent(NS, (junked.to_dict(),), ())
    elif what == 2:  # frame X with its own relay: "forged countersignature"
        msg, at = _x_relay(junked, variant)
        node = JUNK_NODES[(junk[0][0] if junk else 0) % len(JUNK_NODES)]
        file = _claim(m, msg, at, "signature_invalid", "forged_countersignature", node)
        content = EvidenceContent("forged_countersignature", X.did, file)
    elif what == 3:  # "invalid anchor claim" over X's honest countersignature
        msg, at = _x_relay(junked, variant)
        finding = ("root_mismatch", "rail_failed")[variant % 2]
        content = EvidenceContent("invalid_anchor_claim", X.did, _claim(m, msg, at, finding))
    elif what == 4:  # ... over a receipt whose anchor was changed under X's signature
        bad = HONEST_X
        forged = FederationReceipt(bad.federation_id, bad.namespace, bad.origin, bad.checkpoint,
                                   _anchor(os.urandom(32), "x-tx"), bad.signatures)  # fmt: skip
        msg, at = _x_relay(_with_junk(forged, junk), variant)
        content = EvidenceContent("invalid_anchor_claim", X.did,
                                  _claim(m, msg, at, "root_mismatch"))  # fmt: skip
    elif what == 5:  # a false aggregate naming X: relayed by X, or sent by the attacker
        agg = _false_aggregate(X.did)
        if variant % 2:
            msg = _message(X, BundleContent(NS, (agg,), ()), _next_seq())
            at = "/content/receipts/0"
        else:
            msg = _message(m, ReceiptContent(NS, agg), _next_seq())
            at = "/content/receipt"
        content = EvidenceContent("invalid_anchor_claim", X.did,
                                  _claim(m, msg, at, "root_mismatch"))  # fmt: skip
    elif what == 6:  # X's consistent checkpoints passed off as a fork
        a, b = sorted((variant % 20, 20 + variant % 9))
        prefix = X_TREE.root(a + 1)
        proof = tuple(X_TREE.consistency_proof(a + 1, b + 1))
        ev = EquivocationEvidence(X_ORIGIN, format_vkey(X_ORIGIN, X.public), X_NOTES[a],
                                  X_NOTES[b], prefix, proof)  # fmt: skip
        content = EvidenceContent("equivocation", X.did, ev.to_bytes().decode("utf-8"))
    elif what == 7:  # a real fork of X's origin, signed by another key
        key = (m, SigningKey.generate())[variant % 2]
        one = sign_checkpoint(Checkpoint(X_ORIGIN, 7, b"\x01" * 32), key)
        two = sign_checkpoint(Checkpoint(X_ORIGIN, 7, b"\x02" * 32), key)
        ev = EquivocationEvidence(X_ORIGIN, format_vkey(X_ORIGIN, key.public), one, two)
        content = EvidenceContent("equivocation", X.did, ev.to_bytes().decode("utf-8"))
    elif what == 8:  # a countersignature in X's name
        cs = _junk_sig(X.did, variant, HONEST_X)
        content = CountersignContent(NS, HONEST_X.id, cs)
    elif what == 9:  # an anchor claim on X's log (covering or not) with X's name in it
        root = _digest(X_NOTES[12]) if variant % 2 else os.urandom(32)
        claim = _with_junk(_receipt(X_NOTES[12], X_ORIGIN, _anchor(root, f"claim-{variant}")), junk)
        content = AnchorContent(NS, claim.to_dict())
    elif what == 10:  # an aggregate claim naming X as coordinator, sent by the attacker
        content = ReceiptContent(NS, _false_aggregate(X.did))
    else:
        content = HeartbeatContent(())
    return _message(m, content, _next_seq())


def test_every_attack_is_judged_and_refused_with_its_code(world: World) -> None:
    """Each kind of attacker message, once, with the refusal it must meet (so
    the property below is not vacuous: these are what it combines)."""
    service = world.node.federation
    assert service is not None
    before = dict(service.dropped)
    world.reinstate_attackers()
    bodies = [build((what, 1, variant, [(4, 0), (0, 1)]))
              for what in range(12) for variant in (0, 1)]  # fmt: skip
    assert world.deliver(bodies) == [202] * len(bodies)
    grew = {k for k, n in service.dropped.items() if n > before.get(k, 0)}
    assert grew >= {
        ("countersignature", "countersignature_signer_unknown"),  # made-up did:key
        ("countersignature", "countersignature_invalid"),  # junk in X's name
        ("evidence", "evidence_not_attributable"),  # X only relayed it
        ("evidence", "evidence_not_misbehaviour"),  # X's countersignature holds
        ("evidence", "evidence_message_unsigned"),  # X never signed the aggregate claim
        ("evidence", "evidence_subject_unknown"),  # a fork by a key nobody knows
        ("evidence", "rail_not_configured"),  # cannot judge rail_failed here: no blame
    }, grew
    _x_untouched(world)
    _only_verified_countersignatures(world)


ACTION = st.tuples(st.integers(0, 11), st.integers(0, 1), st.integers(0, 40),
                   st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), max_size=3))  # fmt: skip


@settings(max_examples=int(os.environ.get("BLAME_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(st.lists(ACTION, min_size=1, max_size=6))
def test_no_messages_from_others_change_a_peer_s_status(
    world: World, actions: list[tuple[int, int, int, list[tuple[int, int]]]]
) -> None:
    world.reinstate_attackers()
    statuses = world.deliver([build(a) for a in actions])
    # Authentic and fresh: judged after 202, until the attacker's own lies got it
    # suspended (an anchor claim it countersigned, a fork it signed).
    assert statuses[0] == 202 and set(statuses) <= {202, 410}, statuses
    _x_untouched(world)
    _only_verified_countersignatures(world)


def test_a_receipt_with_junk_is_kept_without_it(world: World) -> None:
    """Regression (issue 14): a final receipt with a junk countersignature appended
    was kept whole, because a quorum of the others verified, and later relayed."""
    service = world.node.federation
    assert service is not None
    base = _signed(_receipt(X_NOTES[15], X_ORIGIN, _anchor(_digest(X_NOTES[15]), "junk-test")),
                   (X, "anchor"), (M2, "witness"))  # fmt: skip
    junked = _with_junk(base, [(4, 0), (0, 1)])
    before = dict(service.dropped)
    world.reinstate_attackers()
    assert world.deliver([_message(M2, ReceiptContent(NS, junked.to_dict()), _next_seq())]) == [202]
    stored = service.receipts_page(NS, limit=1000)["receipts"]
    mine = [r for r in stored if r["anchor"]["tx_hash"] == "junk-test"]
    assert len(mine) == 1
    assert [s["node"] for s in mine[0]["signatures"]] == [X.did, M2.did]
    assert (
        service.dropped[("countersignature", "countersignature_signer_unknown")]
        == before.get(("countersignature", "countersignature_signer_unknown"), 0) + 1
    )
    assert (
        service.dropped[("countersignature", "countersignature_invalid")]
        == before.get(("countersignature", "countersignature_invalid"), 0) + 1
    )
    _only_verified_countersignatures(world)


def test_the_attackers_do_get_blamed_for_what_they_signed(world: World) -> None:
    """The property above is not vacuous: the same node does act on evidence, and
    an attacker's own false statement (an anchor claim it signed whose root is
    not its checkpoint's digest) costs it its status."""
    service = world.node.federation
    assert service is not None
    world.reinstate_attackers()
    lie = _signed(_receipt(M_NOTES[20], M_ORIGIN, _anchor(os.urandom(32), "m-lie")),
                  (M1, "anchor"))  # fmt: skip
    assert world.deliver([_message(M1, AnchorContent(NS, lie.to_dict()), _next_seq())]) == [202]
    assert service.scores.status(M1.did) in ("probation", "suspended")
    assert service.evidence_store.incidents(M1.did)
    _x_untouched(world)
