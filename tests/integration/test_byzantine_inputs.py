"""Byzantine inputs against real node processes (issue 14, rules 4, 5 and 7).

- **Cross-namespace messages** (rule 4).  Mallory is a registry member whose
  key this test holds, and runs a real node process of her own: the stock
  ``remembrancer serve`` with a configuration she controls, hosting a log named
  ``fin:clearing`` that admits anything.  Alpha, an honest node, witnesses
  her logs (so it knows her log key), hosts ``dao:vaultmesh`` and
  ``fin:clearing`` and trusts ``fin:clearing`` (the example configuration).
  Mallory writes a ``fin:clearing -> dao:vaultmesh`` invoke signed only by a
  throwaway actor into her own log (``fin:clearing`` requires 3 record
  witnesses), then delivers it to alpha directly with its proof, and through
  the federation (her node relays it as an ``xns`` message signed with her
  key).  Alpha refuses both with ``xns_source_policy_unmet`` and records
  nothing.  A genuine ``fin:clearing`` message in the same log, with its
  three record witnesses, is delivered: what the source's policy admits,
  not which node keeps the log, decides.
- **Strict JSON** (rule 7).  Records whose payload holds ``NaN``,
  ``Infinity``, an overflowing number, an integer beyond 2**53 - 1, a lone
  surrogate or a duplicate key, validly signed over exactly those bytes, are
  refused over HTTP with their code; federation messages from mallory
  carrying ``NaN`` or a duplicate member are refused ``malformed`` (the
  parser's code as ``details.reason``) and do not consume her sequence
  number.  Nothing is stored.
- **Hostile archives** (rule 5).  A backup of alpha, taken by the command
  line while alpha serves, is forged: its history rewritten and its
  checkpoints signed by a key the archive itself lists; its replay index
  emptied.  ``backup verify`` and ``backup restore`` refuse each with its
  code (as format v2, signed by the forger or even re-signed with the node
  key, and as an unsigned v1 archive the operator vouches for), and the
  target store stays empty.  The genuine archive restores, and the restored
  node does not admit an already-logged record a second time.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.encoding import b64url_encode
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note
from remembrancer.core.record import Record
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import (
    NodeProcess,
    cli,
    init_node,
    wire_federation,
    wire_witnessing,
)
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.federation.protocol.contents import HeartbeatContent
from remembrancer.federation.protocol.wire import Message
from remembrancer.node.backup.manifest import MANIFEST_DOMAIN
from remembrancer.node.config import load_node_config
from remembrancer.node.keyfile import read_key_file
from remembrancer.storage import open_store
from remembrancer.testing.naive_merkle import NaiveTree

FED = "test-federation"
DAO, FIN = "dao:vaultmesh", "fin:clearing"
ACTOR = demo_key("did:vm:actor:demo")
DAO_W = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]
FIN_W = [demo_key(f"did:vm:arbiter:prod-clearing-{x}") for x in "abc"]
THROWAWAY = SigningKey.generate()


# --- HTTP ----------------------------------------------------------------------------------


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(url: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def size(node: NodeProcess, namespace: str) -> int:
    return int(_get(f"{node.url}/v1/namespaces/{namespace}")[1]["size"])


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- the federation: alpha (honest) and mallory (hostile, her own node process) -------------


def _mallory_hosts_a_permissive_fin_clearing(node: NodeProcess) -> None:
    """Mallory's namespaces file: only fin:clearing, admitting any signed record."""
    path = node.directory / "namespaces.yaml"
    doc = yaml.safe_load(path.read_text())
    fin = doc["namespaces"][FIN]
    fin["witnesses"] = {"min_required": 0, "allowlist": []}
    fin["trusted_sources"] = []
    doc["namespaces"] = {FIN: fin}
    path.write_text(yaml.safe_dump(doc))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    base = tmp_path_factory.mktemp("byzantine-inputs")
    alpha = init_node(base / "alpha", origin_prefix="alpha.test")
    mallory = init_node(base / "mallory", origin_prefix="mallory.test")
    _mallory_hosts_a_permissive_fin_clearing(mallory)
    for n in (alpha, mallory):
        n.edit_config(scheduler={"enabled": False})
    wire_witnessing([alpha, mallory], quorum=1)  # alpha cosigns mallory's logs, and back
    wire_federation([alpha, mallory], quorum=1, federation_id=FED, heartbeat_seconds=0.5)
    started: list[NodeProcess] = []
    try:
        for n in (alpha, mallory):
            n.start()
            started.append(n)
        # alpha's dao:vaultmesh log is not empty, so its heartbeats announce it (relay)
        assert _post(f"{alpha.url}/v1/namespaces/{DAO}/records", _dao_record(0).leaf)[0] == 200
        yield alpha, mallory
    finally:
        for n in started:
            n.stop()


