"""Cross-namespace messages end to end (docs/messaging.md).

- One node, in process (the real ASGI app over real SQLite): notify, query and
  invoke between the seed's namespaces, each answer verified offline; every
  refusal (forged signature, tampered, truncated, foreign or stale proof,
  untrusted source, replay, missing cosignatures, unknown operation) answered
  with its own code, leaving the target log as it was and counting in
  ``remembrancer_xns_rejected_total{code}``.
- One real node process: the seed's command line verbatim, then query and
  invoke from the command line, checked with ``remembrancer verify``.
- Two real node processes: the source on A, the target on B, B witnessing A and
  requiring its own cosignature on A's checkpoints; delivered directly and
  relayed through the federation (``xns`` messages).
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from remembrancer.core.checkpoint import Checkpoint
from remembrancer.core.cosignature import format_cosigner_vkey, parse_cosigner_vkey
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import Note, parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import hash_leaf
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import NodeProcess, cli, init_node, wire_federation, wire_witnessing
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.node.app import create_app
from remembrancer.node.keyfile import read_key_file
from remembrancer.node.runtime import Node
from remembrancer.storage import open_store

EXAMPLE = (
    Path(__file__).resolve().parents[2] / "src" / "remembrancer" / "examples" / "namespaces.yaml"
)
ACTOR = demo_key("did:vm:actor:demo")
WITNESSES = {
    "dao:vaultmesh": [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")],
    "fin:clearing": [demo_key(f"did:vm:arbiter:prod-clearing-{x}") for x in "abc"],
}  # fmt: skip
WITNESSES["ops:audit"] = WITNESSES["ext:partner"] = WITNESSES["dao:vaultmesh"]
NEVER_COSIGNS = format_cosigner_vkey("nobody.test/witness", SigningKey.generate().public)
SEED_COMMAND = ["namespace", "message", "--from", "dao:vaultmesh", "--to", "fin:clearing",
                "--action", "notify", "--operation", "status.update",
                "--payload", '{"status":"completed"}']  # fmt: skip


def message(source: str = "dao:vaultmesh", target: str = "fin:clearing", action: str = "notify",
            operation: str = "status.update", parameters: dict[str, Any] | None = None) -> Record:  # fmt: skip
    payload = {"source": source, "target": target, "action": action,
               "payload": {"operation": operation, "parameters": {"status": "completed"} if parameters is None else parameters}}  # fmt: skip
    return make_record(source, "namespace.message@1.0.0", payload, ACTOR, WITNESSES[source],
                       timestamp=int(time.time()))  # fmt: skip


def namespaces_doc() -> dict[str, Any]:
    """The example namespaces, plus ``ops:audit``: trusted by nobody, and trusting
    dao:vaultmesh only with a cosignature of a witness that never cosigns."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    spaces = doc["namespaces"]
    audit = copy.deepcopy(spaces["dao:vaultmesh"])
    del audit["governance"]
    audit["trusted_sources"] = [{"namespace": "dao:vaultmesh", "witnesses": [NEVER_COSIGNS]}]
    spaces["ops:audit"] = audit
    spaces["fin:clearing"]["trusted_sources"] = [{"namespace": "dao:vaultmesh", "max_lag": 1}]
    spaces["fin:clearing"]["handlers"] = {"ping": "echo",
                                          "settle": "remembrancer.federation.xns:echo"}  # fmt: skip
    return doc


# --- one node, in process ---------------------------------------------------------------


