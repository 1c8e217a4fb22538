"""Mallory, a malicious federation peer in a process of her own (tests only).

She holds one or more registry members' keys (the first is her identity; the
others are accomplices) and speaks the federation protocol over real HTTP,
but follows none of its rules: she appends junk countersignatures to
receipts, wraps what honest peers relayed to her as "evidence" against them,
floods peers with evidence about strangers and with registry proposals.

Run::

    python -m remembrancer.testing.mallory_federation --listen 127.0.0.1:PORT \\
        --federation FED --key mallory.key [--key accomplice.key ...]

She serves ``POST /federation/v1/messages`` (everything an honest peer sends
her is kept in her inbox and answered 202) and a control API that the test
drives, each answering JSON:

- ``GET /mallory/health``: her DIDs;
- ``GET /mallory/inbox``: the messages she received (``type``, ``sender``,
  ``body``: the exact wire text);
- ``POST /mallory/send`` ``{to, type, content, as?}``: sign and send anything;
- ``POST /mallory/attack/<name>`` with the attack's parameters (see the
  ``attack_*`` methods); the answer lists the honest node's HTTP answers.

:class:`MalloryProcess` starts and stops her.  (Another engineer builds a
general harness in ``testing/byzantine.py``; this one covers the federation
attacks of issue 14, rules 2, 3 and 6.)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.encoding import b64url_encode
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Signer, format_vkey, sign_note
from remembrancer.core.record import sign_envelope, unsigned_envelope
from remembrancer.federation.evidence.claims import ClaimEvidence
from remembrancer.federation.evidence.equivocation import EquivocationEvidence
from remembrancer.federation.receipts import Countersignature, FederationReceipt
from remembrancer.federation.registry.model import Registry
from remembrancer.node.keyfile import read_key_file

MAX_INBOX = 2000
MAX_BODY = 1 << 20


def post(url: str, body: bytes, *, timeout: float = 30.0) -> tuple[int, Any]:
    """POST JSON; the status and the decoded answer (or its text)."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            status, data = e.code, e.read()
    try:
        return status, json.loads(data)
    except ValueError:
        return status, data.decode("utf-8", "replace")


