"""Joining and leaving a federation with real node processes: registry changes
are ``federation.registry.set`` proposals applied only once a quorum of
distinct active peers approved them."""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from remembrancer.core.keys import SigningKey
from remembrancer.core.record import sign_envelope, unsigned_envelope
from remembrancer.demo.procs import NodeProcess, cli, init_node, wire_federation
from remembrancer.federation.protocol.contents import HeartbeatContent
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.registry.model import Registry
from remembrancer.node.keyfile import read_key_file

FED = "test-federation"
SUSPENDED = SigningKey.generate()
STRANGER = SigningKey.generate()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: bytes, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _key(n: NodeProcess) -> tuple[SigningKey, Path]:
    doc = yaml.safe_load(n.config.read_text())
    path = n.directory / doc["node_key"]
    return read_key_file(path), path


def _token(n: NodeProcess) -> str:
    return (n.directory / "keys" / "admin.token").read_text().strip()


def _approve(n: NodeProcess, proposal_id: str) -> dict[str, Any]:
    status, body = _post(
        f"{n.url}/v1/admin/federation/proposals/{proposal_id}/approve", b"", _token(n)
    )
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def _heartbeat(n: NodeProcess, key: SigningKey) -> int:
    now = time.time()
    msg = Message.sign(key, HeartbeatContent(()), federation_id=FED, seq=int(now * 1e6),
                       timestamp=int(now), sender=key.did)  # fmt: skip
    status, _ = _post(f"{n.url}/federation/v1/messages", msg.to_bytes())
    return status


def _view(n: NodeProcess, proposal_id: str) -> dict[str, Any] | None:
    doc = _get(f"{n.url}/v1/federation/proposals")
    for p in doc["pending"]:
        if p["proposal_id"] == proposal_id:
            return p  # type: ignore[no-any-return]
    for a in doc["applied"]:
        if a["proposal_id"] == proposal_id:
            return {"state": "applied", **a}
    return None


def _proposal_id(stdout: str) -> str:
    line = next(x for x in stdout.splitlines() if x.startswith("proposal "))
    return line.split()[1]


def _registry_proposal(registry: Registry, actor: SigningKey, witnesses: list[SigningKey]) -> bytes:
    env = unsigned_envelope(
        namespace=f"fed:{FED}",
        schema="federation.registry.set@1.0.0",
        payload=registry.registry_record_payload(memo="test"),
        actor=actor.did,
        event_id=f"test-{os.urandom(6).hex()}",
        timestamp=int(time.time()),
        nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
    )
    return sign_envelope(env, actor, witnesses).leaf