class Harness:
    def __init__(self, client: httpx.AsyncClient, node: Node) -> None:
        self.client, self.node = client, node

    async def record(self, rec: Record) -> dict[str, Any]:
        r = await self.client.post(f"/v1/namespaces/{rec.namespace}/records", content=rec.leaf)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def proof(self, rec: Record, receipt: dict[str, Any]) -> str:
        r = await self.client.get(f"/v1/namespaces/{rec.namespace}/proofs/inclusion",
                                  params={"index": receipt["index"], "format": "tlog-proof"})  # fmt: skip
        return r.text

    async def deliver(self, rec: Record, proof: str | None = None, target: str = "fin:clearing",
                      **params: Any) -> httpx.Response:  # fmt: skip
        body: dict[str, Any] = {"record": rec.envelope()}
        if proof is not None:
            body["proof"] = proof
        return await self.client.post(f"/v1/namespaces/{target}/messages", json=body, params=params)

    def size(self, ns: str) -> int:
        head = self.node.sequencer.head(ns)
        return head.size if head else 0

    def rejected(self, code: str) -> float:
        value = self.node.metrics.registry.get_sample_value(
            "remembrancer_xns_rejected_total", {"code": code}
        )
        return value or 0.0

    async def refused(self, status: int, code: str, rec: Record, proof: str | None,
                      target: str = "fin:clearing", **params: Any) -> None:  # fmt: skip
        size, before = self.size(target), self.rejected(code)
        r = await self.deliver(rec, proof, target, **params)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
        assert self.size(target) == size  # no trace in the log...
        assert self.rejected(code) == before + 1  # ...but the metric


def run(tmp_path: Path, body: Callable[[Harness], Awaitable[None]]) -> None:
    async def go() -> None:
        node = Node(store=open_store(f"sqlite:///{tmp_path / 'node.db'}"), node_key=SigningKey.generate(),
                    origin_prefix="alpha.test", namespaces=StaticNamespaces(parse_namespaces(namespaces_doc())),
                    scheduler_enabled=False)  # fmt: skip
        app = create_app(node, manage_node=False)
        await node.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await body(Harness(client, node))
        finally:
            await node.stop()

    asyncio.run(asyncio.wait_for(go(), 120))


def check_offline(part: dict[str, Any], vkey: str) -> Record:
    """A delivery or answer checks out with nothing but its record, its proof and
    the target log's vkey (what ``remembrancer verify`` does)."""
    record = Record.from_value(part["record"])
    verify_tlog_proof(TlogProof.parse(part["proof"].encode()), record.leaf, parse_vkey(vkey))
    return record