def get(url: str, *, timeout: float = 30.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _code(answer: Any) -> str | None:
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        return str(answer["error"].get("code"))
    return None


class Mallory:
    def __init__(self, federation_id: str, keys: list[SigningKey]) -> None:
        self.federation_id = federation_id
        self.keys = keys
        self.me = keys[0]
        self.inbox: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._seq = 0

    # --- speaking the protocol -----------------------------------------------------
    def key(self, did: str | None) -> SigningKey:
        if did is None:
            return self.me
        return next(k for k in self.keys if k.did == did)

    def message(self, kind: str, content: Any, *, key: SigningKey | None = None) -> bytes:
        key = key or self.me
        with self.lock:
            self._seq = max(self._seq + 1, int(time.time() * 1e6))
            seq = self._seq
        body = {"type": kind, "federation_id": self.federation_id, "sender": key.did,
                "seq": seq, "timestamp": int(time.time()), "content": content}  # fmt: skip
        body["signature"] = b64url_encode(key.sign(canonicalize(body)))
        return canonicalize(body)

    def send(
        self, to: str, kind: str, content: Any, *, key: SigningKey | None = None
    ) -> dict[str, Any]:
        status, answer = post(f"{to.rstrip('/')}/federation/v1/messages",
                              self.message(kind, content, key=key))  # fmt: skip
        return {"status": status, "code": _code(answer)}

    def receive(self, body: bytes) -> None:
        try:
            value = json.loads(body)
        except ValueError:
            return
        if not isinstance(value, dict):
            return
        with self.lock:
            self.inbox.append({"type": value.get("type"), "sender": value.get("sender"),
                               "body": body.decode("utf-8", "replace")})  # fmt: skip
            del self.inbox[:-MAX_INBOX]

    # --- attacks --------------------------------------------------------------------
    def attack_junk_receipt(self, p: dict[str, Any]) -> dict[str, Any]:
        """Take a public final receipt from ``source``, append ``junk`` countersignatures
        by made-up did:keys (and one in the name of ``also_as`` if given), and send it
        to ``to`` in a ``receipt`` message."""
        receipts = get(f"{p['source'].rstrip('/')}/v1/federation/receipts")["receipts"]
        final = next(r for r in receipts if r.get("quorum_met"))
        receipt = FederationReceipt.from_dict(final)
        junk = [SigningKey.generate().did for _ in range(int(p.get("junk", 1)))]
        names = [*junk, *([p["also_as"]] if p.get("also_as") else [])]
        sigs = list(receipt.signatures)
        for did in names:
            sigs.append(Countersignature(did, "witness", int(time.time()), os.urandom(64)))
        doc = receipt.to_dict()
        doc["signatures"] = [s.to_dict() for s in sigs]
        sent = self.send(p["to"], "receipt", {"namespace": receipt.namespace, "receipt": doc})
        return {**sent, "junk": names, "receipt_id": receipt.id, "namespace": receipt.namespace}

    def attack_request(self, p: dict[str, Any]) -> dict[str, Any]:
        """Ask ``to`` for the receipts of ``namespace``: it answers with bundles it signs."""
        return self.send(p["to"], "request", {"namespace": p["namespace"], "want": ["receipts"]})

    def attack_frame(self, p: dict[str, Any]) -> dict[str, Any]:
        """Wrap the newest bundle (with receipts) that ``victim`` signed and sent us as
        evidence against it, sent to ``to``: ``forged_countersignature`` naming each
        DID of ``countersigners`` (the junk we planted), and ``invalid_anchor_claim``
        over each receipt it relayed."""
        victim = p["victim"]
        with self.lock:
            bundles = [m for m in self.inbox if m["type"] == "bundle" and m["sender"] == victim
                       and json.loads(m["body"])["content"]["receipts"]]  # fmt: skip
        if not bundles:
            return {"error": "no bundle from the victim yet", "sent": []}
        raw = bundles[-1]["body"].encode("utf-8")
        receipts = json.loads(raw)["content"]["receipts"]
        sent = []
        for i, _ in enumerate(receipts):
            at = f"/content/receipts/{i}"
            for cs in p.get("countersigners", []):
                ev = self._claim(
                    "forged_countersignature", victim, raw, at, cs, "signature_invalid"
                )
                sent.append({"kind": "forged_countersignature", "countersigner": cs,
                             **self.send(p["to"], "evidence", {"kind": "forged_countersignature",
                                                               "subject": victim, "file": ev})})  # fmt: skip
            for finding in ("root_mismatch", "rail_failed"):
                ev = self._claim("invalid_anchor_claim", victim, raw, at, victim, finding)
                sent.append({"kind": "invalid_anchor_claim", "finding": finding,
                             **self.send(p["to"], "evidence", {"kind": "invalid_anchor_claim",
                                                               "subject": victim, "file": ev})})  # fmt: skip
        return {"sent": sent, "bundle": bundles[-1]["body"]}

    def _claim(self, kind: str, accused: str, raw: bytes, at: str, countersigner: str,
               finding: str) -> str:  # fmt: skip
        return ClaimEvidence.create(
            kind=kind, federation_id=self.federation_id, accused=accused,  # type: ignore[arg-type]
            message=raw, receipt_at=at, countersigner=countersigner,
            finding=finding, reporter_key=self.me, reported_at=int(time.time()),  # type: ignore[arg-type]
        ).to_bytes().decode("utf-8")  # fmt: skip

    def attack_equivocation_spam(self, p: dict[str, Any]) -> dict[str, Any]:
        """``count`` evidence messages, each a real fork signed by a throwaway key (no
        member of anything), each note padded to about ``pad`` bytes."""
        pad = int(p.get("pad", 0))
        filler = "".join("x" * 1000 + "\n" for _ in range(pad // 1001))  # extension lines
        sent = []
        for i in range(int(p["count"])):
            key = SigningKey.generate()
            origin = f"spam{i}.example/dao:vaultmesh"
            a, b = (sign_note(f"{origin}\n9\n{base64.b64encode(root).decode()}\n{filler}",
                              [Signer(origin, key)])
                    for root in (b"\x01" * 32, b"\x02" * 32))  # fmt: skip
            ev = EquivocationEvidence(origin, format_vkey(origin, key.public), a, b)
            file = ev.to_bytes().decode("utf-8")
            sent.append({"bytes": len(file), **self.send(
                p["to"], "evidence", {"kind": "equivocation", "subject": origin, "file": file})})  # fmt: skip
        return {"sent": sent}

    def attack_accuse(self, p: dict[str, Any]) -> dict[str, Any]:
        """``count`` distinct forks of a log signed by our key ``accused`` (a member:
        an accomplice that really did sign them), reported by our key ``as``."""
        accused = self.key(p["accused"])
        origin = p.get("origin", "accomplice.example/dao:vaultmesh")
        sent = []
        for i in range(int(p["count"])):
            a = sign_checkpoint(Checkpoint(origin, 100 + i, b"\x01" * 32), accused)
            b = sign_checkpoint(Checkpoint(origin, 100 + i, b"\x02" * 32), accused)
            ev = EquivocationEvidence(origin, format_vkey(origin, accused.public), a, b)
            sent.append(self.send(p["to"], "evidence", {"kind": "equivocation",
                                                        "subject": accused.did,
                                                        "file": ev.to_bytes().decode("utf-8")},
                                  key=self.key(p.get("as"))))  # fmt: skip
        return {"sent": sent}

    def attack_proposal_spam(self, p: dict[str, Any]) -> dict[str, Any]:
        """``count`` registry proposals posted (unauthenticated) to ``to``: signed by
        throwaway keys (``actor`` ``throwaway``), by us (``self``), or by throwaway keys
        with our witness signature (``witnessed``).  Each changes the epoch length."""
        to = p["to"].rstrip("/")
        current = Registry.from_dict(get(f"{to}/v1/federation/registry"))
        sent = []
        for i in range(int(p["count"])):
            mode = p.get("actor", "throwaway")
            actor = self.me if mode == "self" else SigningKey.generate()
            witnesses = [self.me] if mode == "witnessed" else []
            changed = Registry(current.federation_id, current.quorum, current.anchor_strategy,
                               current.peers, anchor_epoch_seconds=1000 + i)  # fmt: skip
            env = unsigned_envelope(
                namespace=f"fed:{current.federation_id}",
                schema="federation.registry.set@1.0.0",
                payload=changed.registry_record_payload(memo="mallory"),
                actor=actor.did, event_id=f"mallory-{os.urandom(6).hex()}",
                timestamp=int(time.time()),
                nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="),
            )  # fmt: skip
            record = sign_envelope(env, actor, witnesses)
            status, answer = post(f"{to}/v1/federation/proposals", record.leaf)
            sent.append({"status": status, "code": _code(answer), "proposal_id": record.event_id})
        return {"sent": sent}


def _handler(mallory: Mallory) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _json(self, status: int, value: Any) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(min(n, MAX_BODY))

        def do_GET(self) -> None:
            if self.path == "/mallory/health":
                self._json(200, {"dids": [k.did for k in mallory.keys]})
            elif self.path == "/mallory/inbox":
                with mallory.lock:
                    self._json(200, {"messages": list(mallory.inbox)})
            else:
                self._json(404, {"error": {"code": "not_found", "message": self.path}})

        def do_POST(self) -> None:
            body = self._body()
            if self.path == "/federation/v1/messages":
                mallory.receive(body)
                self._json(202, {"seq": 0})
                return
            try:
                params = json.loads(body or b"{}")
                if self.path == "/mallory/send":
                    out = mallory.send(params["to"], params["type"], params["content"],
                                       key=mallory.key(params.get("as")))  # fmt: skip
                elif self.path.startswith("/mallory/attack/"):
                    name = self.path.removeprefix("/mallory/attack/").replace("-", "_")
                    out = getattr(mallory, f"attack_{name}")(params)
                else:
                    self._json(404, {"error": {"code": "not_found", "message": self.path}})
                    return
            except Exception as e:  # report it to the test, which fails on it
                self._json(500, {"error": {"code": type(e).__name__, "message": str(e)}})
                return
            self._json(200, out)

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--federation", required=True)
    ap.add_argument("--key", action="append", required=True, help="a member's key file")
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    mallory = Mallory(args.federation, [read_key_file(k) for k in args.key])
    server = ThreadingHTTPServer((host, int(port)), _handler(mallory))
    server.daemon_threads = True
    server.serve_forever()


@dataclass
class MalloryProcess:
    """Mallory's process: ``start()`` waits until she answers; ``call`` drives her."""

    directory: Path
    port: int
    federation_id: str
    keys: list[SigningKey]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def did(self) -> str:
        return self.keys[0].did

    def start(self, timeout: float = 30.0) -> MalloryProcess:
        from remembrancer.node.keyfile import write_key_file

        self.directory.mkdir(parents=True, exist_ok=True)
        args = []
        for i, key in enumerate(self.keys):
            path = self.directory / f"key{i}.key"
            if not path.exists():
                write_key_file(path, key)
            args += ["--key", str(path)]
        log = (self.directory / "mallory.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remembrancer.testing.mallory_federation", "--listen",
             f"127.0.0.1:{self.port}", "--federation", self.federation_id, *args],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mallory exited {self.proc.returncode}: {self.log_tail()}")
            try:
                if get(f"{self.url}/mallory/health", timeout=1)["dids"]:
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"mallory did not start: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.directory / "mallory.log").read_text()[-n:]
        except OSError:
            return ""

    def call(self, name: str, **params: Any) -> Any:
        """Run the attack ``name`` (or ``send``); its JSON answer."""
        path = "/mallory/send" if name == "send" else f"/mallory/attack/{name}"
        status, answer = post(f"{self.url}{path}", json.dumps(params).encode(), timeout=120)
        if status != 200:
            raise AssertionError(f"mallory {name}: {status} {answer}")
        return answer

    def inbox(self) -> list[dict[str, Any]]:
        return list(get(f"{self.url}/mallory/inbox")["messages"])

    def registry_entries(self, roles: list[str] | None = None) -> list[dict[str, Any]]:
        """Her keys as federation.yaml peers (active), all at her endpoint."""
        return [{"did": k.did, "endpoint": self.url, "pubkey": k.did, "status": "active",
                 "roles": roles or ["witness", "anchor", "countersign", "relay", "coordinator"]}
                for k in self.keys]  # fmt: skip


if __name__ == "__main__":
    main()