def test_join_and_leave_need_a_quorum_of_active_peers(tmp_path: Path) -> None:
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
    suspended = {"did": SUSPENDED.did, "endpoint": "http://127.0.0.1:9", "pubkey": SUSPENDED.did,
                 "status": "suspended", "roles": ["witness"]}  # fmt: skip
    wire_federation(nodes, quorum=2, extra_peers=[suspended])
    newcomer = init_node(tmp_path / "n3", origin_prefix="n3.test")
    everyone = [*nodes, newcomer]
    try:
        for n in everyone:
            n.start()
        alpha, beta, gamma = nodes
        new_key, new_key_file = _key(newcomer)
        new_did = new_key.did
        assert _heartbeat(alpha, new_key) == 404  # not a peer yet

        # The newcomer proposes itself; its own signature is no approval.
        out = cli("federation", "join", "--federation", FED, "--node", new_did, "--url", newcomer.url,
                  "--key", str(new_key_file), *(a for n in nodes for a in ("--peer", n.url))).stdout  # fmt: skip
        pid = _proposal_id(out)
        for n in nodes:
            view = _view(n, pid)
            assert view is not None and view["state"] == "pending" and view["approval_count"] == 0

        # One approval (below quorum 2): forwarded everywhere, applied nowhere.
        one = _approve(alpha, pid)
        assert one["state"] == "pending" and one["approval_count"] == 1 and one["quorum"] == 2
        assert one["forwarded"][beta.url] == "200" and one["forwarded"][gamma.url] == "200"
        for n in nodes:
            view = _view(n, pid)
            assert view is not None and view["state"] == "pending" and view["approval_count"] == 1
            peers = {p["did"] for p in _get(f"{n.url}/v1/federation/registry")["peers"]}
            assert new_did not in peers
        assert _heartbeat(beta, new_key) == 404

        # The second approval makes quorum: every node applies it.
        two = _approve(beta, pid)
        assert two["state"] == "applied" and two["applied"] is True
        for n in nodes:
            reg = _get(f"{n.url}/v1/federation/registry")
            mine = next(p for p in reg["peers"] if p["did"] == new_did)
            assert mine["status"] == "active" and mine["endpoint"] == newcomer.url
            assert mine["pubkey"] == new_did
            view = _view(n, pid)
            assert view is not None and view["state"] == "applied"
            history = _get(f"{n.url}/v1/federation/proposals")["history"]
            assert any(h["peer"] == new_did and h["old"] == "absent" and h["new"] == "active"
                       for h in history)  # fmt: skip
            assert _heartbeat(n, new_key) == 202
        # Approving an applied proposal again changes nothing.
        assert _approve(gamma, pid)["state"] == "applied"

        # Approvals by a suspended peer and an unknown key do not count.
        current = Registry.from_dict(_get(f"{alpha.url}/v1/federation/registry"))
        alpha_key, _ = _key(alpha)
        changed = replace(current, anchor_strategy="hybrid")
        body = _registry_proposal(changed, STRANGER, [SUSPENDED, SigningKey.generate(), alpha_key])
        status, view = _post(f"{alpha.url}/v1/federation/proposals", body)
        assert status == 200 and view["state"] == "pending", view
        assert view["approvals"] == [alpha_key.did] and view["approval_count"] == 1
        weak_pid = view["proposal_id"]
        assert (
            _post(f"{alpha.url}/v1/federation/proposals", body)[1]["approval_count"] == 1
        )  # idempotent
        assert _get(f"{alpha.url}/v1/federation/registry")["anchor_strategy"] == "independent"
        # A suspended peer cannot approve through the API either (its node would be refused).
        status, err = _post(
            f"{beta.url}/v1/federation/proposals",
            _registry_proposal(changed, SUSPENDED, [SUSPENDED]),
        )
        assert status == 200 and err["approval_count"] == 0  # fmt: skip
        # A forged witness signature is refused outright.
        forged = json.loads(body)
        forged["signatures"][-1]["sig"] = forged["signatures"][0]["sig"]
        status, err = _post(f"{gamma.url}/v1/federation/proposals", json.dumps(forged).encode())
        assert status == 422 and err["error"]["code"] == "proposal_signature_invalid"
        # Without the admin token, no approval.
        status, err = _post(f"{alpha.url}/v1/admin/federation/proposals/{weak_pid}/approve", b"")
        assert status == 401

        # The applied registry (and the pending proposal) survive a restart and
        # take precedence over federation.yaml.
        alpha.stop()
        alpha.start()
        peers = {p["did"] for p in _get(f"{alpha.url}/v1/federation/registry")["peers"]}
        assert new_did in peers
        view = _view(alpha, weak_pid)
        assert view is not None and view["state"] == "pending" and view["approval_count"] == 1

        # Gamma leaves: a removal proposal approved by quorum.
        gamma_key, gamma_key_file = _key(gamma)
        assert _heartbeat(alpha, gamma_key) == 202
        out = cli("federation", "leave", "--federation", FED, "--node", gamma_key.did,
                  "--key", str(gamma_key_file), "--peer", alpha.url, "--peer", beta.url).stdout  # fmt: skip
        leave_pid = _proposal_id(out)
        # Gamma is an active peer, so its own signature as proposer is one approval.
        for n in (alpha, beta):
            view = _view(n, leave_pid)
            assert view is not None and view["state"] == "pending"
            assert view["approvals"] == [gamma_key.did]
        assert _heartbeat(beta, gamma_key) == 202  # one approval: still a member
        assert _approve(alpha, leave_pid)["state"] == "applied"
        for n in (alpha, beta):
            reg = _get(f"{n.url}/v1/federation/registry")
            assert gamma_key.did not in {p["did"] for p in reg["peers"]}
            assert _heartbeat(n, gamma_key) == 404
            assert _heartbeat(n, new_key) == 202
        # The weaker pending proposal was written against the old registry: superseded.
        assert _view(alpha, weak_pid) is None
        assert _get(f"{alpha.url}/v1/federation/proposals")["applied"][-1]["superseded"] == [
            weak_pid
        ]
    finally:
        for n in everyone:
            n.stop()