def test_notify_query_and_invoke_on_one_node(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        info = (await h.client.get("/v1/node")).json()
        fin_vkey, dao_vkey = info["vkeys"]["fin:clearing"], info["vkeys"]["dao:vaultmesh"]
        # notify, the node attaching the proof from its own log
        note = message()
        await h.record(note)
        r = await h.deliver(note)
        assert r.status_code == 200, r.text
        out = r.json()
        assert (out["status"], out["action"], out["answer"]) == ("delivered", "notify", None)
        assert out["message"]["eventHash"] == note.event_hash_hex
        delivery = check_offline(out["delivery"], fin_vkey)
        assert delivery.namespace == "fin:clearing" and delivery.actor == h.node.node_key.did
        assert [s.role for s in delivery.signatures] == ["actor"]  # no record witnesses
        # The delivery carries the source proof, the source record in its extra line:
        # the message itself checks out offline against the source log's key.
        source_proof = TlogProof.parse(delivery.payload["payload"]["proof"].encode())
        assert source_proof.extra == note.leaf
        verify_tlog_proof(source_proof, note.leaf, parse_vkey(dao_vkey))
        assert h.size("fin:clearing") == 1
        head = Checkpoint.parse(
            Note.from_bytes(out["delivery"]["receipt"]["checkpoint"].encode()).text
        )
        # The delivery can be read back later, with its proof at the latest size.
        again = (
            await h.client.get(f"/v1/namespaces/fin:clearing/messages/{note.event_hash_hex}")
        ).json()
        assert again["delivery"]["record"] == out["delivery"]["record"]

        # query log.head: the answer is recorded next to the delivery, with a proof
        q = message(action="query", operation="log.head", parameters={})
        await h.record(q)
        out = (await h.deliver(q)).json()
        answer = out["answer"]
        # (the head before this delivery: the checkpoint of the notify's delivery)
        assert answer["result"] == {"origin": "alpha.test/fin:clearing", "size": 1,
                                    "root": "sha256:" + head.root_hash.hex()}  # fmt: skip
        a = check_offline(answer, fin_vkey)
        assert (a.payload["source"], a.payload["target"], a.payload["action"]) == (
            "fin:clearing", "dao:vaultmesh", "notify")  # fmt: skip
        params = a.payload["payload"]["parameters"]
        assert params["inReplyTo"] == out["delivery"]["receipt"]["eventHash"]
        assert params["message"] == q.event_hash_hex and params["result"] == answer["result"]
        assert (out["delivery"]["receipt"]["index"], answer["receipt"]["index"]) == (1, 2)

        # query record.get: a record of the target, by eventHash
        g = message(action="query", operation="record.get",
                    parameters={"eventHash": out["delivery"]["receipt"]["eventHash"]})  # fmt: skip
        await h.record(g)
        result = (await h.deliver(g)).json()["answer"]["result"]
        assert result["found"] and result["index"] == 1
        assert result["record"] == out["delivery"]["record"]
        assert result["leafHash"] == "sha256:" + hash_leaf(canonicalize(result["record"])).hex()
        g2 = message(
            action="query", operation="record.get", parameters={"eventHash": "sha256:" + "0" * 64}
        )
        await h.record(g2)
        assert (await h.deliver(g2)).json()["answer"]["result"]["found"] is False

        # invoke: a built-in handler, and one named module:function
        for op in ("ping", "settle"):
            inv = message(action="invoke", operation=op, parameters={"amount": "10.00"})
            await h.record(inv)
            out = (await h.deliver(inv)).json()
            assert out["answer"]["result"] == {"echo": {"amount": "10.00"}, "from": "dao:vaultmesh"}
            check_offline(out["answer"], fin_vkey)

        # and the other way round: fin:clearing -> dao:vaultmesh
        back = message("fin:clearing", "dao:vaultmesh", operation="settlement.done")
        await h.record(back)
        assert (await h.deliver(back, target="dao:vaultmesh")).status_code == 200
        delivered = h.node.metrics.registry.get_sample_value(
            "remembrancer_xns_delivered_total",
            {"source": "dao:vaultmesh", "target": "fin:clearing", "action": "invoke"},
        )
        assert delivered == 2

    run(tmp_path, body)


def test_every_refusal_has_its_code_and_leaves_no_trace(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        m1, m2 = message(parameters={"n": 1}), message(parameters={"n": 2})
        r1, r2 = await h.record(m1), await h.record(m2)
        p1, p2 = await h.proof(m1, r1), await h.proof(m2, r2)

        env = m1.envelope()
        sig = env["signatures"][0]
        sig["sig"] = ("A" if sig["sig"][0] != "A" else "B") + sig["sig"][1:]
        await h.refused(422, "xns_signature_invalid", Record.from_value(env), p1)

        proof = TlogProof.parse(p1.encode())
        note = Note.from_bytes(proof.checkpoint_note)
        cp = Checkpoint.parse(note.text)
        forged = Note(Checkpoint(cp.origin, cp.size, bytes(32)).to_body(), note.signatures)
        tampered = TlogProof(proof.index, proof.proof_hashes, forged.to_bytes()).to_bytes().decode()
        await h.refused(422, "xns_proof_signature_invalid", m1, tampered)

        await h.refused(400, "xns_proof_truncated", m1, p1[: len(p1) // 2])
        await h.refused(422, "xns_proof_foreign", m1, p2)
        # without a proof, the source must be hosted here
        await h.refused(400, "xns_proof_missing", message("ext:partner"), None)

        untrusted = message("ops:audit", "fin:clearing")
        await h.refused(
            403,
            "xns_source_untrusted",
            untrusted,
            await h.proof(untrusted, await h.record(untrusted)),
        )

        # missing cosignatures: ops:audit wants a witness that never cosigns; the node
        # waits up to ?wait= for them, then the delivery is refused
        to_audit = message(target="ops:audit")
        r_audit = await h.record(to_audit)
        started = time.monotonic()
        await h.refused(
            422, "xns_cosignatures_missing", to_audit, None, target="ops:audit", wait=0.3
        )
        assert time.monotonic() - started >= 0.3
        await h.refused(422, "xns_cosignatures_missing", to_audit,
                        await h.proof(to_audit, r_audit), target="ops:audit")  # fmt: skip

        unknown = message(action="query", operation="ledger.dump", parameters={})
        await h.record(unknown)
        await h.refused(404, "xns_operation_unknown", unknown, None)
        no_handler = message(action="invoke", operation="launch", parameters={})
        await h.record(no_handler)
        await h.refused(404, "xns_operation_unknown", no_handler, None)
        bad_params = message(action="query", operation="record.get", parameters={"eventHash": "x"})
        await h.record(bad_params)
        await h.refused(400, "xns_parameters_invalid", bad_params, None)

        # delivered once; the same message again is a replay, with any proof
        assert (await h.deliver(m2, p2)).status_code == 200
        await h.refused(409, "xns_replayed", m2, p2)
        await h.refused(409, "xns_replayed", m2, None)

        # stale: fin:clearing accepts proofs at most max_lag=1 entries older than the
        # newest dao:vaultmesh checkpoint it accepted (the one of m2's delivery)
        for i in range(2):
            await h.record(make_record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), ACTOR,
                                       WITNESSES["dao:vaultmesh"], timestamp=int(time.time())))  # fmt: skip
        m3 = message(parameters={"n": 3})
        p3 = await h.proof(m3, await h.record(m3))
        assert (await h.deliver(m3, p3)).status_code == 200
        old, new = (TlogProof.parse(p.encode()).checkpoint.size for p in (p1, p3))
        assert new - old > 1
        await h.refused(409, "xns_proof_stale", m1, p1)
        # with a fresh proof the same message is delivered
        assert (await h.deliver(m1, await h.proof(m1, r1))).status_code == 200

        # a message the source never recorded has no proof to attach
        await h.refused(404, "xns_message_not_recorded", message(), None)
        # nor can a body that is not a message request be delivered
        size = h.size("fin:clearing")
        r = await h.client.post("/v1/namespaces/fin:clearing/messages", content=b'{"proof": 1}')
        assert (r.status_code, r.json()["error"]["code"]) == (400, "xns_request_malformed")
        assert h.size("fin:clearing") == size == 3

    run(tmp_path, body)


# --- real node processes ------------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def log_size(node: NodeProcess, ns: str) -> int:
    return int(_get(f"{node.url}/v1/namespaces/{ns}")["size"])


def test_the_seed_command_verbatim_on_one_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = init_node(tmp_path / "node", origin_prefix="alpha.test")
    node.edit_config(scheduler={"enabled": False})
    node.start()
    try:
        monkeypatch.setenv("REMEMBRANCER_URL", node.url)  # instead of the default :8080
        run_ = cli(*SEED_COMMAND)
        result = json.loads(run_.stdout)
        assert (result["status"], result["source"], result["target"]) == (
            "delivered", "dao:vaultmesh", "fin:clearing")  # fmt: skip
        delivery = result["delivery"]["record"]
        assert delivery["payload"]["payload"]["parameters"] == {"status": "completed"}
        assert delivery["payload"]["payload"]["operation"] == "status.update"
        assert "PUBLIC demo keys" in run_.stderr and "delivered into fin:clearing" in run_.stderr
        assert log_size(node, "fin:clearing") == 1 and log_size(node, "dao:vaultmesh") == 1

        # query and invoke from the command line; the answer checks out offline
        out = tmp_path / "query"
        run_ = cli("namespace", "message", "--from", "dao:vaultmesh", "--to", "fin:clearing",
                   "--action", "query", "--operation", "log.head", "--out", str(out))  # fmt: skip
        assert json.loads(run_.stdout)["answer"]["result"]["size"] == 1
        vkey = node.info["vkeys"]["fin:clearing"]
        for name in ("delivery", "answer"):
            check = cli("verify", str(out / f"{name}.json"), "--proof", str(out / f"{name}.tlog-proof"),
                        "--vkey", vkey)  # fmt: skip
            assert check.stdout.startswith("OK:")
        source_proof = TlogProof.parse(
            json.loads((out / "delivery.json").read_text())["payload"]["payload"]["proof"].encode()
        )
        assert source_proof.extra == (out / "message.json").read_bytes().rstrip(b"\n")
        run_ = cli("namespace", "message", "--from", "fin:clearing", "--to", "dao:vaultmesh",
                   "--action", "invoke", "--operation", "ping", "--payload", '{"n":1}')  # fmt: skip
        assert json.loads(run_.stdout)["answer"]["result"] == {
            "echo": {"n": 1},
            "from": "fin:clearing",
        }

        # a refusal is one line and a non-zero exit; the target log is unchanged
        size = log_size(node, "fin:clearing")
        run_ = cli("namespace", "message", "--from", "dao:vaultmesh", "--to", "fin:clearing",
                   "--action", "invoke", "--operation", "launch", check=False)  # fmt: skip
        assert run_.returncode != 0 and run_.stderr.strip().splitlines()[-1].startswith(
            "error: xns_operation_unknown"
        )
        assert log_size(node, "fin:clearing") == size
        assert metric(node, "remembrancer_xns_rejected_total", code="xns_operation_unknown") == 1
    finally:
        node.stop()


def _host_only(node: NodeProcess, namespace: str, **changes: Any) -> None:
    path = node.directory / "namespaces.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["namespaces"] = {namespace: {**doc["namespaces"][namespace], **changes}}
    path.write_text(yaml.safe_dump(doc))


def test_between_two_nodes_direct_and_relayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = init_node(tmp_path / "a", origin_prefix="alpha.test")
    b = init_node(tmp_path / "b", origin_prefix="beta.test")
    b_witness = format_cosigner_vkey(
        "beta.test/witness", read_key_file(b.directory / "keys" / "node.key").public
    )
    # A is the home of dao:vaultmesh, B of fin:clearing; B takes messages from
    # dao:vaultmesh only with its own cosignature on A's checkpoint, and only those
    # that dao:vaultmesh's admission policy, as B's operator states it, admits.
    dao_policy = {"min_required": 2, "allowlist": [w.did for w in WITNESSES["dao:vaultmesh"]]}
    fin_policy = {"min_required": 3, "allowlist": [w.did for w in WITNESSES["fin:clearing"]]}
    _host_only(a, "dao:vaultmesh",
               trusted_sources=[{"namespace": "fin:clearing", "record_witnesses": fin_policy}])  # fmt: skip
    _host_only(
        b,
        "fin:clearing",
        trusted_sources=[{"namespace": "dao:vaultmesh", "witnesses": [b_witness],
                          "record_witnesses": dao_policy}],
    )  # fmt: skip
    for n in (a, b):
        n.edit_config(scheduler={"enabled": False})
    wire_witnessing([a, b])  # B witnesses A (and A B)
    wire_federation([a, b], quorum=1)
    a.start()
    b.start()
    try:
        command = [*SEED_COMMAND[:-1], '{"status":"direct"}']
        # 1. Directly to B: the command fetches the proof from A, and again until it
        #    carries B's cosignature.
        result = json.loads(cli(*command, "--url", a.url, "--to-url", b.url).stdout)
        assert (
            result["status"] == "delivered"
            and result["message"]["origin"] == "alpha.test/dao:vaultmesh"
        )
        delivery = Record.from_value(result["delivery"]["record"])
        proof = TlogProof.parse(delivery.payload["payload"]["proof"].encode())
        checked = verify_tlog_proof(proof, proof.extra or b"", parse_vkey(a.info["vkeys"]["dao:vaultmesh"]),
                                    [parse_cosigner_vkey(b_witness)], min_cosigners=1)  # fmt: skip
        assert [c.name for c in checked.cosigners] == ["beta.test/witness"]
        check_offline(result["delivery"], b.info["vkeys"]["fin:clearing"])
        assert log_size(b, "fin:clearing") == 1

        # 2. Relayed: the seed command verbatim against A, which does not host
        #    fin:clearing; A finds B in the heartbeats and relays an xns message.
        deadline = time.monotonic() + 20
        while not any(
            "beta.test/fin:clearing" in p["logs"] for p in _get(f"{a.url}/v1/federation")["peers"]
        ):
            assert time.monotonic() < deadline, a.log_tail()
            time.sleep(0.2)
        monkeypatch.setenv("REMEMBRANCER_URL", a.url)
        run_ = cli(*SEED_COMMAND)
        assert "relayed to" in run_.stderr, run_.stderr
        relayed = json.loads(run_.stdout)
        assert relayed["delivery"]["record"]["payload"]["payload"]["parameters"] == {
            "status": "completed"
        }
        assert log_size(b, "fin:clearing") == 2
        assert metric(a, "remembrancer_xns_relayed_total", target="fin:clearing") == 1

        # 3. A query across the nodes: B's head, proven in B's log.
        run_ = cli("namespace", "message", "--from", "dao:vaultmesh", "--to", "fin:clearing",
                   "--action", "query", "--operation", "log.head")  # fmt: skip
        answer = json.loads(run_.stdout)["answer"]
        assert (
            answer["result"]["origin"] == "beta.test/fin:clearing" and answer["result"]["size"] == 2
        )
        check_offline(answer, b.info["vkeys"]["fin:clearing"])

        # 4. At B, a proof without B's cosignature is refused, and changes nothing.
        rec = message(parameters={"status": "uncosigned"})
        receipt = _post(f"{a.url}/v1/namespaces/dao:vaultmesh/records", rec.leaf)[1]
        with urllib.request.urlopen(f"{a.url}/v1/namespaces/dao:vaultmesh/proofs/inclusion"
                                    f"?index={receipt['index']}&format=tlog-proof", timeout=10) as r:  # fmt: skip
            full = TlogProof.parse(r.read())
        note = Note.from_bytes(full.checkpoint_note)
        bare = TlogProof(
            full.index, full.proof_hashes, Note(note.text, note.signatures[:1]).to_bytes()
        )
        size = log_size(b, "fin:clearing")
        status, err = _post(f"{b.url}/v1/namespaces/fin:clearing/messages",
                            json.dumps({"record": rec.envelope(), "proof": bare.to_bytes().decode()}).encode())  # fmt: skip
        assert (status, err["error"]["code"]) == (422, "xns_cosignatures_missing")
        assert log_size(b, "fin:clearing") == size
        assert metric(b, "remembrancer_xns_rejected_total", code="xns_cosignatures_missing") >= 1

        # 5. A relayed replay: A relays (202), B refuses it after its 202 to A.
        before = metric(b, "remembrancer_xns_rejected_total", code="xns_replayed")
        status, body = _post(f"{a.url}/v1/namespaces/fin:clearing/messages",
                             json.dumps({"record": Record.from_bytes(proof.extra or b"").envelope()}).encode())  # fmt: skip
        assert status == 202 and body["status"] == "relayed", body
        deadline = time.monotonic() + 10
        while metric(b, "remembrancer_xns_rejected_total", code="xns_replayed") == before:
            assert time.monotonic() < deadline, b.log_tail()
            time.sleep(0.1)
        assert log_size(b, "fin:clearing") == size
        # The relay is not blamed for what it relayed.
        peers = {p["did"]: p for p in _get(f"{b.url}/v1/federation")["peers"]}
        assert peers[a.info["did"]]["status"] == "active"
    finally:
        a.stop()
        b.stop()
