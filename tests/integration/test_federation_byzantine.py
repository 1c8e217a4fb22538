"""Byzantine peers against real node processes.  The test process plays two
registered peers: mallory (active, runs her own log) and sally (suspended).
Each misbehaviour is detected, refused and, where proven, recorded with
evidence that verifies offline."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import format_vkey
from remembrancer.core.witness import AddCheckpointRequest
from remembrancer.demo.procs import init_node, wire_federation
from remembrancer.federation.evidence.equivocation import verify_equivocation
from remembrancer.federation.evidence.parse import parse_evidence
from remembrancer.federation.protocol.contents import HeartbeatContent
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import Countersignature

FED = "test-federation"
ROLES = ["witness", "anchor", "countersign", "relay", "coordinator"]
MALLORY = SigningKey.generate()
SALLY = SigningKey.generate()
MALLORY_LOG = "mallory.test/dao:vaultmesh"


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _msg(
    key: SigningKey, content, seq: int, ts: int | None = None, sender: str | None = None
) -> bytes:  # type: ignore[no-untyped-def]
    return Message.sign(key, content, federation_id=FED, seq=seq, timestamp=ts or int(time.time()),
                        sender=sender or key.did).to_bytes()  # fmt: skip


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("byz")
    ns = [init_node(base / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
    extra = [
        {"did": MALLORY.did, "endpoint": "http://127.0.0.1:9/", "pubkey": MALLORY.did, "status": "active", "roles": ROLES},
        {"did": SALLY.did, "endpoint": "http://127.0.0.1:9/", "pubkey": SALLY.did, "status": "suspended", "roles": ROLES},
    ]  # fmt: skip
    wire_federation(ns, quorum=2, extra_peers=extra, heartbeat_seconds=60)
    # n0 witnesses mallory's log and can check RFC 3161 anchors against its own trust bundle.
    from remembrancer.anchoring.rfc3161.devtsa import DevTsa

    DevTsa(base / "tsa")
    ns[0].edit_config(witness={"name": "n0.test/witness", "logs": [{"vkey": format_vkey(MALLORY_LOG, MALLORY.public)}]},
                      anchoring={"rfc3161": {"tsa": {"url": "http://127.0.0.1:9/", "trust_bundle": str(base / "tsa" / "ca.pem")}}},
                      scheduler={"enabled": False})  # fmt: skip
    for n in ns:
        n.start()
    yield ns
    for n in ns:
        n.stop()


def test_replayed_stale_impersonated_and_suspended_messages_are_refused(nodes) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = nodes[0], nodes[1]
    url = f"{alpha.url}/federation/v1/messages"
    hb = HeartbeatContent(())
    good = _msg(MALLORY, hb, 10)
    first = _post(url, good)
    assert first[0] == 202, first
    status, body = _post(url, good)
    assert status == 409 and json.loads(body)["error"]["code"] == "replayed"
    status, body = _post(url, _msg(MALLORY, hb, 11, ts=int(time.time()) - 3600))
    assert status == 422 and json.loads(body)["error"]["code"] == "stale"
    beta_did = beta.info["did"]
    status, body = _post(
        url, _msg(MALLORY, hb, 2**52, sender=beta_did)
    )  # mallory claims to be beta
    assert status == 401 and json.loads(body)["error"]["code"] == "signature_invalid"
    status, body = _post(url, _msg(SALLY, hb, 1))
    assert status == 410 and json.loads(body)["error"]["code"] == "peer_suspended"
    status, body = _post(url, b'{"not":"a message"}')
    assert status == 400
    # Nothing refused moved mallory's replay state: seq 11 still works once.
    assert _post(url, _msg(MALLORY, hb, 11))[0] == 202


def test_a_countersignature_from_a_suspended_peer_or_forged_does_not_count() -> None:
    from remembrancer.core.anchor import Anchor, checkpoint_digest
    from remembrancer.core.errors import VerificationError
    from remembrancer.core.note import Note
    from remembrancer.federation.receipts import FederationReceipt, verify_federation_receipt

    note = sign_checkpoint(Checkpoint("n0.test/dao:vaultmesh", 3, bytes(32)), MALLORY)
    r = FederationReceipt(FED, "dao:vaultmesh", "n0.test/dao:vaultmesh", note,
                          Anchor("rfc3161:tsa", checkpoint_digest(Note.from_bytes(note).text.encode()), "verified", tx_ref="x"))  # fmt: skip
    r = r.with_signature(r.countersign(MALLORY, "anchor", 1)).with_signature(
        r.countersign(SALLY, "witness", 1)
    )
    r = r.with_signature(Countersignature(SigningKey.generate().did, "witness", 1, bytes(64)))
    keys = {MALLORY.did: MALLORY.public, SALLY.did: SALLY.public}
    with pytest.raises(VerificationError):
        verify_federation_receipt(r, keys, 2, active=[MALLORY.did])


def test_an_equivocating_log_is_detected_recorded_and_its_node_put_on_probation(nodes) -> None:  # type: ignore[no-untyped-def]
    alpha = nodes[0]
    one = sign_checkpoint(Checkpoint(MALLORY_LOG, 5, b"\x01" * 32), MALLORY)
    two = sign_checkpoint(Checkpoint(MALLORY_LOG, 5, b"\x02" * 32), MALLORY)
    status, _ = _post(
        f"{alpha.url}/witness/add-checkpoint",
        AddCheckpointRequest(0, (), one).to_bytes(),
        "text/plain",
    )
    assert status == 200
    status, _ = _post(
        f"{alpha.url}/witness/add-checkpoint",
        AddCheckpointRequest(5, (), two).to_bytes(),
        "text/plain",
    )
    assert status == 409
    # Alpha keeps offline-verifiable evidence and puts mallory on probation.
    evidence = _get(f"{alpha.url}/v1/federation/evidence")["evidence"]
    assert evidence and evidence[0]["kind"] == "equivocation"
    report = verify_equivocation(parse_evidence(evidence[0]["file"].encode()))  # type: ignore[arg-type]
    assert report.conflict == "same_size" and report.log_key.did == MALLORY.did
    fed = _get(f"{alpha.url}/v1/federation")
    mallory = next(p for p in fed["peers"] if p["did"] == MALLORY.did)
    assert mallory["status"] == "probation"
    assert any(h.get("evidence_ref") == evidence[0]["evidence_ref"] for h in fed["history"])
    # The evidence was gossiped: the other nodes verified it and did the same.
    for other in nodes[1:]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            peers = _get(f"{other.url}/v1/federation")["peers"]
            if next(p for p in peers if p["did"] == MALLORY.did)["status"] == "probation":
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"{other.url} did not put mallory on probation: {other.log_tail()}")


def test_an_anchor_claim_whose_evidence_does_not_verify_is_never_countersigned(nodes) -> None:  # type: ignore[no-untyped-def]
    from remembrancer.core.anchor import Anchor, checkpoint_digest
    from remembrancer.core.note import Note
    from remembrancer.federation.protocol.contents import AnchorContent
    from remembrancer.federation.receipts import FederationReceipt

    alpha = nodes[0]

    def mallory_status() -> str:
        peers = _get(f"{alpha.url}/v1/federation")["peers"]
        return str(next(p for p in peers if p["did"] == MALLORY.did)["status"])

    # Mallory claims an RFC 3161 anchor of her (witnessed) log whose evidence is garbage.
    note = sign_checkpoint(Checkpoint(MALLORY_LOG, 9, b"\x09" * 32), MALLORY)
    digest = checkpoint_digest(Note.from_bytes(note).text.encode())
    claim = Anchor("rfc3161:tsa", digest, "verified", tx_ref="forged", anchor_ts=int(time.time()),
                   evidence={"type": "rfc3161", "tsr": "AAAA", "nonce": "1"})  # fmt: skip
    receipt = FederationReceipt(FED, "dao:vaultmesh", MALLORY_LOG, note, claim)
    receipt = receipt.with_signature(receipt.countersign(MALLORY, "anchor", int(time.time())))
    assert mallory_status() == "probation"  # after her equivocation (the previous test)
    status, _ = _post(f"{alpha.url}/federation/v1/messages",
                      _msg(MALLORY, AnchorContent("dao:vaultmesh", receipt.to_dict()), 2**52 + 5))  # fmt: skip
    assert status == 202  # a well-formed, authentic message; its claim is judged next
    deadline = time.monotonic() + 10
    while mallory_status() != "suspended" and time.monotonic() < deadline:
        time.sleep(0.1)
    # A second proven misbehaviour: suspended, with the claim evidence kept.
    assert mallory_status() == "suspended"
    kinds = {e["kind"] for e in _get(f"{alpha.url}/v1/federation/evidence")["evidence"]}
    assert kinds == {"equivocation", "claim"}
    # Nothing was countersigned or finalised for the forged claim.
    assert all(
        r["anchor"]["tx_hash"] != "forged"
        for r in _get(f"{alpha.url}/v1/federation/receipts")["receipts"]
    )
    log = alpha.log_tail(20000)
    assert "refusing to countersign" in log