def _dao_record(i: int) -> Record:
    return make_record(DAO, "ledger.append@1.0.0", ledger_payload(i, 200), ACTOR, DAO_W,
                       timestamp=int(time.time()))  # fmt: skip


def _mallory_key(mallory: NodeProcess) -> SigningKey:
    return read_key_file(mallory.directory / "keys" / "node.key")


def _fin_message(actor: SigningKey, witnesses: list[SigningKey], **parameters: Any) -> Record:
    body = {"source": FIN, "target": DAO, "action": "invoke",
            "payload": {"operation": "ping", "parameters": parameters or {"pay": "1000000.00"}}}  # fmt: skip
    return make_record(FIN, "namespace.message@1.0.0", body, actor, witnesses,
                       timestamp=int(time.time()))  # fmt: skip


def _in_mallorys_log(mallory: NodeProcess, record: Record) -> str:
    """Mallory admits the record into her fin:clearing log; its tlog-proof, once her
    checkpoint carries alpha's cosignature."""
    status, receipt = _post(f"{mallory.url}/v1/namespaces/{FIN}/records", record.leaf)
    assert status == 200, receipt
    url = (f"{mallory.url}/v1/namespaces/{FIN}/proofs/inclusion?index={receipt['index']}"
           "&format=tlog-proof")  # fmt: skip

    def cosigned() -> str | None:
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        return text if "alpha.test/witness" in text else None

    return str(wait_for("alpha's cosignature on mallory's checkpoint", cosigned))


def _not_delivered(alpha: NodeProcess, record: Record, dao_size: int) -> None:
    assert size(alpha, DAO) == dao_size  # no delivery, no answer
    status, body = _get(f"{alpha.url}/v1/namespaces/{DAO}/messages/{record.event_hash_hex}")
    assert (status, body["error"]["code"]) == (404, "xns_delivery_not_found")
    delivered = metric(alpha, "remembrancer_xns_delivered_total", source=FIN, target=DAO,
                       action="invoke")  # fmt: skip
    assert delivered == 0


def test_a_peers_own_log_cannot_speak_for_a_namespace_it_does_not_keep(fed: Any) -> None:
    """Issue 14: a fin:clearing -> dao:vaultmesh invoke signed only by a throwaway actor,
    in mallory's own fin:clearing log with a valid proof, was delivered (200, a
    delivery record in dao:vaultmesh signed by alpha).  Now: 422, nothing stored."""
    alpha, mallory = fed
    forged = _fin_message(THROWAWAY, [])
    proof = _in_mallorys_log(mallory, forged)
    dao_size = size(alpha, DAO)
    before = metric(alpha, "remembrancer_xns_rejected_total", code="xns_source_policy_unmet")
    body = json.dumps({"record": forged.envelope(), "proof": proof}).encode()
    status, err = _post(f"{alpha.url}/v1/namespaces/{DAO}/messages", body)
    assert (status, err["error"]["code"]) == (422, "xns_source_policy_unmet"), err
    details = err["error"]["details"]
    assert details["required"] == 3 and details["counted"] == []
    assert details["source"] == FIN and details["policy"] == "namespaces"
    _not_delivered(alpha, forged, dao_size)
    assert (
        metric(alpha, "remembrancer_xns_rejected_total", code="xns_source_policy_unmet")
        == before + 1
    )
    # Record witnesses that fin:clearing does not allowlist do not count either.
    strangers = _fin_message(THROWAWAY, [SigningKey.generate() for _ in range(3)], n=2)
    body = json.dumps({"record": strangers.envelope(),
                       "proof": _in_mallorys_log(mallory, strangers)}).encode()  # fmt: skip
    status, err = _post(f"{alpha.url}/v1/namespaces/{DAO}/messages", body)
    assert (status, err["error"]["code"]) == (422, "xns_source_policy_unmet"), err
    assert {i["reason"] for i in err["error"]["details"]["ignored"]} == {"not_allowlisted"}
    _not_delivered(alpha, strangers, dao_size)


