"""Registry changes reach every peer, with real node processes: a node that
was down while the registry changed twice pulls the signed change history
from its peers when their heartbeats announce another registry, and applies
each change only with the approvals of the quorum it knew.  A hostile peer
(a real HTTP server driven by the test, signing heartbeats with its registry
key) that serves a forged or unsigned history is refused, and nothing
changes."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from remembrancer.core.keys import SigningKey
from remembrancer.core.record import sign_envelope, unsigned_envelope
from remembrancer.demo.procs import NodeProcess, init_node, wire_federation
from remembrancer.federation.protocol.contents import HeartbeatContent
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.registry.model import Registry
from remembrancer.node.keyfile import read_key_file

FED = "test-federation"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _wait(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def _key(n: NodeProcess) -> SigningKey:
    doc = yaml.safe_load(n.config.read_text())
    return read_key_file(n.directory / doc["node_key"])


def _proposal(registry: Registry, actor: SigningKey, witnesses: list[SigningKey]) -> bytes:
    env = unsigned_envelope(
        namespace=f"fed:{FED}", schema="federation.registry.set@1.0.0",
        payload=registry.registry_record_payload(memo="catch-up test"), actor=actor.did,
        event_id=f"test-{os.urandom(6).hex()}", timestamp=int(time.time()),
        nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
    )  # fmt: skip
    return sign_envelope(env, actor, witnesses).leaf


class HostilePeer:
    """A registry peer that answers federation messages and serves whatever
    change history the test gives it."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.history: dict[str, Any] = {"federation_id": FED, "changes": []}
        self.pulls = 0
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps(peer.history).encode()
                if self.path == "/v1/federation/registry/changes":
                    peer.pulls += 1
                    self.send_response(200)
                else:
                    self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(202)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def peer(self) -> dict[str, Any]:
        return {"did": self.key.did, "endpoint": self.url, "pubkey": self.key.did,
                "status": "active", "roles": ["witness"]}  # fmt: skip

    def heartbeat(self, node: NodeProcess, registry_digest: str) -> int:
        now = time.time()
        msg = Message.sign(self.key, HeartbeatContent((), registry_digest), federation_id=FED,
                           seq=int(now * 1e6), timestamp=int(now), sender=self.key.did)  # fmt: skip
        status, _ = _post(f"{node.url}/federation/v1/messages", msg.to_bytes())
        return status

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _catch_ups(n: NodeProcess) -> list[dict[str, Any]]:
    return _get(f"{n.url}/v1/federation/proposals")["catch_up"]  # type: ignore[no-any-return]


def test_a_node_that_was_down_catches_up_and_refuses_a_forged_history(tmp_path: Path) -> None:
    hostile = HostilePeer()
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
    wire_federation(nodes, quorum=2, extra_peers=[hostile.peer()])
    alpha, beta, gamma = nodes
    a_key, b_key = _key(alpha), _key(beta)
    try:
        for n in nodes:
            n.start()
        r0 = Registry.from_dict(_get(f"{alpha.url}/v1/federation/registry"))
        assert _get(f"{gamma.url}/v1/federation/registry") == r0.to_dict()
        gamma.stop()

        # Two changes while gamma is down, each approved by alpha and beta (quorum 2).
        r1 = replace(r0, anchor_strategy="hybrid")
        r2 = replace(r1.with_peer(replace(r1.peer(a_key.did), region="eu-west")), quorum=3)
        for reg in (r1, r2):
            body = _proposal(reg, a_key, [b_key])
            for n in (alpha, beta):
                status, view = _post(f"{n.url}/v1/federation/proposals", body)
                assert status == 200 and view["state"] == "applied", view
        served = _get(f"{alpha.url}/v1/federation/registry/changes")
        assert [c["registry_digest"] for c in served["changes"]] == [r1.digest(), r2.digest()]

        # Gamma comes back on r0; its peers' heartbeats name r2: it pulls and applies both.
        gamma.start()
        assert Registry.from_dict(_get(f"{gamma.url}/v1/federation/registry")) in (r0, r1, r2)
        _wait(lambda: _get(f"{gamma.url}/v1/federation/registry") == r2.to_dict(),
              "gamma to catch up with r2")  # fmt: skip
        applied = _get(f"{gamma.url}/v1/federation/proposals")["applied"]
        assert [a["registry_digest"] for a in applied] == [r1.digest(), r2.digest()]
        assert sum(c["applied"] for c in _catch_ups(gamma)) == 2
        assert all(c["refused"] is None for c in _catch_ups(gamma) if c["applied"])

        # A hostile peer of r2 serves a history that removes alpha and beta,
        # signed by itself and by strangers: refused, nothing changes.
        grab = replace(r2.without_peer(a_key.did).without_peer(b_key.did), quorum=1)
        forged = _proposal(grab, hostile.key, [SigningKey.generate(), SigningKey.generate()])
        hostile.history = {"federation_id": FED, "changes": [
            *served["changes"],
            {"proposal_id": "x", "event_hash": "x", "registry_digest": grab.digest(),
             "record": forged.decode()},
        ]}  # fmt: skip
        seen = len(_catch_ups(gamma))
        assert hostile.heartbeat(gamma, grab.digest()) == 202
        got = _wait(lambda: [c for c in _catch_ups(gamma)[seen:] if c["source"] == hostile.key.did],
                    "gamma to pull from the hostile peer")  # fmt: skip
        assert got[-1]["refused"] == "registry_change_unapproved" and got[-1]["applied"] == 0
        assert _get(f"{gamma.url}/v1/federation/registry") == r2.to_dict()

        # The same change with its signatures stripped (unsigned), after the pull interval.
        unsigned = json.loads(forged)
        unsigned["signatures"] = []
        hostile.history["changes"][-1]["record"] = json.dumps(unsigned)
        pulls = hostile.pulls

        def refused_unsigned() -> list[dict[str, Any]]:
            if hostile.pulls == pulls:
                hostile.heartbeat(gamma, grab.digest())
                return []
            return [c for c in _catch_ups(gamma)[seen:] if c["source"] == hostile.key.did][1:]

        got = _wait(refused_unsigned, "gamma to pull the unsigned history")
        assert got[-1]["refused"] not in (None, "registry_change_unapproved"), got
        assert got[-1]["applied"] == 0
        # A genuine approval moved onto the hostile registry: the signature no longer verifies.
        moved = json.loads(_proposal(r2, a_key, [b_key]))
        moved["payload"] = json.loads(forged)["payload"]
        hostile.history["changes"][-1]["record"] = json.dumps(moved)
        pulls = hostile.pulls
        got = _wait(lambda: refused_unsigned()[1:], "gamma to pull the re-signed history")
        assert got[-1]["refused"] == "proposal_signature_invalid", got
        for n in (alpha, beta, gamma):
            assert _get(f"{n.url}/v1/federation/registry") == r2.to_dict()
    finally:
        for n in nodes:
            n.stop()
        hostile.close()
