"""Registry changes reach every peer: the signed change history, folded by a
node that was away against the quorum it knew; and the coordinator rotation,
which a joiner enters only from the epoch it announced its rail ready."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from dataclasses import replace
from typing import Any

import pytest

from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.keys import SigningKey
from remembrancer.core.record import Record, sign_envelope, unsigned_envelope
from remembrancer.federation.changes import RegistryChanges
from remembrancer.federation.peers import PeerDirectory
from remembrancer.federation.protocol.contents import HeartbeatContent
from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.federation.registry.proposals import RegistryState
from remembrancer.storage.memory import MemoryStore

FED = "catch-up"
KEYS = [SigningKey.generate() for _ in range(4)]
JOINER = SigningKey.generate()
NOW = 1_764_100_000


def registry(keys: list[SigningKey] = KEYS[:3], quorum: int = 2) -> Registry:
    peers = [Peer(k.did, f"http://127.0.0.1:{9000 + i}", k.public, "active",
                  frozenset({"witness", "anchor", "coordinator"})) for i, k in enumerate(keys)]  # fmt: skip
    return Registry(FED, quorum, "collaborative", tuple(peers))


def proposal(reg: Registry, actor: SigningKey, witnesses: list[SigningKey]) -> Record:
    env = unsigned_envelope(
        namespace=f"fed:{FED}", schema="federation.registry.set@1.0.0",
        payload=reg.registry_record_payload(), actor=actor.did,
        event_id=f"p-{os.urandom(4).hex()}", timestamp=NOW,
        nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
    )  # fmt: skip
    return Record.from_bytes(sign_envelope(env, actor, witnesses).leaf)


def node(reg: Registry, me: SigningKey) -> RegistryChanges:
    store = MemoryStore()
    peers = PeerDirectory(reg, me.did, store, clock=lambda: NOW, heartbeat_seconds=1)
    return RegistryChanges(peers, RegistryState(reg), {}, me, store, clock=lambda: NOW)


def history(*steps: tuple[Registry, Record]) -> dict[str, Any]:
    return {"federation_id": FED, "registry_digest": steps[-1][0].digest(), "changes": [
        {"proposal_id": r.event_id, "event_hash": r.event_hash_hex,
         "registry_digest": g.digest(), "record": r.leaf.decode()} for g, r in steps]}  # fmt: skip


def run(changes: RegistryChanges, doc: Any) -> dict[str, Any]:
    return asyncio.run(changes.catch_up("peer", doc))


def test_a_node_that_was_away_applies_each_change_approved_by_the_quorum_it_knew() -> None:
    r0 = registry()
    r1 = r0.with_peer(Peer(JOINER.did, "http://127.0.0.1:9100", JOINER.public, "active",
                           frozenset({"witness", "anchor", "coordinator"})))  # fmt: skip
    p1 = proposal(r1, JOINER, [KEYS[0], KEYS[1]])  # approved by 2 of the 3 it knew
    r2 = replace(r1, quorum=3)
    p2 = proposal(r2, KEYS[0], [KEYS[1], JOINER])  # approved by 3 of r1's 4 peers
    away = node(r0, KEYS[2])
    out = run(away, history((r1, p1), (r2, p2)))
    assert out["applied"] == 2 and out["refused"] is None
    assert away.state.registry == r2 and away.peers.registry == r2
    assert away.peers.joined == {JOINER.did}
    assert [h.peer for h in away.state.history if h.old == "absent"] == [JOINER.did]
    # It now serves the same history, and folding it again changes nothing.
    served = away.changes_document()
    assert [c["registry_digest"] for c in served["changes"]] == [r1.digest(), r2.digest()]
    assert run(away, served)["applied"] == 0
    # A node already at r1 skips to what follows it.
    at_r1 = node(r1, KEYS[1])
    assert run(at_r1, history((r1, p1), (r2, p2)))["applied"] == 1
    assert at_r1.state.registry == r2


def test_a_forged_or_unsigned_history_is_refused_and_changes_nothing() -> None:
    r0 = registry()
    evil = SigningKey.generate()
    # One insider (a peer of r0) alone: below the quorum of 2.
    grab = replace(r0.without_peer(KEYS[1].did), quorum=1)
    grabbed = proposal(grab, KEYS[0], [])
    # Outsiders' signatures count for nothing.
    outsiders = proposal(grab, evil, [SigningKey.generate(), SigningKey.generate()])
    # The approvals stripped off a genuine change.
    genuine = proposal(grab, KEYS[0], [KEYS[1]])
    env = json.loads(genuine.leaf)
    env["signatures"] = env["signatures"][:1]
    stripped = Record.from_bytes(json.dumps(env).encode())
    # A valid approval moved onto another registry: its signature no longer verifies.
    moved = json.loads(genuine.leaf)
    moved["payload"]["registry"]["quorum"] = 2
    cases = {
        "registry_change_unapproved": [grabbed, outsiders, stripped],
    }
    for code, records in cases.items():
        for rec in records:
            away = node(r0, KEYS[2])
            out = run(away, history((grab, rec)))
            assert out["applied"] == 0 and out["refused"] == code, out
            assert away.state.registry == r0 and not away.state.applied
    away = node(r0, KEYS[2])
    doc = history((grab, genuine))
    doc["changes"][0]["record"] = json.dumps(moved)
    out = run(away, doc)
    assert out["refused"] in ("proposal_signature_invalid", "record_malformed"), out
    assert away.state.registry == r0
    # The right approvals, but a digest other than what the change produces.
    doc = history((grab, genuine))
    doc["changes"][0]["registry_digest"] = r0.with_status(KEYS[0].did, "probation").digest()
    out = run(away, doc)
    assert out["refused"] == "registry_change_digest_mismatch" and away.state.registry == r0
    # Garbage and another federation.
    assert run(away, {"changes": "no"})["refused"] == "registry_changes_malformed"
    assert run(away, {**history((grab, genuine)), "federation_id": "other"})["refused"] == (
        "federation_id_mismatch"
    )
    # The genuine change applies; a forged one after it stops there (what came before stays).
    after = replace(grab, anchor_strategy="hybrid")
    out = run(away, history((grab, genuine), (after, proposal(after, evil, [evil]))))
    assert out["applied"] == 1 and out["refused"] == "registry_change_unapproved"
    assert away.state.registry == grab
    assert [c["refused"] for c in away.catch_ups][-1] == "registry_change_unapproved"


def test_apply_signed_counts_only_the_quorum_of_the_registry_in_force() -> None:
    r0 = registry(KEYS[:4], quorum=3)
    nxt = replace(r0, anchor_strategy="hybrid")
    state = RegistryState(r0)
    with pytest.raises(VerificationError) as e:
        state.apply_signed(proposal(nxt, KEYS[0], [KEYS[1]]), NOW)
    assert e.value.code == "registry_change_unapproved"
    assert state.apply_signed(proposal(nxt, KEYS[0], [KEYS[1], KEYS[2]]), NOW).registry == nxt
    # A suspended peer's signature does not count.
    sus = r0.with_status(KEYS[2].did, "suspended")
    with pytest.raises(VerificationError) as e:
        RegistryState(sus).apply_signed(
            proposal(replace(sus, anchor_strategy="hybrid"), KEYS[0], [KEYS[1], KEYS[2]]), NOW
        )
    assert e.value.code == "registry_change_unapproved"


def test_a_joiner_enters_the_rotation_from_the_epoch_it_announced() -> None:
    r0 = registry()
    r1 = r0.with_peer(Peer(JOINER.did, "http://127.0.0.1:9100", JOINER.public, "active",
                           frozenset({"witness", "anchor", "coordinator"})))  # fmt: skip
    member = node(r0, KEYS[0])
    run(member, history((r1, proposal(r1, JOINER, [KEYS[0], KEYS[1]]))))
    peers = member.peers
    assert peers.joined == {JOINER.did}
    # Bootstrap peers are always in; the joiner not before its heartbeat says so.
    assert peers.coordinates(KEYS[1].did, "rfc3161:tsa", 0)
    assert not peers.coordinates(JOINER.did, "rfc3161:tsa", 10**6)
    assert peers.note_rails(JOINER.did, {"rfc3161:tsa": 12})
    assert not peers.coordinates(JOINER.did, "rfc3161:tsa", 11)
    assert peers.coordinates(JOINER.did, "rfc3161:tsa", 12)
    assert not peers.coordinates(JOINER.did, "eip155:1", 50)  # a rail it never announced
    # The first epoch heard stays: a later announcement cannot move it.
    assert not peers.note_rails(JOINER.did, {"rfc3161:tsa": 3})
    assert not peers.coordinates(JOINER.did, "rfc3161:tsa", 5)
    # A stranger's announcement is not kept.
    assert not peers.note_rails(SigningKey.generate().did, {"rfc3161:tsa": 0})
    # Kept in the store: a restart remembers it.
    peers.save_rails()
    again = PeerDirectory(r1, KEYS[0].did, peers.store, clock=lambda: NOW, heartbeat_seconds=1)
    assert again.rails_ready[JOINER.did] == {"rfc3161:tsa": 12}


def test_a_node_announces_its_rails_only_once_it_is_a_peer_and_keeps_the_epoch() -> None:
    r0 = registry()
    store = MemoryStore()
    outsider = PeerDirectory(r0, JOINER.did, store, clock=lambda: NOW, heartbeat_seconds=1)
    assert outsider.announce_rails(["rfc3161:tsa"], 7) is None
    inside = PeerDirectory(r0, KEYS[0].did, store, clock=lambda: NOW, heartbeat_seconds=1)
    assert inside.announce_rails(["rfc3161:tsa"], 7) == {"rfc3161:tsa": 9}
    assert inside.announce_rails(["rfc3161:tsa", "eip155:1"], 20) == {
        "rfc3161:tsa": 9,
        "eip155:1": 22,
    }
    restarted = PeerDirectory(r0, KEYS[0].did, store, clock=lambda: NOW, heartbeat_seconds=1)
    assert restarted.announce_rails(["rfc3161:tsa"], 40) == {"rfc3161:tsa": 9}


def test_heartbeat_registry_digest_and_rails_round_trip_and_are_checked() -> None:
    hb = HeartbeatContent((), "sha256:" + "ab" * 32, (("rfc3161:tsa", 9),))
    assert HeartbeatContent.from_json(hb.to_json()) == hb
    assert HeartbeatContent.from_json({"logs": []}) == HeartbeatContent(())
    for bad in ({"logs": [], "registry": "nope"}, {"logs": [], "rails": {"rfc3161:tsa": -1}},
                {"logs": [], "rails": {"not a target": 1}}, {"logs": [], "rails": []},
                {"logs": [], "rails": {f"rfc3161:t{i}": 1 for i in range(65)}}):  # fmt: skip
        with pytest.raises(FormatError):
            HeartbeatContent.from_json(bad)


def test_a_pull_is_bounded_in_size_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from remembrancer.federation import changes as changes_module

    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/big"):
                self.send_response(200)
                self.end_headers()
                for _ in range(9):
                    self.wfile.write(b" " * (1 << 20))
            elif self.path.startswith("/slow"):
                self.send_response(200)
                self.end_headers()
                while not release.wait(0.05):  # a byte at a time, forever
                    self.wfile.write(b" ")
                    self.wfile.flush()
            else:
                self.send_response(404)
                self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(changes_module, "PULL_TIMEOUT", 1.0)
    away = node(registry(), KEYS[2])
    try:
        assert asyncio.run(away.pull("p", base + "/big"))["refused"] == "registry_changes_too_large"
        assert (
            asyncio.run(away.pull("p", base + "/none"))["refused"] == "registry_changes_unavailable"
        )
        out = asyncio.run(away.pull("p", base + "/slow"))
        assert out["refused"] == "registry_changes_unavailable" and "Timeout" in out["reason"]
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert away.state.registry == registry()