def test_relayed_by_the_peer_itself_it_is_refused_too_and_the_relay_is_not_blamed(
    fed: Any,
) -> None:
    """Mallory's node relays the forged message to alpha (an ``xns`` federation
    message signed with her registry key): alpha accepts the envelope (202), then
    refuses the message; nothing is stored."""
    alpha, mallory = fed
    wait_for("mallory to see alpha's dao:vaultmesh log in its heartbeats", lambda: any(
        "alpha.test/dao:vaultmesh" in p["logs"] for p in _get(f"{mallory.url}/v1/federation")[1]["peers"]))  # fmt: skip
    forged = _fin_message(THROWAWAY, [], pay="2000000.00")
    _in_mallorys_log(mallory, forged)
    dao_size = size(alpha, DAO)
    before = metric(alpha, "remembrancer_xns_rejected_total", code="xns_source_policy_unmet")
    status, body = _post(f"{mallory.url}/v1/namespaces/{DAO}/messages?wait=10",
                         json.dumps({"record": forged.envelope()}).encode())  # fmt: skip
    assert status == 202 and body["status"] == "relayed", body
    assert body["relay"]["peer"] == alpha.info["did"]
    wait_for("alpha to refuse the relayed message", lambda: metric(
        alpha, "remembrancer_xns_rejected_total", code="xns_source_policy_unmet") == before + 1)  # fmt: skip
    _not_delivered(alpha, forged, dao_size)
    peers = {p["did"]: p for p in _get(f"{alpha.url}/v1/federation")[1]["peers"]}
    assert peers[mallory.info["did"]]["status"] == "active"  # relaying proves nothing


def test_a_message_the_source_policy_admits_is_delivered_whoever_keeps_the_log(
    fed: Any,
) -> None:
    """The control: the same log, a message with fin:clearing's three record
    witnesses.  It is a message of fin:clearing, so alpha delivers it (and its
    answer): the refusals above are the policy's, not the log's."""
    alpha, mallory = fed
    genuine = _fin_message(ACTOR, FIN_W, pay="1.00")
    proof = _in_mallorys_log(mallory, genuine)
    dao_size = size(alpha, DAO)
    body = json.dumps({"record": genuine.envelope(), "proof": proof}).encode()
    status, view = _post(f"{alpha.url}/v1/namespaces/{DAO}/messages", body)
    assert status == 200 and view["status"] == "delivered", view
    assert view["answer"]["result"] == {"echo": {"pay": "1.00"}, "from": FIN}
    assert size(alpha, DAO) == dao_size + 2  # the delivery and the answer
    assert (
        metric(alpha, "remembrancer_xns_delivered_total", source=FIN, target=DAO, action="invoke")
        == 1
    )


# --- strict JSON over HTTP and in federation messages ---------------------------------------

PLACEHOLDER = '"__VALUE__"'


