"""Anti-entropy with real node processes on loopback (docs/anti-entropy.md).

- A node that was stopped while a peer wrote entries, anchored them and had
  them countersigned catches up after restart: the same checkpoint, the same
  anchors in the same conflict order, the federation receipts, and mirrored
  tiles identical to the source's, byte for byte.
- A peer that serves a forged checkpoint, or entries that do not hash to its
  signed root, is refused and scored, and nothing is stored; a log that signs
  two checkpoints that do not fit one log is caught as equivocation; a forged
  anchor claim in a bundle is refused and scored.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.core.anchor import Anchor, AnchorReceipt, checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, format_vkey
from remembrancer.core.tiles import (
    TileTree,
    encode_entry_bundle,
    parse_entries_path,
    parse_tile_path,
)
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.federation.evidence.equivocation import verify_equivocation
from remembrancer.federation.evidence.parse import parse_evidence
from remembrancer.federation.protocol.contents import BundleContent, HeartbeatContent, LogSummary
from remembrancer.federation.protocol.wire import Message
from remembrancer.testing.replicas import (
    anchor_summary,
    anchors,
    http,
    http_json,
    mirror_differences,
    replicas,
    set_mirror,
    wait_for,
)

NS = "dao:vaultmesh"
FED = "test-federation"
ROLES = ["witness", "anchor", "countersign", "relay", "coordinator"]


def _write(node: NodeProcess, count: int, start: int = 0) -> list[str]:
    """Submit ``count`` records to ``node``'s log (8 at a time); their event hashes."""
    actor = demo_key("did:vm:actor:demo")
    w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]

    def one(i: int) -> str:
        rec = make_record(NS, "ledger.append@1.0.0", ledger_payload(start + i, 200), actor, w,
                          timestamp=int(time.time()))  # fmt: skip
        http(f"{node.url}/v1/namespaces/{NS}/records", rec.leaf)
        return rec.event_hash_hex

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def test_a_node_that_was_down_catches_up_after_restart(tmp_path: Path) -> None:
    tsa_dir = tmp_path / "tsa"
    with DevTsaServer(DevTsa(tsa_dir)) as tsa:
        nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(3)]
        for n in nodes:
            anchor_to_tsa(n, tsa.url, tsa_dir / "ca.pem", every="1s")
        wire_witnessing(nodes, quorum=1)
        wire_federation(nodes, quorum=2, heartbeat_seconds=0.3)
        for n in nodes:
            set_mirror(n, antientropy_seconds=0.5)
        n0, n1, n2 = nodes
        origin = f"n0.test/{NS}"
        for n in nodes:
            n.start()
        try:
            n2.stop()
            _write(n0, 300)

            def anchored_at_300() -> bool:
                got = http_json(f"{n0.url}/v1/namespaces/{NS}/anchors")["receipts"]
                return any(r["size"] == 300 and any(a["status"] == "verified" for a in r["anchors"])
                           for r in got)  # fmt: skip

            wait_for(anchored_at_300, 30, "the scheduler to anchor n0's checkpoint at 300")
            _write(n0, 300, start=300)  # 600 entries: two full bundles and a partial one

            def settled() -> tuple[int, str] | None:
                """n0's log with a verified anchor of its latest checkpoint and a final receipt."""
                head = http_json(f"{n0.url}/v1/namespaces/{NS}")
                got = http_json(f"{n0.url}/v1/namespaces/{NS}/anchors")["receipts"]
                final = http_json(f"{n0.url}/v1/federation/receipts?namespace={NS}")["receipts"]
                if (got and got[-1]["size"] == head["size"] == 600
                        and any(a["status"] == "verified" for a in got[-1]["anchors"])
                        and len(final) >= 2):  # fmt: skip
                    return head["size"], head["checkpoint"]
                return None

            size, _ = wait_for(settled, 40, "n0 to anchor and finalise its checkpoints")
            n2.start()

            def caught_up() -> dict | None:  # type: ignore[type-arg]
                r = replicas(n2.url)[origin]
                return r if r["size"] == size and r["mirror_size"] == size else None

            replica = wait_for(caught_up, 30, "n2 to catch up with n0's log")
            head = http_json(f"{n0.url}/v1/namespaces/{NS}")
            assert replica["checkpoint"].split("\n\n")[0] == head["checkpoint"].split("\n\n")[0]
            assert replica["last_error"] is None
            # The mirrored tiles and entry bundles are the source's, byte for byte.
            assert (
                mirror_differences(f"{n0.url}/logs/{NS}", f"{n2.url}/v1/replicas/{origin}", size)
                == []
            )
            assert (
                http(f"{n2.url}/v1/replicas/{origin}/checkpoint").split(b"\n\n")[0]
                == (http(f"{n0.url}/logs/{NS}/checkpoint").split(b"\n\n")[0])
            )

            # The same anchors, in the same conflict order, re-verified on n2's own rail.
            def same_anchors() -> list | None:  # type: ignore[type-arg]
                want = anchor_summary(anchors(n0.url, origin))
                got = anchors(n2.url, origin)
                return got if anchor_summary(got) == want and len(want) >= 2 else None

            held = wait_for(same_anchors, 30, "n2 to hold n0's anchors")
            for r in held:
                assert {a["txRef"] for a in r["anchors"]} == {k.split("/", 2)[-1] for k in
                                                              r["reverified_here"]}  # fmt: skip
            # Every final federation receipt of n0's log reached n2.
            want = {r["anchor"]["tx_hash"] for r in
                    http_json(f"{n0.url}/v1/federation/receipts?namespace={NS}")["receipts"]
                    if r["origin"] == origin}  # fmt: skip

            def receipts_in() -> bool:
                got = http_json(f"{n2.url}/v1/federation/receipts?namespace={NS}")["receipts"]
                return want <= {r["anchor"]["tx_hash"] for r in got if r["origin"] == origin}

            wait_for(receipts_in, 30, "n2 to hold n0's federation receipts")
            status = replicas(n2.url)[origin]
            assert status["federation_receipts"] >= len(want) >= 2
            assert status["anchors_reverified_here"] == status["anchors"] > 0
            # The peer that stayed up holds the same state.
            assert replicas(n1.url)[origin]["size"] == size
            assert anchor_summary(anchors(n1.url, origin)) == anchor_summary(
                anchors(n0.url, origin)
            )
            metrics = http(f"{n2.url}/metrics").decode()
            assert f'remembrancer_replica_size{{origin="{origin}"}} {float(size)}' in metrics
        finally:
            for n in nodes:
                n.stop()


