"""A malicious federation peer in its own process, for tests that attack real nodes.

Tests that check a rule of docs/federation.md ("Threat model") play the
attacker with this harness: a separate process holding a registry member's
key (the test writes the key file, so it holds the key too and can sign
checkpoints and anchors itself), with its own HTTP endpoint that the honest
nodes reach as that member's ``endpoint``.  It

- signs and sends *any* federation message, well-formed or not, with any
  ``seq``, ``timestamp``, ``sender`` and content (:meth:`ByzantinePeer.send`),
  and posts raw bytes anywhere (:meth:`ByzantinePeer.post_raw`);
- keeps every message the honest nodes send it, in order, in a bounded inbox
  (:meth:`ByzantinePeer.inbox`, :meth:`ByzantinePeer.wait_for`): what left the
  honest nodes (countersignatures, checkpoints for a coordinator, requests)
  is observable from outside them;
- answers messages of a type with crafted, signed replies to the sender's
  endpoint (:meth:`ByzantinePeer.respond`: e.g. a ``bundle`` for every
  ``request``), and GET requests with crafted bodies
  (:meth:`ByzantinePeer.serve`: a fake log host's checkpoint and tiles);
- sends heartbeats to the given endpoints, so its score stays ``active``
  (:meth:`ByzantinePeer.heartbeats`).

Usage::

    key = SigningKey.generate()
    with ByzantinePeer.start(tmp_path / "mallory", key, federation_id="fed") as mallory:
        registry_peers.append(mallory.registry_entry(roles=[...]))
        ...start the honest nodes...
        status, body = mallory.send(alpha.url, AnchorContent(ns, receipt.to_dict()))
        assert status == 202
        mallory.wait_for("countersign", timeout=10)   # or: assert not mallory.inbox("countersign")

The process (``python -m remembrancer.testing.byzantine --key-file K
--federation-id F --dir D``) listens on 127.0.0.1 at a free port and writes
``{"url", "did", "token"}`` to ``D/ready.json``.  Its control API
(``/control/...``, every call with the header ``X-Control-Token``) is what
the :class:`ByzantinePeer` client calls; everything else is the federation
face: ``POST /federation/v1/messages`` (recorded, answered ``202 {"seq"}``
like a node, nothing verified) and ``GET <path>`` (the crafted answers,
404 otherwise).  Bounds: at most :data:`MAX_INBOX` messages kept (oldest
dropped), :data:`MAX_BODY` bytes per request, :data:`MAX_ROUTES` crafted
answers, :data:`MAX_RULES` responders, :data:`TIMEOUT` seconds per outgoing
request.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from remembrancer.core.encoding import b64url_encode
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.node.keyfile import read_key_file, write_key_file

MAX_INBOX = 2000
MAX_BODY = 4 * 1024 * 1024
MAX_ROUTES = 1000
MAX_RULES = 64
TIMEOUT = 10.0
FEDERATION_PATH = "/federation/v1/messages"


def sign_message(key: SigningKey, *, type: str, content: Any, federation_id: str, seq: int,
                 timestamp: int, sender: str | None = None) -> bytes:  # fmt: skip
    """The wire bytes of a federation message signed by ``key``, as the spec
    builds them (RFC 8785 of the envelope; the signature over it without
    ``signature``), but with no check of the content: a malicious peer may
    send anything it can sign."""
    body: dict[str, Any] = {"type": type, "federation_id": federation_id,
                            "sender": sender or key.did, "seq": seq, "timestamp": timestamp,
                            "content": content}  # fmt: skip
    body["signature"] = b64url_encode(key.sign(canonicalize(body)))
    return canonicalize(body)


def _http(url: str, body: bytes | None, content_type: str = "application/json",
          method: str | None = None) -> tuple[int, bytes]:  # fmt: skip
    headers = {"Content-Type": content_type} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, reply.read(MAX_BODY)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read(MAX_BODY)
    except OSError as e:
        return 0, f"unreachable: {e}".encode()


# --------------------------------------------------------------------------
# The peer process
# --------------------------------------------------------------------------


class _Peer:
    """The state of the peer process (threads: the HTTP server's and heartbeats)."""

    def __init__(self, key: SigningKey, federation_id: str, token: str) -> None:
        self.key = key
        self.federation_id = federation_id
        self.token = token
        self.sender = key.did
        self.inbox: deque[dict[str, Any]] = deque(maxlen=MAX_INBOX)
        self.received = 0
        self.routes: dict[str, tuple[int, str, bytes]] = {}
        self.rules: list[dict[str, Any]] = []
        self.endpoints: dict[str, str] = {}  # DID -> federation endpoint (base URL)
        self.beat: dict[str, Any] | None = None
        self.lock = threading.Lock()
        self.last_seq = 0
        self.stopping = threading.Event()

    def next_seq(self) -> int:
        with self.lock:
            self.last_seq = max(self.last_seq + 1, int(time.time() * 1_000_000))
            return self.last_seq

    def send(self, url: str, type: str, content: Any, *, seq: int | None = None,
             timestamp: int | None = None, sender: str | None = None) -> tuple[int, bytes]:  # fmt: skip
        raw = sign_message(self.key, type=type, content=content, federation_id=self.federation_id,
                           seq=seq if seq is not None else self.next_seq(),
                           timestamp=timestamp if timestamp is not None else int(time.time()),
                           sender=sender or self.sender)  # fmt: skip
        return _http(url.rstrip("/") + FEDERATION_PATH, raw)

    def record(self, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            doc = {"type": None}
        entry = {"n": 0, "at": time.time(), "type": doc.get("type"), "sender": doc.get("sender"),
                 "seq": doc.get("seq"), "content": doc.get("content"),
                 "raw": base64.b64encode(raw).decode("ascii")}  # fmt: skip
        with self.lock:
            self.received += 1
            entry["n"] = self.received
            self.inbox.append(entry)
        return entry

    def react(self, entry: dict[str, Any]) -> None:
        """Send the crafted replies of every rule matching this message."""
        with self.lock:
            rules = [r for r in self.rules if r["on"] == entry["type"]]
        endpoint = self.endpoints.get(str(entry.get("sender")))
        if endpoint is None:
            return
        for rule in rules:
            for reply in rule["replies"]:
                content = _substitute(reply["content"], entry)
                self.send(endpoint, reply["type"], content)

    def heartbeats(self) -> None:
        while not self.stopping.wait(0.2):
            beat = self.beat
            if beat is None or time.time() < beat["next"]:
                continue
            beat["next"] = time.time() + beat["interval"]
            for url in beat["urls"]:
                self.send(url, "heartbeat", {"logs": beat["logs"]})


def _substitute(value: Any, entry: Mapping[str, Any]) -> Any:
    """Reply templates: the string ``"$seq"`` becomes the received message's seq,
    ``"$namespace"`` its content's namespace."""
    if value == "$seq":
        return entry.get("seq")
    if value == "$namespace":
        content = entry.get("content")
        return content.get("namespace") if isinstance(content, dict) else None
    if isinstance(value, dict):
        return {k: _substitute(v, entry) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, entry) for v in value]
    return value


def _handler(peer: _Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "byzantine-peer"

        def log_message(self, *args: Any) -> None:
            return None

        def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: Any) -> None:
            self._reply(status, json.dumps(value).encode())

        def _body(self) -> bytes | None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(413, {"error": {"code": "oversize"}})
                return None
            return self.rfile.read(length)

        def do_GET(self) -> None:
            if self.path.startswith("/control/"):
                return self._control("GET", b"")
            with peer.lock:
                route = peer.routes.get(self.path)
            if route is None:
                return self._json(404, {"error": {"code": "not_found", "message": self.path}})
            status, content_type, body = route
            self._reply(status, body, content_type)

        def do_POST(self) -> None:
            body = self._body()
            if body is None:
                return
            if self.path.startswith("/control/"):
                return self._control("POST", body)
            if self.path != FEDERATION_PATH:
                return self._json(404, {"error": {"code": "not_found", "message": self.path}})
            entry = peer.record(body)
            self._json(202, {"seq": entry["seq"]})
            if entry["type"] is not None:
                threading.Thread(target=peer.react, args=(entry,), daemon=True).start()

        def _control(self, method: str, body: bytes) -> None:
            if self.headers.get("X-Control-Token") != peer.token:
                return self._json(403, {"error": {"code": "control_token_invalid"}})
            try:
                args = json.loads(body) if body else {}
                out = self._command(method, self.path[len("/control/") :], args)
            except (KeyError, TypeError, ValueError) as e:
                return self._json(
                    400, {"error": {"code": "control_bad_request", "message": str(e)}}
                )
            self._json(200, out)
            self.wfile.flush()
            if peer.stopping.is_set():
                threading.Thread(target=self.server.shutdown, daemon=True).start()

        def _command(self, method: str, name: str, args: dict[str, Any]) -> Any:
            if name == "info":
                return {"did": peer.key.did, "federation_id": peer.federation_id}
            if name.startswith("inbox"):
                with peer.lock:
                    return {"received": peer.received, "messages": list(peer.inbox)}
            if name == "send":
                status, reply = peer.send(args["url"], args["type"], args["content"],
                                          seq=args.get("seq"), timestamp=args.get("timestamp"),
                                          sender=args.get("sender"))  # fmt: skip
                return {"status": status, "body": reply.decode("utf-8", "replace")}
            if name == "post":
                status, reply = _http(args["url"], base64.b64decode(args["body"]),
                                      args.get("content_type", "application/json"))  # fmt: skip
                return {"status": status, "body": reply.decode("utf-8", "replace")}
            if name == "serve":
                with peer.lock:
                    if args["path"] not in peer.routes and len(peer.routes) >= MAX_ROUTES:
                        raise ValueError(f"at most {MAX_ROUTES} routes")
                    peer.routes[str(args["path"])] = (int(args.get("status", 200)),
                                                      str(args.get("content_type", "text/plain")),
                                                      base64.b64decode(args["body"]))  # fmt: skip
                return {"routes": len(peer.routes)}
            if name == "respond":
                with peer.lock:
                    if len(peer.rules) >= MAX_RULES:
                        raise ValueError(f"at most {MAX_RULES} rules")
                    peer.rules.append({"on": str(args["on"]), "replies": list(args["replies"])})
                    peer.endpoints.update(
                        {str(k): str(v) for k, v in args.get("endpoints", {}).items()}
                    )
                return {"rules": len(peer.rules)}
            if name == "heartbeats":
                peer.beat = ({"interval": float(args["interval"]), "urls": list(args["urls"]),
                              "logs": list(args.get("logs", [])), "next": 0.0}
                             if args.get("urls") else None)  # fmt: skip
                return {"on": peer.beat is not None}
            if name == "stop":  # the server shuts down once this answer is sent
                peer.stopping.set()
                return {"stopping": True}
            raise KeyError(f"no control command {name!r}")

    return Handler


def serve(key: SigningKey, federation_id: str, directory: Path) -> None:
    """Run the peer until ``/control/stop`` (or a signal)."""
    token = base64.urlsafe_b64encode(os.urandom(18)).decode("ascii")
    peer = _Peer(key, federation_id, token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(peer))
    server.daemon_threads = True
    threading.Thread(target=peer.heartbeats, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    ready = directory / "ready.json"
    partial = directory / "ready.json.part"
    partial.write_text(json.dumps({"url": url, "did": key.did, "token": token}))
    os.replace(partial, ready)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        peer.stopping.set()
        server.server_close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m remembrancer.testing.byzantine",
                                     description="A malicious federation peer for tests.")  # fmt: skip
    parser.add_argument("--key-file", required=True, help="the peer's node key file")
    parser.add_argument("--federation-id", required=True)
    parser.add_argument("--dir", required=True, help="where ready.json is written")
    args = parser.parse_args(argv)
    serve(read_key_file(args.key_file), args.federation_id, Path(args.dir))


# --------------------------------------------------------------------------
# The client the tests use
# --------------------------------------------------------------------------


@dataclass
class ByzantinePeer:
    """A running malicious peer process (see the module docstring)."""

    proc: subprocess.Popen[bytes]
    directory: Path
    key: SigningKey
    federation_id: str
    url: str
    token: str

    @classmethod
    def start(cls, directory: Path, key: SigningKey, *, federation_id: str,
              timeout: float = 20.0) -> ByzantinePeer:  # fmt: skip
        """Write ``key`` to ``directory/node.key`` and start the peer process."""
        directory.mkdir(parents=True, exist_ok=True)
        key_file = directory / "node.key"
        if not key_file.exists():
            write_key_file(key_file, key)
        ready = directory / "ready.json"
        ready.unlink(missing_ok=True)
        log = (directory / "peer.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "remembrancer.testing.byzantine", "--key-file", str(key_file),
             "--federation-id", federation_id, "--dir", str(directory)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                tail = (directory / "peer.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the byzantine peer did not start: {tail}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        return cls(proc, directory, key, federation_id, info["url"], info["token"])

    def __enter__(self) -> ByzantinePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def did(self) -> str:
        return self.key.did

    def registry_entry(self, roles: Sequence[str], status: str = "active") -> dict[str, Any]:
        """This peer's entry for a federation.yaml ``peers`` list."""
        return {"did": self.did, "endpoint": self.url, "pubkey": self.did, "status": status,
                "roles": list(roles)}  # fmt: skip

    def _control(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        body = json.dumps(dict(args)).encode() if args is not None else None
        request = urllib.request.Request(f"{self.url}/control/{name}", data=body,
                                         headers={"X-Control-Token": self.token,
                                                  "Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=TIMEOUT + 5) as reply:
            return json.loads(reply.read())

    def send(self, node_url: str, content: Any = None, *, type: str | None = None,
             raw_content: Any = None, seq: int | None = None, timestamp: int | None = None,
             sender: str | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
        """Sign a message and POST it to ``node_url``'s federation endpoint;
        the node's status and JSON answer.  ``content`` is a protocol content
        object (its ``TYPE`` and ``to_json()``); or give ``type`` and
        ``raw_content`` (any JSON) to send what no honest peer would."""
        if content is not None:
            type, raw_content = content.TYPE, content.to_json()
        if type is None:
            raise ValueError("give a content object, or type and raw_content")
        out = self._control("send", {"url": node_url, "type": type, "content": raw_content,
                                     "seq": seq, "timestamp": timestamp, "sender": sender})  # fmt: skip
        try:
            answer = json.loads(out["body"]) if out["body"] else {}
        except ValueError:
            answer = {"text": out["body"]}
        return int(out["status"]), answer

    def post_raw(self, url: str, body: bytes, content_type: str = "application/json") -> int:
        """POST ``body`` as is from the peer process; the HTTP status."""
        out = self._control("post", {"url": url, "body": base64.b64encode(body).decode(),
                                     "content_type": content_type})  # fmt: skip
        return int(out["status"])

    def inbox(self, type: str | None = None, *, sender: str | None = None) -> list[dict[str, Any]]:
        """Messages received so far (oldest first), optionally of one type or sender.
        Each: ``n``, ``at``, ``type``, ``sender``, ``seq``, ``content``, ``raw`` (base64)."""
        messages = self._control("inbox")["messages"]
        return [m for m in messages if (type is None or m["type"] == type)
                and (sender is None or m["sender"] == sender)]  # fmt: skip

    def wait_for(self, type: str, *, count: int = 1, timeout: float = 15.0,
                 sender: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Wait until ``count`` messages of ``type`` arrived; return them (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.inbox(type, sender=sender)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(got)} {type} message(s) arrived, {count} expected")
            time.sleep(0.1)

    def respond(self, on: str, replies: Sequence[tuple[str, Any]],
                endpoints: Mapping[str, str]) -> None:  # fmt: skip
        """On every message of type ``on`` from a DID in ``endpoints``, send
        each ``(type, content JSON)`` reply, signed, to that sender's endpoint
        (``"$seq"`` and ``"$namespace"`` in the content are filled in)."""
        self._control("respond", {"on": on, "endpoints": dict(endpoints),
                                  "replies": [{"type": t, "content": c} for t, c in replies]})  # fmt: skip

    def serve(self, path: str, body: bytes, *, status: int = 200,
              content_type: str = "text/plain") -> None:  # fmt: skip
        """Answer ``GET path`` with ``body``."""
        self._control("serve", {"path": path, "body": base64.b64encode(body).decode(),
                                "status": status, "content_type": content_type})  # fmt: skip

    def heartbeats(self, node_urls: Sequence[str], *, interval: float = 0.5,
                   logs: Sequence[Mapping[str, Any]] = ()) -> None:  # fmt: skip
        """Send a heartbeat (with ``logs`` summaries) to each node every ``interval`` s."""
        self._control("heartbeats", {"urls": list(node_urls), "interval": interval,
                                     "logs": [dict(x) for x in logs]})  # fmt: skip

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the process to stop; kill it if it does not within ``timeout``."""
        if self.proc.poll() is None:
            try:
                self._control("stop", {})
            except (OSError, http.client.HTTPException):
                pass  # it may close the connection as it goes: wait below either way
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------
# Forged anchor evidence
# --------------------------------------------------------------------------


def forged_ots_evidence(digest: bytes, *, bitcoin_height: int | None = None,
                        calendar: str = "https://calendar.invalid") -> dict[str, Any]:  # fmt: skip
    """``btc`` evidence (mode ``ots``) for ``digest`` that proves nothing: an
    OpenTimestamps proof whose only attestation is a pending calendar promise,
    or, with ``bitcoin_height``, a Bitcoin block-header attestation at that
    height for a made-up Merkle root.  Needs the ``bitcoin`` extra."""
    from opentimestamps.core.notary import (  # type: ignore[import-untyped]
        BitcoinBlockHeaderAttestation,
        PendingAttestation,
    )
    from opentimestamps.core.op import OpAppend, OpSHA256  # type: ignore[import-untyped]
    from opentimestamps.core.timestamp import (  # type: ignore[import-untyped]
        DetachedTimestampFile,
        Timestamp,
    )

    from remembrancer.anchoring.btc.ots import serialize_ots

    stamp = Timestamp(digest)
    commitment = stamp.ops.add(OpAppend(os.urandom(16))).ops.add(OpSHA256())
    commitment.attestations.add(PendingAttestation(calendar))
    if bitcoin_height is not None:
        commitment.ops.add(OpAppend(b"made up")).ops.add(OpSHA256()).attestations.add(
            BitcoinBlockHeaderAttestation(bitcoin_height)
        )
    proof = serialize_ots(DetachedTimestampFile(OpSHA256(), stamp))
    evidence: dict[str, Any] = {"mode": "ots", "ots": base64.b64encode(proof).decode("ascii"),
                                "commitment": bytes(commitment.msg).hex(), "calendars": [calendar]}  # fmt: skip
    if bitcoin_height is not None:
        evidence["bitcoin"] = {"height": bitcoin_height, "block_hash": "00" * 32}
    return evidence


@contextmanager
def byzantine_peer(
    directory: Path, key: SigningKey, *, federation_id: str
) -> Iterator[ByzantinePeer]:
    """:meth:`ByzantinePeer.start` as a context manager."""
    peer = ByzantinePeer.start(directory, key, federation_id=federation_id)
    try:
        yield peer
    finally:
        peer.stop()


if __name__ == "__main__":
    main()