def _signed_with(value: bytes, *, canonical: bool = True) -> bytes:
    """A dao:vaultmesh record whose payload holds ``value`` (raw JSON text), signed by
    its actor and witnesses over exactly the bytes a node would take as its signing
    input, as an attacker would (canonicalize refuses such values, so by hand)."""
    env = make_record(DAO, "ledger.append@1.0.0", ledger_payload(1, 100), ACTOR, DAO_W,
                      timestamp=int(time.time())).envelope()  # fmt: skip
    env["payload"]["data"]["amount"] = "__VALUE__"
    del env["signatures"]
    body = canonicalize(env).replace(PLACEHOLDER.encode(), value)
    sigs = [{"alg": "Ed25519", "kid": k.did, "role": role, "sig": b64url_encode(k.sign(body))}
            for k, role in ((ACTOR, "actor"), *((w, "witness") for w in DAO_W))]  # fmt: skip
    env["signatures"] = sigs
    if canonical:
        return canonicalize(env).replace(PLACEHOLDER.encode(), value)
    return json.dumps(env, indent=1).replace(PLACEHOLDER, value.decode()).encode()


BAD_VALUES = [
    (b"NaN", "json_number_invalid"),
    (b"Infinity", "json_number_invalid"),
    (b"-Infinity", "json_number_invalid"),
    (b"1e400", "json_number_invalid"),
    (b"9007199254740993", "json_number_invalid"),
    (b'"\\ud800"', "json_string_invalid"),
]


@pytest.mark.parametrize("canonical", [True, False], ids=["canonical", "indented"])
@pytest.mark.parametrize(("value", "code"), BAD_VALUES, ids=[v.decode() for v, _ in BAD_VALUES])
def test_a_record_holding_what_rfc8785_cannot_represent_is_refused_over_http(
    fed: Any, value: bytes, code: str, canonical: bool
) -> None:
    """Regression: the canonical record ``{..."amount":NaN...}``, signed over those
    bytes, was admitted; the API then showed ``null`` and the eventHash recomputed
    from the API's JSON differed from the signed one."""
    alpha, _ = fed
    before = size(alpha, DAO)
    status, err = _post(f"{alpha.url}/v1/namespaces/{DAO}/records",
                        _signed_with(value, canonical=canonical))  # fmt: skip
    assert (status, err["error"]["code"]) == (400, code), err
    assert size(alpha, DAO) == before
    assert _get(f"{alpha.url}/v1/namespaces/{DAO}/records/{before}")[0] == 404


def test_duplicate_keys_and_bad_json_in_a_message_request_are_refused(fed: Any) -> None:
    alpha, _ = fed
    before = size(alpha, DAO)
    record = _signed_with(b'"1.00"')
    dup = record.replace(b'"nonce":', b'"nonce":"AAAAAAAAAAAA","nonce":', 1)
    status, err = _post(f"{alpha.url}/v1/namespaces/{DAO}/records", dup)
    assert (status, err["error"]["code"]) == (400, "json_duplicate_key"), err
    for inner, cause in ((b"NaN", "json_number_invalid"), (b"[1,1]", None)):
        body = b'{"record":' + _signed_with(inner) + b',"record":{}}'
        status, err = _post(f"{alpha.url}/v1/namespaces/{DAO}/messages", body)
        assert (status, err["error"]["code"]) == (400, "xns_request_malformed"), err
        assert err["error"]["details"]["cause"] == (cause or "json_duplicate_key")
    assert size(alpha, DAO) == before


def _raw_message(key: SigningKey, content: dict[str, Any], kind: str, seq: int,
                 value: bytes) -> bytes:  # fmt: skip
    """A federation message from ``key`` whose content holds ``value`` (raw JSON) in
    place of the placeholder, validly signed over exactly those bytes."""
    doc = {"type": kind, "federation_id": FED, "sender": key.did, "seq": seq,
           "timestamp": int(time.time()), "content": content}  # fmt: skip
    signing_input = canonicalize(doc).replace(PLACEHOLDER.encode(), value)
    doc["signature"] = b64url_encode(key.sign(signing_input))
    return canonicalize(doc).replace(PLACEHOLDER.encode(), value)