# --- a peer that serves bad data ---------------------------------------------------


MALLORY = SigningKey.generate()
MALLORY_LOG = "mallory.test/dao:vaultmesh"


@dataclass
class MalloryLog:
    """Mallory's log: what her HTTP server serves (switchable)."""

    entries: list[bytes] = field(default_factory=list)
    note: bytes = b""
    tamper_entry: int | None = None  # serve this entry altered

    def grow(self, count: int, key: SigningKey = MALLORY) -> None:
        self.entries += [f"mallory entry {len(self.entries) + i}".encode() for i in range(count)]
        self.note = self.sign(key)

    def tree(self) -> TileTree:
        tree = TileTree()
        tree.append_many(self.entries)
        return tree

    def sign(self, key: SigningKey, entries: list[bytes] | None = None) -> bytes:
        tree = TileTree()
        tree.append_many(entries if entries is not None else self.entries)
        return sign_checkpoint(Checkpoint(MALLORY_LOG, tree.size, tree.root()), key)


@pytest.fixture
def mallory() -> Iterator[tuple[MalloryLog, str]]:
    state = MalloryLog()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(202, b'{"seq":1}')

        def do_GET(self) -> None:
            prefix = f"/logs/{NS}/"
            if not self.path.startswith(prefix):
                return self._send(404, b"")
            path = self.path[len(prefix) :]
            tree = state.tree()
            try:
                if path == "checkpoint":
                    return self._send(200, state.note)
                if path.startswith("tile/entries/"):
                    t = parse_entries_path(path)
                    first = t.index * 256
                    got = list(state.entries[first : first + t.width])
                    if (
                        state.tamper_entry is not None
                        and first <= state.tamper_entry < first + t.width
                    ):
                        got[state.tamper_entry - first] += b"!"
                    return self._send(200, encode_entry_bundle(got))
                return self._send(200, tree.tile(parse_tile_path(path)))
            except Exception:
                return self._send(404, b"")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Sender:
    def __init__(self, url: str) -> None:
        self.url = url
        self.seq = int(time.time() * 1_000_000)

    def send(self, content: object) -> None:
        self.seq += 1
        msg = Message.sign(MALLORY, content, federation_id=FED, seq=self.seq,
                           timestamp=int(time.time()), sender=MALLORY.did)  # fmt: skip
        http(f"{self.url}/federation/v1/messages", msg.to_bytes())

    def heartbeat(self, log: MalloryLog) -> None:
        tree = log.tree()
        self.send(
            HeartbeatContent((LogSummary(MALLORY_LOG, tree.size, "sha256:" + tree.root().hex()),))
        )


def _score(node: NodeProcess) -> dict:  # type: ignore[type-arg]
    peer = next(
        p for p in http_json(f"{node.url}/v1/federation")["peers"] if p["did"] == MALLORY.did
    )
    return peer  # type: ignore[no-any-return]