def test_a_federation_message_holding_nan_or_a_duplicate_member_is_malformed(fed: Any) -> None:
    """A registry member (mallory, key held by the test) sends alpha a bundle whose
    receipt holds NaN, canonical and validly signed: before, the decoder's fast path
    took it.  Refused ``malformed`` with the parser's reason; her seq is not used up."""
    alpha, mallory = fed
    key = _mallory_key(mallory)
    url = f"{alpha.url}/federation/v1/messages"
    seq = int(time.time()) * 1_000_000 + 999_999  # above what her node sent this second
    content = {"namespace": DAO, "receipts": [{"type": "x.receipt/v1", "n": "__VALUE__"}],
               "anchors": []}  # fmt: skip
    for value, reason in ((b"NaN", "json_number_invalid"), (b"Infinity", "json_number_invalid"),
                          (b"1e999", "json_number_invalid"), (b'"\\udfff"', "json_string_invalid")):  # fmt: skip
        status, err = _post(url, _raw_message(key, content, "bundle", seq, value))
        assert (status, err["error"]["code"]) == (400, "malformed"), err
        assert err["error"]["details"]["reason"] == reason
    good = _raw_message(key, content, "bundle", seq, b"1")
    dup = good.replace(b'"anchors":[]', b'"anchors":[],"anchors":[]', 1)
    status, err = _post(url, dup)
    assert (status, err["error"]["code"]) == (400, "malformed"), err
    assert err["error"]["details"]["reason"] == "json_duplicate_key"
    # Nothing refused consumed the sequence number: the same seq, well formed, is taken.
    ok = Message.sign(key, HeartbeatContent(()), federation_id=FED, seq=seq,
                      timestamp=int(time.time())).to_bytes()  # fmt: skip
    assert _post(url, ok)[0] == 202


# --- hostile archives ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(fed: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    """A backup of alpha (with keys), taken by the command line while alpha serves,
    and the records of alpha's dao:vaultmesh log at the time."""
    alpha, _ = fed
    for i in range(1, 6):
        assert _post(f"{alpha.url}/v1/namespaces/{DAO}/records", _dao_record(i).leaf)[0] == 200
    out = tmp_path_factory.mktemp("archives") / "alpha.tar"
    cli("backup", "create", "--config", str(alpha.config), "--out", str(out), "--include-keys")
    logs = json.loads(_manifest_of(out))["logs"]
    size_then = int(next(g for g in logs if g["namespace"] == DAO)["size"])
    logged = [canonicalize(_get(f"{alpha.url}/v1/namespaces/{DAO}/records/{i}")[1]["record"])
              for i in range(size_then)]  # fmt: skip
    return out, logged


def _manifest_of(path: Path) -> bytes:
    with tarfile.open(path) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return member.read()


def _members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(i, tar.extractfile(i).read()) for i in tar.getmembers()]  # type: ignore[union-attr]


def _entries(bundle: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(bundle):
        n = int.from_bytes(bundle[pos : pos + 2], "big")
        out.append(bundle[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


def _bundle(entries: list[bytes]) -> bytes:
    return b"".join(len(e).to_bytes(2, "big") + e for e in entries)


def forge(source: Path, dest: Path, *, manifest_key: SigningKey | str | None,
          log_key: SigningKey | None = None, empty_index: bool = False,
          state_row: dict[str, str] | None = None) -> None:  # fmt: skip
    """Write a hostile copy of an archive.

    ``log_key``: rewrite dao:vaultmesh's history (its first record replaced by one
    no honest node would admit) and sign every checkpoint with ``log_key``, which
    the manifest then lists as the log key.  ``empty_index``: empty its replay
    index.  ``state_row``: add a row to the node's state.  Member hashes and
    counts are fixed; the manifest is signed by ``manifest_key`` (format v2),
    left unsigned as format v1 (None), or, for ``"keep"``, left with the
    genuine signature (which no longer matches)."""
    members = _members(source)
    manifest = json.loads(members[-1][1])
    data = {i.name: d for i, d in members[:-1]}
    log = next(g for g in manifest["logs"] if g["namespace"] == DAO)
    cp_name, rec_name, ent_name = (f"logs/{DAO}/{n}" for n in
                                   ("checkpoints.jsonl", "records.jsonl", "entries.bin"))  # fmt: skip
    if log_key is not None:
        entries = _entries(data[ent_name])
        evil = make_record(DAO, "ledger.append@1.0.0", {"stream": "treasury", "sequence": 0,
                           "data": {"to": "mallory", "amount": "1000000.00"}}, THROWAWAY,
                           timestamp=int(time.time()))  # fmt: skip
        entries[0] = evil.leaf
        data[ent_name] = _bundle(entries)
        tree = NaiveTree.from_entries(entries)
        rows = []
        for line in data[cp_name].splitlines():
            row = json.loads(line)
            cp = Checkpoint(log["origin"], row["size"], tree.root(row["size"]))
            row["note"] = sign_checkpoint(cp, log_key).decode()
            rows.append(row)
        data[cp_name] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
        index = [json.loads(line) for line in data[rec_name].splitlines()]
        index[0].update(event_hash=evil.event_hash.hex(), event_id=evil.event_id,
                        actor=evil.actor, nonce=evil.nonce)  # fmt: skip
        data[rec_name] = b"".join(json.dumps(r).encode() + b"\n" for r in index)
        head = Checkpoint(log["origin"], log["size"], tree.root(log["size"]))
        log["root_hash"] = base64.b64encode(head.root_hash).decode()
        log["checkpoint"] = rows[-1]["note"]
        manifest["log_keys"] = [log_key.did]
    if empty_index:
        data[rec_name] = b""
        log["records"] = 0
    if state_row is not None:
        data["state.jsonl"] += json.dumps(state_row).encode() + b"\n"
        manifest["state_rows"] += 1
    for m in manifest["members"]:
        m["size"], m["sha256"] = len(data[m["name"]]), hashlib.sha256(data[m["name"]]).hexdigest()
    genuine = manifest.pop("signature")
    if manifest_key == "keep":
        manifest["signature"] = genuine
    elif manifest_key is None:
        manifest["format"] = "remembrancer-backup/v1"
        manifest.pop("table_rows", None)  # v1 had no typed tables: their rows are dropped
        manifest["members"] = [m for m in manifest["members"] if m["name"] != "tables.jsonl"]
        members = [m for m in members if m[0].name != "tables.jsonl"]
    else:
        assert isinstance(manifest_key, SigningKey)
        sig = manifest_key.sign(MANIFEST_DOMAIN + canonicalize(manifest))
        manifest["signature"] = {"alg": "Ed25519", "kid": manifest_key.did,
                                 "sig": b64url_encode(sig)}  # fmt: skip
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as out:
        for info, _ in members[:-1]:
            info.size = len(data[info.name])
            out.addfile(info, io.BytesIO(data[info.name]))
        raw = json.dumps(manifest).encode()
        last = members[-1][0]
        last.size = len(raw)
        out.addfile(last, io.BytesIO(raw))


@pytest.fixture
def target(archive: tuple[Path, list[bytes]], fed: Any, tmp_path: Path) -> NodeProcess:
    """A new node directory from the genuine archive's configuration and key, its
    store still empty (the node is not started)."""
    from remembrancer.demo.procs import NodeProcess, free_port

    alpha, _ = fed
    directory = tmp_path / "restored"
    cli("backup", "extract-config", str(archive[0]), "--dir", str(directory), "--trust",
        alpha.info["did"])  # fmt: skip
    node = NodeProcess(directory, free_port())
    node.edit_config(listen=f"127.0.0.1:{node.port}", witnessing={}, federation=None)
    return node


def _store_is_empty(node: NodeProcess) -> None:
    store = open_store(load_node_config(node.config).storage)
    try:
        assert store.namespaces() == []
        with store.snapshot() as snap:
            assert list(snap.state()) == []
    finally:
        store.close()


HOSTILE = {
    # name: (forge arguments given alpha's key, the extra flags, the refusal code)
    "forged key list, signed by the forger": (
        lambda alpha_key, forger: {"manifest_key": forger, "log_key": forger}, [],
        "backup_manifest_untrusted"),
    "forged key list, unsigned v1 the operator vouches for": (
        lambda alpha_key, forger: {"manifest_key": None, "log_key": forger},
        ["--allow-unsigned"], "backup_checkpoint_invalid"),
    # alpha would believe it had accepted mallory's fin:clearing far ahead, and refuse
    # every genuine proof of that log as stale
    "forged state, hashes fixed, the genuine signature kept": (
        lambda alpha_key, forger: {"manifest_key": "keep", "state_row": {
            "scope": "xns-sources", "key": "mallory.test/fin:clearing",
            "value": base64.b64encode(json.dumps({"size": 10**9, "root": "00" * 32}).encode()).decode()}},
        [], "backup_manifest_signature_invalid"),
    "emptied replay index, re-signed with the node key": (
        lambda alpha_key, forger: {"manifest_key": alpha_key, "empty_index": True}, [],
        "backup_records_mismatch"),
    "emptied replay index, unsigned v1 the operator vouches for": (
        lambda alpha_key, forger: {"manifest_key": None, "empty_index": True},
        ["--allow-unsigned"], "backup_records_mismatch"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_archive_is_refused_and_the_store_stays_empty(
    case: str, fed: Any, archive: tuple[Path, list[bytes]], target: NodeProcess, tmp_path: Path
) -> None:
    alpha, _ = fed
    make, flags, code = HOSTILE[case]
    forger = SigningKey.generate()
    hostile = tmp_path / "hostile.tar"
    forge(archive[0], hostile, **make(read_key_file(alpha.directory / "keys" / "node.key"), forger))
    out = cli("backup", "verify", str(hostile), "--trust", alpha.info["did"], *flags, check=False)
    assert out.returncode == 1 and out.stderr.startswith(f"error: {code}:"), out.stderr
    out = cli("backup", "restore", str(hostile), "--config", str(target.config), *flags,
              check=False)  # fmt: skip
    assert out.returncode == 1 and out.stderr.startswith(f"error: {code}:"), out.stderr
    _store_is_empty(target)


def test_the_genuine_archive_restores_and_no_logged_record_is_admitted_twice(
    fed: Any, archive: tuple[Path, list[bytes]], target: NodeProcess
) -> None:
    alpha, _ = fed
    path, logged = archive
    ok = cli("backup", "verify", str(path), "--trust", alpha.info["did"])
    assert ok.stdout.startswith("OK:")
    cli("backup", "restore", str(path), "--config", str(target.config))
    target.start()
    try:
        restored = size(target, DAO)
        assert restored == len(logged)
        recent = int(time.time()) - 200  # within the drift window: only the replay index stops them
        for index, leaf in enumerate(logged):
            rec = Record.from_bytes(leaf)
            if rec.timestamp < recent:
                continue
            status, receipt = _post(f"{target.url}/v1/namespaces/{DAO}/records", leaf)
            assert status == 200 and receipt["index"] == index, receipt  # the original receipt
            # The same event id with other content is a conflict, not a new entry.
            again = make_record(DAO, "ledger.append@1.0.0", ledger_payload(99, 100), ACTOR,
                                DAO_W, timestamp=int(time.time()), event_id=rec.event_id)  # fmt: skip
            status, err = _post(f"{target.url}/v1/namespaces/{DAO}/records", again.leaf)
            assert (status, err["error"]["code"]) == (409, "event_id_conflict"), err
        assert size(target, DAO) == restored
        note = Note.from_bytes(_get_text(f"{target.url}/logs/{DAO}/checkpoint"))
        assert Checkpoint.parse(note.text).size == restored
    finally:
        target.stop()


def _get_text(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()  # type: ignore[no-any-return]