def test_a_peer_serving_bad_data_is_refused_and_scored(tmp_path: Path, mallory) -> None:  # type: ignore[no-untyped-def]
    log, endpoint = mallory
    tsa_dir = tmp_path / "tsa"
    DevTsa(tsa_dir)
    nodes = [init_node(tmp_path / f"n{i}", origin_prefix=f"n{i}.test") for i in range(2)]
    extra = [{"did": MALLORY.did, "endpoint": endpoint, "pubkey": MALLORY.did, "status": "active",
              "roles": ROLES}]  # fmt: skip
    wire_federation(nodes, quorum=2, extra_peers=extra, heartbeat_seconds=30)
    n0 = nodes[0]
    n0.edit_config(
        witness={"name": "n0.test/witness",
                 "logs": [{"vkey": format_vkey(MALLORY_LOG, MALLORY.public), "mirror": True}]},
        anchoring={"rfc3161": {"tsa": {"url": "http://127.0.0.1:9/",
                                       "trust_bundle": str(tsa_dir / "ca.pem")}}},
        scheduler={"enabled": False},
    )  # fmt: skip
    set_mirror(n0, antientropy_seconds=0.5)
    for n in nodes:
        n.start()
    try:
        send = Sender(n0.url)

        def refused(code: str) -> dict | None:  # type: ignore[type-arg]
            r = replicas(n0.url)[MALLORY_LOG]
            return r if (r["last_error"] or {}).get("code") == code else None

        # 1. A checkpoint signed by another key: refused, scored, nothing kept.
        log.grow(300, key=SigningKey.generate())
        send.heartbeat(log)
        r = wait_for(
            lambda: refused("replica_checkpoint_invalid"), 20, "the forged checkpoint refused"
        )
        assert r["size"] == 0 and r["mirror_size"] == 0 and r["checkpoint"] is None
        first = _score(n0)
        assert first["score"] < 100

        # 2. A validly signed checkpoint, entries that do not hash to it: refused, nothing kept.
        log.note = log.sign(MALLORY)
        log.tamper_entry = 260
        send.heartbeat(log)
        r = wait_for(
            lambda: refused("replica_inconsistent"), 20, "the inconsistent entries refused"
        )
        assert r["size"] == 0 and r["mirror_size"] == 0
        assert _score(n0)["score"] < first["score"]
        with pytest.raises(Exception, match="404"):
            http(f"{n0.url}/v1/replicas/{MALLORY_LOG}/tile/entries/000")

        # 3. The same checkpoint with the right entries: accepted and mirrored.
        log.tamper_entry = None
        send.heartbeat(log)
        wait_for(lambda: replicas(n0.url)[MALLORY_LOG]["mirror_size"] == 300, 20, "the mirror")
        assert http(f"{n0.url}/v1/replicas/{MALLORY_LOG}/checkpoint") == log.note
        assert http(f"{n0.url}/v1/replicas/{MALLORY_LOG}/tile/0/000") == log.tree().tile_bytes(0, 0)

        # 4. A bundle with an anchor claim that does not cover the checkpoint: refused, scored.
        before = _score(n0)["score"]
        body = Note.from_bytes(log.note).text.encode()
        bogus = Anchor("rfc3161:tsa", checkpoint_digest(body + b"x"), "verified", "01",
                       anchor_ts=int(time.time()))  # fmt: skip
        claim = AnchorReceipt(MALLORY_LOG, 300, log.note, checkpoint_digest(body), (bogus,))
        send.send(BundleContent(NS, (), (claim.to_dict(),)))
        wait_for(lambda: _score(n0)["score"] < before, 20, "the forged claim scored")
        assert anchors(n0.url, MALLORY_LOG) == []

        # 5. Growth that rewrites history (the log signs a tree that does not
        #    extend the replica's): equivocation, with evidence; nothing accepted.
        log.entries[5] = b"rewritten"
        log.grow(10)
        send.heartbeat(log)
        wait_for(lambda: refused("replica_equivocation"), 20, "the equivocation caught")
        assert replicas(n0.url)[MALLORY_LOG]["size"] == 300
        files = http_json(f"{n0.url}/v1/federation/evidence")["evidence"]
        report = verify_equivocation(parse_evidence(files[0]["file"].encode()))  # type: ignore[arg-type]
        assert report.origin == MALLORY_LOG
        assert _score(n0)["status"] == "probation"

        # The read and admin routes answer bad requests with their documented errors.
        token = (n0.directory / "keys" / "admin.token").read_text().strip()
        anchor_url = f"{n0.url}/v1/admin/replicas/anchor?origin={MALLORY_LOG}&target="
        for url, body, tok, want in [
            (
                f"{n0.url}/v1/replicas/{MALLORY_LOG}/tile/0/bogus",
                None,
                None,
                (400, "tile_path_invalid"),
            ),
            (f"{n0.url}/v1/replicas/{MALLORY_LOG}/tile/1/000", None, None, (404, "tile_not_found")),
            (
                f"{n0.url}/v1/replicas/nobody.test/{NS}/checkpoint",
                None,
                None,
                (404, "replica_not_mirrored"),
            ),
            (
                f"{n0.url}/v1/replicas/nobody.test/{NS}/anchors",
                None,
                None,
                (404, "replica_unknown"),
            ),
            (anchor_url + "rfc3161:tsa", b"", None, (401, "unauthorized")),
            (anchor_url + "rfc3161:elsewhere", b"", token, (404, "rail_not_configured")),
            (anchor_url + "rfc3161:tsa", b"", token, (503, "rail_unavailable")),  # its TSA is down
        ]:
            with pytest.raises(urllib.error.HTTPError) as e:
                http(url, body, token=tok)
            assert (e.value.code, json.loads(e.value.read())["error"]["code"]) == want, url
    finally:
        for n in nodes:
            n.stop()
