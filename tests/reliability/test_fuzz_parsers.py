"""Every parser of outside input, fuzzed from valid samples (docs/reliability.md).

Each target takes the bytes of one input, parses it the way the node does (and,
where the format carries signatures or proofs, verifies it), and may only
raise the documented error type (RemembrancerError, or a subclass the target
names).  Each valid sample must be accepted and round-trip.  The inputs are
mutations of real samples made with the project's own code: signed notes,
checkpoints and cosignatures, tlog-proofs, records, federation messages of
every type (re-signed after content mutations, so they reach the content
parsers), receipts, evidence files, RFC 3161 responses of the development TSA,
backup archives, configuration files.

Budgets: ``REMEMBRANCER_FUZZ=quick`` (default) or ``long``; see
:mod:`remembrancer.testing.fuzz`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.core.admission import check_signatures, lookup_namespace
from remembrancer.core.anchor import Anchor, AnchorReceipt, checkpoint_digest
from remembrancer.core.cadence import parse_cadence, parse_period
from remembrancer.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from remembrancer.core.cosignature import cosign, format_cosigner_vkey, parse_cosigner_vkey
from remembrancer.core.encoding import b64url_decode
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.governance import check_proposal, parse_rfc3339
from remembrancer.core.jcs import canonicalize, loads_strict, parse_sha256_hex
from remembrancer.core.keys import (
    PublicKey,
    SigningKey,
    base58btc_decode,
    format_key_file,
    parse_key_file,
)
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import Note, NoteSignature, Verifier, format_vkey, open_note, parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.schema import SchemaPattern
from remembrancer.core.tiles import (
    decode_entry_bundle,
    encode_entry_bundle,
    parse_entries_path,
    parse_tile_path,
)
from remembrancer.core.tlogproof import TlogProof, verify_tlog_proof
from remembrancer.core.witness import AddCheckpointRequest, CosignedState, check_add_checkpoint
from remembrancer.core.xns import Message as XnsMessage
from remembrancer.core.xns import parse_proof, verify_message
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import (
    EXAMPLE_WITNESSES,
    example_record,
    ledger_payload,
    make_record,
)
from remembrancer.log.schemas import bundled_schemas
from remembrancer.testing import oracles
from remembrancer.testing.fuzz import UnsoundAcceptance, budget, fuzz
from remembrancer.testing.naive_merkle import NaiveTree

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "remembrancer" / "examples"
NOW = 1_764_100_000
FED = "fuzz-federation"
LOG_KEY = SigningKey.generate(b"\x41" * 32)
ORIGIN = "fuzz.test/dao:vaultmesh"
VERIFIER = Verifier(ORIGIN, LOG_KEY.public)
VKEY = format_vkey(ORIGIN, LOG_KEY.public)
WITNESS_KEY = SigningKey.generate(b"\x42" * 32)
WITNESS_NAME = "wit.test/witness"
COSIGNER_VKEY = format_cosigner_vkey(WITNESS_NAME, WITNESS_KEY.public)
COSIGNER = parse_cosigner_vkey(COSIGNER_VKEY)
PEERS = [SigningKey.generate(bytes([0x50 + i]) * 32) for i in range(4)]
SCHEMAS = bundled_schemas()
NAMESPACES_DOC = yaml.safe_load((EXAMPLES / "namespaces.yaml").read_text())
NAMESPACES = parse_namespaces(NAMESPACES_DOC, known_schemas=frozenset(SCHEMAS.names()))
DAO = NAMESPACES["dao:vaultmesh"]
FIN = NAMESPACES["fin:clearing"]
ACTOR = demo_key("did:vm:actor:demo")
DAO_WITNESSES = [
    demo_key("did:vm:arbiter:prod-us-east-1"),
    demo_key("did:vm:arbiter:prod-eu-west-1"),
]

JSON_DICTIONARY = [
    b'"type"', b'"namespace"', b'"sha256:', b"did:key:z6Mk", b'":', b"null", b"true", b"1e400",
    b"\\u0000", b"\\ud800", b"[[[[[[[[", b"{}", b"[]", b'"origin"', b'"signature"',
]  # fmt: skip
NOTE_DICTIONARY = [b"\n\n", "\u2014 ".encode(), b"+", b"sha256:", b"c2sp.org/", b"\xe2\x80\x94"]


@dataclass
class Corpus:
    """Valid samples of every format, made with the project's own code."""

    records: list[Record] = field(default_factory=list)
    tree: NaiveTree = field(default_factory=NaiveTree)
    leaves: list[bytes] = field(default_factory=list)
    notes: list[bytes] = field(default_factory=list)  # signed, some cosigned
    proofs: list[bytes] = field(default_factory=list)  # tlog-proof files
    witness_requests: list[bytes] = field(default_factory=list)
    xns_record: Record | None = None
    xns_proof: bytes = b""
    anchor_receipts: list[bytes] = field(default_factory=list)
    federation_receipts: list[bytes] = field(default_factory=list)
    registry: Any = None
    messages: list[bytes] = field(default_factory=list)
    evidence: list[bytes] = field(default_factory=list)
    aggregates: list[bytes] = field(default_factory=list)
    tsa_responses: list[bytes] = field(default_factory=list)
    tsa: Any = None
    tsa_digest: bytes = b""
    tsa_nonce: int = 0
    backup: bytes = b""
    work: Path = Path()


def _note(size: int, *, cosigned: bool = False, tree: NaiveTree | None = None) -> bytes:
    t = tree or CORPUS().tree
    note = sign_checkpoint(Checkpoint(ORIGIN, size, t.root(size)), LOG_KEY)
    if not cosigned:
        return note
    n = Note.from_bytes(note)
    return n.with_signatures([cosign(n.text, WITNESS_KEY, WITNESS_NAME, NOW)]).to_bytes()


def _record(ns: str, schema: str, payload: dict[str, Any], i: int) -> Record:
    """A record the example namespace admits, the same in every run (fixed ids)."""
    witnesses = [demo_key(a) for a in EXAMPLE_WITNESSES[ns]]
    nonce = base64.urlsafe_b64encode(hashlib.sha256(b"%d" % i).digest()[:12]).decode()
    return make_record(ns, schema, payload, ACTOR, witnesses, timestamp=NOW,
                       event_id=f"fuzz-{i}", nonce=nonce)  # fmt: skip


@cache
def CORPUS() -> Corpus:
    c = Corpus()
    c.work = Path(tempfile.mkdtemp(prefix="remembrancer-fuzz-"))
    c.records = [
        _record("dao:vaultmesh", "ledger.append@1.0.0", ledger_payload(i), i) for i in range(6)
    ]
    c.records.append(_record("fin:clearing", "ledger.append@1.0.0", ledger_payload(99), 99))
    msg_body = {"source": "dao:vaultmesh", "target": "fin:clearing", "action": "notify",
                "payload": {"operation": "status.update", "parameters": {"status": "done"}}}  # fmt: skip
    c.xns_record = _record("dao:vaultmesh", "namespace.message@1.0.0", msg_body, 1000)
    leaves = (
        [r.leaf for r in c.records] + [c.xns_record.leaf] + [b"raw entry %d" % i for i in range(9)]
    )
    c.tree = NaiveTree.from_entries(leaves)
    c.leaves = leaves
    size = len(leaves)
    c.notes = [_note(s, cosigned=s % 2 == 0, tree=c.tree) for s in (1, 2, 7, size)]
    for i in (0, 3, 6, 7):
        hashes = tuple(c.tree.inclusion_proof(i, size))
        extra = leaves[i] if i % 2 else None
        c.proofs.append(
            TlogProof(i, hashes, _note(size, cosigned=True, tree=c.tree), extra).to_bytes()
        )
    xi = leaves.index(c.xns_record.leaf)
    c.xns_proof = TlogProof(xi, tuple(c.tree.inclusion_proof(xi, size)),
                            _note(size, cosigned=True, tree=c.tree)).to_bytes()  # fmt: skip
    for old in (0, 2, 7):
        proof = c.tree.consistency_proof(old, size) if old else []
        head = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
        c.witness_requests.append(head.encode() + b"\n" + _note(size, tree=c.tree))
    # Anchors and receipts.
    body = Note.from_bytes(c.notes[-1]).text.encode()
    digest = checkpoint_digest(body)
    anchors = (
        Anchor("rfc3161:tsa", digest, "verified", tx_ref="tsr-1", anchor_ts=NOW, evidence={"tsr": "AAAA"}),
        Anchor("eip155:1", digest, "submitted", tx_ref="0x" + "ab" * 32, anchor_ts=NOW + 5),
    )  # fmt: skip
    c.anchor_receipts = [
        canonicalize(AnchorReceipt(ORIGIN, size, c.notes[-1], digest, anchors).to_dict()),
        canonicalize(AnchorReceipt(ORIGIN, size, c.notes[-1], digest, ()).to_dict()),
    ]
    from remembrancer.federation.receipts import FederationReceipt

    fr = FederationReceipt(FED, "dao:vaultmesh", ORIGIN, c.notes[-1], anchors[0])
    fr = fr.with_signature(fr.countersign(PEERS[0], "anchor", NOW))
    for k in PEERS[1:3]:
        fr = fr.with_signature(fr.countersign(k, "witness", NOW + 1))
    c.federation_receipts = [canonicalize(fr.to_dict(quorum=2))]
    # The registry, messages of every type, evidence.
    from remembrancer.federation.registry.model import Registry

    reg_doc = {"federation_id": FED, "quorum": 2, "anchor_strategy": "independent", "peers": [
        {"did": k.did, "endpoint": f"https://p{i}.example", "pubkey": k.did,
         "roles": ["witness", "anchor", "countersign", "relay", "coordinator"]}
        for i, k in enumerate(PEERS)]}  # fmt: skip
    c.registry = Registry.from_dict(reg_doc)
    c.messages = [_sign_message(t, content) for t, content in _message_contents(c, fr).items()]
    from remembrancer.core.tiles import TileTree
    from remembrancer.federation.evidence.claims import ClaimEvidence
    from remembrancer.federation.evidence.equivocation import EquivocationEvidence

    ta, tb = TileTree(), TileTree()
    ta.append_many([b"shared %d" % i for i in range(5)] + [b"a %d" % i for i in range(5)])
    tb.append_many([b"shared %d" % i for i in range(5)] + [b"b %d" % i for i in range(8)])
    na = sign_checkpoint(Checkpoint(ORIGIN, 10, ta.root(10)), LOG_KEY)
    nb = sign_checkpoint(Checkpoint(ORIGIN, 13, tb.root(13)), LOG_KEY)
    nb10 = sign_checkpoint(Checkpoint(ORIGIN, 10, tb.root(10)), LOG_KEY)
    c.evidence = [
        EquivocationEvidence.build(VKEY, na, nb, tb).to_bytes(),
        EquivocationEvidence.build(VKEY, na, nb10).to_bytes(),
    ]
    # A receipt PEERS[1] countersigned although its anchor does not cover the checkpoint.
    false = FederationReceipt(FED, "dao:vaultmesh", ORIGIN, c.notes[-1],
                              Anchor("rfc3161:tsa", bytes(32), "verified", tx_ref="tsr-x",
                                     anchor_ts=NOW, evidence={"tsr": "AAAA"}))  # fmt: skip
    false = false.with_signature(false.countersign(PEERS[1], "anchor", NOW))
    anchor_msg = _sign_message(
        "anchor", {"namespace": "dao:vaultmesh", "receipt": false.to_dict()}, key=PEERS[1]
    )
    c.evidence.append(ClaimEvidence.create(
        kind="invalid_anchor_claim", federation_id=FED, accused=PEERS[1].did, message=anchor_msg,
        receipt_at="/content/receipt", countersigner=PEERS[1].did, finding="root_mismatch",
        reporter_key=PEERS[0], reported_at=NOW + 60).to_bytes())  # fmt: skip
    # Aggregate anchors (collaborative anchoring).
    from remembrancer.core.aggregation import AggregateAnchor, AggregationTree

    others = [hashlib.sha256(b"other %d" % i).digest() for i in range(4)]
    agg_tree = AggregationTree.build([digest, *others])
    agg_anchor = Anchor("rfc3161:tsa", agg_tree.root, "verified", tx_ref="5eed", anchor_ts=NOW,
                        aggregation=agg_tree.aggregation(digest))  # fmt: skip
    c.aggregates = [canonicalize(AggregateAnchor(FED, PEERS[0].did, "rfc3161:tsa", 29401666, ORIGIN,
                                                 size, digest, agg_anchor).to_dict())]  # fmt: skip
    # RFC 3161: real responses of the development TSA.
    from remembrancer.anchoring.rfc3161.devtsa import DevTsa
    from remembrancer.anchoring.rfc3161.model import Imprint
    from remembrancer.anchoring.rfc3161.rail import build_request

    c.tsa = DevTsa(c.work / "tsa")
    c.tsa_digest, c.tsa_nonce = digest, 0x1234567
    request = build_request(Imprint.for_digest(digest), nonce=c.tsa_nonce)
    c.tsa_responses = [c.tsa.respond(request)]
    c.backup = _backup(c.work)
    return c


def _message_contents(c: Corpus, fr: Any) -> dict[str, dict[str, Any]]:
    root = "sha256:" + c.tree.root(16).hex()
    return {
        "heartbeat": {"logs": [{"origin": ORIGIN, "size": 16, "root": root}]},
        "checkpoint": {"origin": ORIGIN, "note": c.notes[-1].decode()},
        "anchor": {"namespace": "dao:vaultmesh", "receipt": fr.to_dict()},
        "countersign": {"namespace": "dao:vaultmesh", "receipt_id": fr.id,
                        "signature": fr.signatures[0].to_dict()},
        "receipt": {"namespace": "dao:vaultmesh", "receipt": fr.to_dict(quorum=2)},
        "evidence": {"kind": "equivocation", "subject": ORIGIN, "file": "x\n"},
        "request": {"namespace": "dao:vaultmesh", "fromTs": NOW - 60, "toTs": NOW, "want": ["anchors"]},
        "bundle": {"namespace": "dao:vaultmesh", "receipts": [fr.to_dict(quorum=2)],
                   "anchors": [json.loads(c.anchor_receipts[0])], "in_reply_to": 5},
        "xns": {"source": "dao:vaultmesh", "target": "fin:clearing",
                "record": json.loads(c.xns_record.leaf), "proof": c.xns_proof.decode()},
    }  # fmt: skip


_SEQ = [1]


def _sign_message(kind: str, content: Any, *, key: SigningKey = PEERS[1]) -> bytes:
    _SEQ[0] += 1
    body = {"type": kind, "federation_id": FED, "sender": key.did, "seq": _SEQ[0],
            "timestamp": NOW, "content": content}  # fmt: skip
    from remembrancer.core.encoding import b64url_encode

    body["signature"] = b64url_encode(key.sign(canonicalize(body)))
    return canonicalize(body)


def _backup(work: Path) -> bytes:
    """A real backup archive of a small node (in process)."""
    import asyncio

    from remembrancer.node.backup.write import create_backup
    from remembrancer.node.config import load_node_config, write_initial_config
    from remembrancer.node.runtime import Node

    directory = work / "node"
    write_initial_config(directory, origin_prefix="backup.test",
                         demo_keys={a: demo_key(a) for a in ("did:vm:actor:demo",)})  # fmt: skip
    config = load_node_config(directory / "node.yaml", env={})

    async def fill() -> None:
        node = Node.from_config(config)
        node.scheduler_enabled = False
        await node.start()
        try:
            now = int(time.time())  # within the node's admission window
            for i in range(5):
                await node.submit(example_record("dao:vaultmesh", i, timestamp=now).leaf)
        finally:
            await node.stop()

    asyncio.run(fill())
    out = work / "backup.tar"
    create_backup(config, out)
    return out.read_bytes()


# --- targets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class T:
    """One fuzz target: ``run(bytes)`` and its samples."""

    run: Callable[[bytes], object]
    samples: Callable[[], list[bytes]]
    quick: int = 1500
    long: int = 40000
    json_level: bool = False
    lines: bool = False
    finish: Callable[[Any], bytes] | None = None
    dictionary: tuple[bytes, ...] = ()
    oracle: Callable[[bytes], object] | None = None


def _text(data: bytes) -> str:
    """Inputs that arrive as text (URLs, YAML values) are decoded the way the edge does."""
    return data.decode("utf-8", "surrogateescape")


def t_loads_strict(data: bytes) -> None:
    value = loads_strict(data)
    assert loads_strict(canonicalize(value)) == value or value != value


def t_note(data: bytes) -> None:
    note = Note.from_bytes(data)
    assert Note.from_bytes(note.to_bytes()) == note
    opened = open_note(data, [VERIFIER, COSIGNER])
    assert opened.text == note.text


def t_checkpoint(data: bytes) -> None:
    signed = open_checkpoint(data, VERIFIER, [COSIGNER])
    assert Checkpoint.parse(signed.checkpoint.to_body()) == signed.checkpoint


def t_checkpoint_body(data: bytes) -> None:
    cp = Checkpoint.parse(_text(data))
    assert cp.origin


def t_vkey(data: bytes) -> None:
    text = _text(data)
    parse_vkey(text)


def t_cosigner_vkey(data: bytes) -> None:
    parse_cosigner_vkey(_text(data))


def t_signature_line(data: bytes) -> None:
    sig = NoteSignature.parse_line(_text(data))
    assert NoteSignature.parse_line(sig.to_line().rstrip("\n")) == sig


def t_tlog_proof(data: bytes) -> None:
    proof = TlogProof.parse(data)
    assert TlogProof.parse(proof.to_bytes()) == proof
    leaves = CORPUS().leaves
    leaf = leaves[proof.index] if proof.index < len(leaves) else b""
    verify_tlog_proof(proof, leaf, VERIFIER, [COSIGNER], min_cosigners=1)


def t_witness_request(data: bytes) -> None:
    req = AddCheckpointRequest.parse(data)
    old = req.old_size
    state = CosignedState(old, CORPUS().tree.root(old), _note(old)) if 0 < old <= 17 else None
    check_add_checkpoint(req, [VERIFIER], state)


def t_did_key(data: bytes) -> None:
    text = _text(data)
    key = PublicKey.from_did(text)
    assert PublicKey.from_did(key.did) == key


def t_base58(data: bytes) -> None:
    base58btc_decode(_text(data))


def t_key_file(data: bytes) -> None:
    key = parse_key_file(data)
    assert parse_key_file(format_key_file(key)).public == key.public


def t_record(data: bytes) -> None:
    """Admission's rules 1, 5 and 6 (well-formed, a namespace hosted here, signatures)."""
    rec = Record.from_bytes(data)
    assert Record.from_bytes(rec.leaf) == rec
    ns = lookup_namespace(rec, NAMESPACES)
    check_signatures(rec, ns)
    if rec.schema.startswith("governance."):
        check_proposal(rec, ns)


def t_b64url(data: bytes) -> None:
    b64url_decode(_text(data))


def t_namespaces(data: bytes) -> None:
    from remembrancer.log.namespaces import load_namespaces_file

    path = CORPUS().work / "namespaces-fuzz.yaml"
    path.write_bytes(data)
    load_namespaces_file(path, SCHEMAS)


def t_namespace_doc(data: bytes) -> None:
    """The JSON-level path: the parsed document (no YAML) straight into the validator."""
    parse_namespaces(loads_strict(data), known_schemas=frozenset(SCHEMAS.names()))


def t_cadence(data: bytes) -> None:
    cadence = parse_cadence(loads_strict(data))
    assert parse_cadence(cadence.to_dict()) == cadence


def t_period(data: bytes) -> None:
    parse_period(_text(data))


def t_schema_pattern(data: bytes) -> None:
    SchemaPattern.parse(_text(data))


def t_rfc3339(data: bytes) -> None:
    parse_rfc3339(_text(data))


def t_tile_path(data: bytes) -> None:
    text = _text(data)
    t = parse_entries_path(text) if text.startswith("tile/entries/") else parse_tile_path(text)
    assert t.width >= 1


def t_entry_bundle(data: bytes) -> None:
    entries = decode_entry_bundle(data)
    assert encode_entry_bundle(entries) == data


def t_sha256_hex(data: bytes) -> None:
    assert len(parse_sha256_hex(_text(data))) == 32


def t_anchor_receipt(data: bytes) -> None:
    receipt = AnchorReceipt.from_dict(loads_strict(data))
    assert AnchorReceipt.from_dict(receipt.to_dict()) == receipt


def t_federation_receipt(data: bytes) -> None:
    from remembrancer.federation.receipts import FederationReceipt, verify_federation_receipt

    receipt = FederationReceipt.from_dict(loads_strict(data))
    assert FederationReceipt.from_dict(receipt.to_dict()) == receipt
    verify_federation_receipt(receipt, {k.did: k.public for k in PEERS}, 2)


def t_aggregate(data: bytes) -> None:
    from remembrancer.core.aggregation import AggregateAnchor, verify_aggregate

    claim = AggregateAnchor.from_dict(loads_strict(data))
    assert AggregateAnchor.from_dict(claim.to_dict()) == claim
    verify_aggregate(claim, federation_id=FED, target="rfc3161:tsa", origin=ORIGIN,
                     size=claim.size, digest=claim.checkpoint)  # fmt: skip


def t_message(data: bytes) -> None:
    from remembrancer.federation.protocol.verify import MessageVerifier
    from remembrancer.federation.protocol.wire import Message

    msg = Message.parse(data)
    assert Message.parse(msg.to_bytes()) == msg
    MessageVerifier(FED, CORPUS().registry.peers).verify(data, NOW)


def t_registry(data: bytes) -> None:
    from remembrancer.federation.registry.model import Registry

    reg = Registry.from_dict(loads_strict(data))
    assert Registry.from_dict(reg.to_dict()) == reg
    Registry.from_record_payload(reg.registry_record_payload())


def t_registry_payload(data: bytes) -> None:
    from remembrancer.federation.registry.model import Registry

    Registry.from_record_payload(loads_strict(data))


def t_evidence(data: bytes) -> None:
    from remembrancer.federation.evidence.claims import ClaimEvidence, verify_claim_evidence
    from remembrancer.federation.evidence.equivocation import verify_equivocation
    from remembrancer.federation.evidence.parse import parse_evidence

    ev = parse_evidence(data)
    if isinstance(ev, ClaimEvidence):
        verify_claim_evidence(ev, CORPUS().registry)
    else:
        verify_equivocation(ev)


def t_xns(data: bytes) -> None:
    """A cross-namespace message record (its proof fixed) into fin:clearing."""
    rec = Record.from_bytes(data)
    XnsMessage.from_record(rec, SCHEMAS)
    verify_message(rec, CORPUS().xns_proof, FIN, SCHEMAS, {ORIGIN: [VERIFIER]}, hosted=NAMESPACES)


def t_xns_proof(data: bytes) -> None:
    """The proof beside a message (its record fixed)."""
    parse_proof(data)
    c = CORPUS()
    assert c.xns_record is not None
    verify_message(c.xns_record, data, FIN, SCHEMAS, {ORIGIN: [VERIFIER]}, hosted=NAMESPACES)


def t_tsa_response(data: bytes) -> None:
    from remembrancer.anchoring.rfc3161.model import Imprint
    from remembrancer.anchoring.rfc3161.parse import parse_response
    from remembrancer.anchoring.rfc3161.verify import verify_token

    c = CORPUS()
    parse_response(data)
    verify_token(data, Imprint.for_digest(c.tsa_digest), nonce=c.tsa_nonce,
                 trust_roots=[c.tsa.ca_cert], now=NOW)  # fmt: skip


def t_tsa_request(data: bytes) -> None:
    """The development TSA answers every request with a DER response, never raising."""
    from remembrancer.anchoring.rfc3161.parse import parse_response

    answer = CORPUS().tsa.respond(data)
    try:
        parse_response(answer)
    except RemembrancerError as e:
        assert e.code == "tsa_status_rejected", e.explain()


def t_explorer_query(data: bytes) -> None:
    from remembrancer.explorer.views import parse_query

    parse_query(_text(data))


def t_btc_ots(data: bytes) -> None:
    from remembrancer.anchoring.btc.ots import parse_ots

    parse_ots(data)


def t_btc_merkle_block(data: bytes) -> None:
    from remembrancer.anchoring.btc.merkleblock import parse_merkle_block

    parse_merkle_block(data)


def t_btc_headers(data: bytes) -> None:
    from remembrancer.anchoring.btc.headers import parse_headers_text

    parse_headers_text(_text(data))


def t_node_config(data: bytes) -> None:
    from remembrancer.node.config import load_node_config

    directory = CORPUS().work / "node"
    path = directory / "node-fuzz.yaml"
    path.write_bytes(data)
    load_node_config(path, env={})


def t_backup_manifest(data: bytes) -> None:
    from remembrancer.node.backup.manifest import Manifest

    m = Manifest.from_bytes(data)
    assert Manifest.from_bytes(m.to_bytes()) == m


def t_backup_archive(data: bytes) -> None:
    from remembrancer.node.backup.restore import verify_backup

    path = CORPUS().work / "fuzz-archive.tar"
    path.write_bytes(data)
    verify_backup(path, trust=[_backup_key().did])


def _backup_key() -> Any:
    from remembrancer.node.keyfile import read_key_file

    return read_key_file(CORPUS().work / "node" / "keys" / "node.key")


# --- soundness oracles --------------------------------------------------------------------------
#
# An accepted input must still verify under the keys that made the original
# samples, checked without the code under test (remembrancer.testing.oracles:
# PyNaCl on the bytes the specifications define) and against the reference
# Merkle tree (NaiveTree) for proofs.  A target that accepts what these refuse
# has a broken verifier (test_the_oracles_catch_a_broken_verifier).


def _tree_state(text: bytes) -> tuple[int, bytes]:
    """A checkpoint body's size and root, which must be the original tree's."""
    origin, size, root = text.decode().split("\n")[:3]
    n = int(size)
    if origin != ORIGIN or base64.b64decode(root, validate=True) != CORPUS().tree.root(n):
        raise oracles.Unsound("the checkpoint is not a state of the original tree")
    return n, base64.b64decode(root)


def _witness_keys(namespace: str) -> tuple[dict[str, PublicKey], int]:
    """The record witnesses of the original namespace configuration: keys and quorum."""
    policy = NAMESPACES_DOC["namespaces"][namespace]["witnesses"]
    keys = {demo_key(a).did: demo_key(a).public for a in policy["allowlist"]}
    return keys, int(policy["min_required"])


def o_record(data: bytes) -> None:
    """An accepted record: the original actor's signature and a quorum of the
    original record witnesses of its namespace verify over its signing input."""
    keys, quorum = _witness_keys(loads_strict(data)["namespace"])
    oracles.check_record_signed(data, ACTOR.public, keys, quorum)


def o_xns_record(data: bytes) -> None:
    """An accepted message record is the one entry the fixed proof proves: the
    original leaf, byte for byte, signed by the original keys."""
    o_record(data)
    c = CORPUS()
    assert c.xns_record is not None
    if canonicalize(loads_strict(data)) != c.xns_record.leaf:
        raise oracles.Unsound("not the entry the proof proves")


def o_tlog_proof(data: bytes, *, cosigned: bool = True) -> None:
    """An accepted tlog-proof: a checkpoint of the original tree signed by the
    original log key (and cosigned by the original witness, as the target's
    policy asks), and the reference tree's inclusion path for the entry at
    that index."""
    proof = TlogProof.parse(data)
    text = oracles.check_note_signed(proof.checkpoint_note, ORIGIN, LOG_KEY.public)
    if cosigned:
        oracles.check_cosigned(proof.checkpoint_note, WITNESS_NAME, WITNESS_KEY.public)
    size, _ = _tree_state(text)
    reference = CORPUS().tree.inclusion_proof(proof.index, size) if proof.index < size else None
    if list(proof.proof_hashes) != reference:
        raise oracles.Unsound("not the reference tree's inclusion path")


def o_xns_proof(data: bytes) -> None:
    """As a tlog-proof (fin:clearing's trusted-source policy asks for no cosigner),
    of the message's own entry."""
    o_tlog_proof(data, cosigned=False)
    c = CORPUS()
    assert c.xns_record is not None
    if TlogProof.parse(data).index != c.leaves.index(c.xns_record.leaf):
        raise oracles.Unsound("a proof of another entry")


def o_checkpoint(data: bytes) -> None:
    """An accepted checkpoint is a state of the original tree signed by the original key."""
    _tree_state(oracles.check_note_signed(data, ORIGIN, LOG_KEY.public))


def o_note(data: bytes) -> None:
    """An accepted note carries a signature of one of the original keys."""
    try:
        oracles.check_note_signed(data, ORIGIN, LOG_KEY.public)
    except oracles.Unsound:
        oracles.check_cosigned(data, WITNESS_NAME, WITNESS_KEY.public)


def o_witness_request(data: bytes) -> None:
    """An accepted add-checkpoint request: a checkpoint of the original tree,
    signed by the original key, and the reference tree's consistency proof."""
    head, _, note = data.partition(b"\n\n")
    lines = head.decode().split("\n")
    old = int(lines[0].removeprefix("old "))
    size, _ = _tree_state(oracles.check_note_signed(note, ORIGIN, LOG_KEY.public))
    proof = [base64.b64decode(x, validate=True) for x in lines[1:] if x]
    want = CORPUS().tree.consistency_proof(old, size) if 0 < old < size else []
    if proof != want:
        raise oracles.Unsound("not the reference tree's consistency proof")


def o_message(data: bytes) -> None:
    """An accepted federation message is signed by its sender's original registry key."""
    oracles.check_message_signed(data, {k.did: k.public for k in PEERS})


# Samples.


def _json_samples(docs: list[Any]) -> list[bytes]:
    return [canonicalize(d) for d in docs]


def _registry_doc() -> dict[str, Any]:
    return CORPUS().registry.to_dict()  # type: ignore[no-any-return]


def _resign_message(value: Any) -> bytes:
    """A mutated message, re-signed by its sender when the sender is a peer: the
    content's own parser and the verifier's later checks get to see it."""
    if isinstance(value, dict):
        value.pop("signature", None)
        key = next((k for k in PEERS if k.did == value.get("sender")), None)
        if key is not None:
            from remembrancer.core.encoding import b64url_encode

            value["signature"] = b64url_encode(key.sign(canonicalize(value)))
    return canonicalize(value)


def _resign_record(value: Any) -> bytes:
    """A mutated record envelope re-signed by the demo actor and witnesses."""
    from remembrancer.core.record import sign_envelope

    if not isinstance(value, dict):
        return canonicalize(value)
    value.pop("signatures", None)
    value.pop("eventHash", None)
    ns = value.get("namespace")
    witnesses = DAO_WITNESSES if ns != "fin:clearing" else [
        demo_key(a) for a in ("did:vm:arbiter:prod-clearing-a", "did:vm:arbiter:prod-clearing-b",
                              "did:vm:arbiter:prod-clearing-c")]  # fmt: skip
    return sign_envelope(value, ACTOR, witnesses).leaf


def _rewrite_archive(archive: bytes, member: str, change: Callable[[bytes], bytes]) -> bytes:
    out = io.BytesIO()
    sums: dict[str, tuple[int, str]] = {}
    members = []
    with tarfile.open(fileobj=io.BytesIO(archive)) as src:
        for info in src.getmembers():
            f = src.extractfile(info)
            assert f is not None
            members.append((info, f.read()))
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dst:
        for info, data in members:
            if info.name == member:
                data = change(data)
                sums[info.name] = (len(data), hashlib.sha256(data).hexdigest())
            if info.name == "manifest.json" and info.name != member:
                from remembrancer.core.encoding import b64url_encode
                from remembrancer.core.jcs import canonicalize
                from remembrancer.node.backup.manifest import MANIFEST_DOMAIN

                doc = json.loads(data)
                for m in doc["members"]:
                    if m["name"] in sums:
                        m["size"], m["sha256"] = sums[m["name"]]
                # re-signed by the node key, so that the row parsers see every edit
                doc.pop("signature")
                key = _backup_key()
                sig = key.sign(MANIFEST_DOMAIN + canonicalize(doc))
                doc["signature"] = {"alg": "Ed25519", "kid": key.did, "sig": b64url_encode(sig)}
                data = json.dumps(doc).encode()
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _finish_manifest(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


def _member_target(member: str) -> Callable[[bytes], object]:
    """Verify an archive whose ``member`` is the input (the manifest's hash fixed,
    so the row parsers see every edit)."""
    return lambda data: t_backup_archive(_rewrite_archive(CORPUS().backup, member, lambda _: data))


def _member_of(archive: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def _fixtures(name: str) -> bytes:
    return (ROOT / "tests" / "fixtures" / "btc" / name).read_bytes()


TARGETS: dict[str, T] = {
    "jcs.loads_strict": T(t_loads_strict, lambda: [r.leaf for r in CORPUS().records] + CORPUS().messages[:3],
                          json_level=True, dictionary=tuple(JSON_DICTIONARY)),
    "jcs.parse_sha256_hex": T(t_sha256_hex, lambda: [r.event_hash_hex.encode() for r in CORPUS().records[:3]],
                              quick=1000, long=20000),
    "note.signed_note": T(t_note, lambda: CORPUS().notes, lines=True, dictionary=tuple(NOTE_DICTIONARY),
                           oracle=o_note),
    "note.vkey": T(t_vkey, lambda: [VKEY.encode()], quick=1000, long=20000),
    "note.signature_line": T(t_signature_line, lambda: [
        ln.encode() for n in CORPUS().notes for ln in n.decode().split("\n") if ln.startswith("\u2014")],
        quick=1000, long=20000),
    "checkpoint.open": T(t_checkpoint, lambda: CORPUS().notes, lines=True, dictionary=tuple(NOTE_DICTIONARY),
                          oracle=o_checkpoint),
    "checkpoint.body": T(t_checkpoint_body, lambda: [Note.from_bytes(n).text.encode() for n in CORPUS().notes],
                         lines=True, quick=1000, long=30000),
    "cosignature.vkey": T(t_cosigner_vkey, lambda: [COSIGNER_VKEY.encode()], quick=1000, long=20000),
    "tlogproof.parse_verify": T(t_tlog_proof, lambda: CORPUS().proofs, lines=True,
                                dictionary=tuple(NOTE_DICTIONARY), oracle=o_tlog_proof),
    "witness.add_checkpoint": T(t_witness_request, lambda: CORPUS().witness_requests, lines=True,
                                dictionary=(b"old ", b"\n\n", *NOTE_DICTIONARY), oracle=o_witness_request),
    "keys.did_key": T(t_did_key, lambda: [k.did.encode() for k in PEERS[:2]], quick=1000, long=20000),
    "keys.base58btc": T(t_base58, lambda: [k.did[9:].encode() for k in PEERS[:2]], quick=800, long=20000),
    "keys.key_file": T(t_key_file, lambda: [format_key_file(k) for k in PEERS[:2]], lines=True,
                       quick=1000, long=30000),
    "record.envelope": T(t_record, lambda: [r.leaf for r in CORPUS().records], json_level=True,
                         finish=_resign_record, dictionary=tuple(JSON_DICTIONARY), long=60000,
                         oracle=o_record),
    "record.b64url": T(t_b64url, lambda: [b"AAEC", b"_-8"], quick=500, long=10000),
    "namespace.yaml_file": T(t_namespaces, lambda: [(EXAMPLES / "namespaces.yaml").read_bytes()],
                             lines=True, quick=150, long=4000),
    "namespace.document": T(t_namespace_doc, lambda: [json.dumps(NAMESPACES_DOC).encode()],
                            json_level=True, finish=lambda v: json.dumps(v).encode(), quick=600, long=30000),
    "cadence.parse": T(t_cadence, lambda: [json.dumps(NAMESPACES_DOC["namespaces"][n]["cadence"]).encode()
                                           for n in ("dao:vaultmesh", "fin:clearing")],
                       json_level=True, finish=lambda v: json.dumps(v).encode(), quick=1000, long=30000),
    "cadence.period": T(t_period, lambda: [b"89s", b"34*fast", b"1d", b"12h"], quick=800, long=20000),
    "schema.pattern": T(t_schema_pattern, lambda: [b"ledger.append@1.0.x", b"vote.cast@1.0.0"],
                        quick=800, long=20000),
    "governance.rfc3339": T(t_rfc3339, lambda: [b"2025-11-26T10:00:00Z", b"2025-11-26T10:00:00.5+01:00"],
                            quick=800, long=20000),
    "tiles.path": T(t_tile_path, lambda: [b"tile/0/000", b"tile/1/x001/234.p/7", b"tile/entries/005.p/3"],
                    quick=1000, long=30000, dictionary=(b"/", b"x", b".p/", b"..", b"%2f")),
    "tiles.entry_bundle": T(t_entry_bundle, lambda: [encode_entry_bundle([r.leaf for r in CORPUS().records[:3]]),
                                                     encode_entry_bundle([b"", b"x" * 300])],
                            quick=1000, long=30000),
    "anchor.receipt": T(t_anchor_receipt, lambda: CORPUS().anchor_receipts, json_level=True,
                        dictionary=tuple(JSON_DICTIONARY)),
    "federation.receipt": T(t_federation_receipt, lambda: CORPUS().federation_receipts, json_level=True),
    "aggregation.claim": T(t_aggregate, lambda: CORPUS().aggregates, json_level=True),
    "federation.message": T(t_message, lambda: CORPUS().messages, json_level=True, finish=_resign_message,
                            dictionary=tuple(JSON_DICTIONARY), long=80000, oracle=o_message),
    "federation.registry": T(t_registry, lambda: _json_samples([_registry_doc()]), json_level=True),
    "federation.registry_payload": T(t_registry_payload, lambda: _json_samples(
        [CORPUS().registry.registry_record_payload("memo")]), json_level=True),
    "federation.evidence": T(t_evidence, lambda: CORPUS().evidence, json_level=True,
                             dictionary=tuple(JSON_DICTIONARY), quick=800, long=30000),
    "xns.message_record": T(t_xns, lambda: [CORPUS().xns_record.leaf], json_level=True,  # type: ignore[union-attr]
                            finish=_resign_record, quick=800, long=30000, oracle=o_xns_record),
    "xns.proof": T(t_xns_proof, lambda: [CORPUS().xns_proof], lines=True, quick=800, long=30000,
                   oracle=o_xns_proof),
    "rfc3161.response": T(t_tsa_response, lambda: CORPUS().tsa_responses, quick=600, long=30000),
    "rfc3161.devtsa_request": T(t_tsa_request, lambda: [
        __import__("remembrancer.anchoring.rfc3161.rail", fromlist=["x"]).build_request(
            __import__("remembrancer.anchoring.rfc3161.model", fromlist=["x"]).Imprint.for_digest(bytes(32)),
            nonce=5)], quick=400, long=20000),
    "explorer.query": T(t_explorer_query, lambda: [b"12", b"sha256:" + b"ab" * 32, b"evt-1"],
                        quick=800, long=20000),
    "btc.ots": T(t_btc_ots, lambda: [_fixtures("hello-world.txt.ots"), _fixtures("incomplete.txt.ots")],
                 quick=800, long=30000),
    "btc.merkle_block": T(t_btc_merkle_block, lambda: [bytes.fromhex(_fixtures("txoutproof-core-0.11.hex").decode().strip())],
                          quick=800, long=30000),
    "btc.headers": T(t_btc_headers, lambda: [_fixtures("headers-mainnet-358391.txt")], lines=True,
                     quick=300, long=10000),
    "node.config": T(t_node_config, lambda: [(CORPUS().work / "node" / "node.yaml").read_bytes()],
                     lines=True, quick=150, long=4000),
    "backup.manifest": T(t_backup_manifest, lambda: [_member_of(CORPUS().backup, "manifest.json")], json_level=True,
                         finish=_finish_manifest, quick=600, long=20000),
    "backup.archive": T(t_backup_archive, lambda: [CORPUS().backup], json_level=False, quick=60, long=3000),
    "backup.archive_manifest": T(t_backup_archive, lambda: [CORPUS().backup], quick=40, long=2000),
    **{f"backup.{what}": T(_member_target(member), lambda member=member: [_member_of(CORPUS().backup, member)],
                          lines=what != "entries", quick=40, long=2500)
       for what, member in (("state_rows", "state.jsonl"), ("checkpoint_rows", "logs/dao:vaultmesh/checkpoints.jsonl"),
                            ("record_rows", "logs/dao:vaultmesh/records.jsonl"),
                            ("entries", "logs/dao:vaultmesh/entries.bin"))},
}  # fmt: skip


@pytest.mark.parametrize("name", list(TARGETS))
def test_parser_raises_only_its_documented_errors(name: str) -> None:
    t = TARGETS[name]
    samples = t.samples()
    if name == "backup.archive_manifest":
        # JSON-level mutations of the manifest inside a whole archive.
        manifest = _member_of(CORPUS().backup, "manifest.json")
        backup = CORPUS().backup
        result = fuzz(name, lambda d: t_backup_archive(_rewrite_archive(backup, "manifest.json", lambda _: d)),
                      [manifest], budget(t.quick, t.long), json_level=True,
                      finish=lambda v: json.dumps(v).encode())  # fmt: skip
    else:
        result = fuzz(name, t.run, samples, budget(t.quick, t.long), json_level=t.json_level,
                      lines=t.lines, finish=t.finish, dictionary=t.dictionary, oracle=t.oracle)  # fmt: skip
    print(result.summary())
    # The mutations must reach past the first check: some inputs are refused for
    # more than one reason.
    assert len(result.codes) >= 2 or result.accepted > 0, result.summary()


# Verifiers broken on purpose: the oracles must catch what they let through.
BROKEN: dict[str, tuple[str, Callable[..., Any]]] = {
    "signatures": ("remembrancer.core.keys.PublicKey.verify", lambda *a, **k: True),
    "inclusion": ("remembrancer.core.tlogproof.verify_inclusion", lambda *a, **k: None),
    "consistency": ("remembrancer.core.witness.verify_consistency", lambda *a, **k: None),
    "message inclusion": ("remembrancer.core.xns._check_inclusion", lambda *a, **k: None),
}


@pytest.mark.parametrize(
    ("name", "broken"),
    [
        ("record.envelope", "signatures"),
        ("xns.message_record", "message inclusion"),
        ("federation.message", "signatures"),
        ("checkpoint.open", "signatures"),
        ("note.signed_note", "signatures"),
        ("tlogproof.parse_verify", "signatures"),
        ("tlogproof.parse_verify", "inclusion"),
        ("xns.proof", "message inclusion"),
        ("witness.add_checkpoint", "consistency"),
    ],
)
def test_the_oracles_catch_a_broken_verifier(
    name: str, broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a verifier that accepts what it should refuse, the target's fuzzer
    fails on an unsound acceptance within its quick budget."""
    t = TARGETS[name]
    assert t.oracle is not None
    samples = t.samples()  # made with the real verifiers
    where, fake = BROKEN[broken]
    monkeypatch.setattr(where, fake)
    with pytest.raises(UnsoundAcceptance, match="fails the soundness oracle"):
        fuzz(f"{name} ({broken} broken)", t.run, samples, budget(t.quick, t.long),
             json_level=t.json_level, lines=t.lines, finish=t.finish, dictionary=t.dictionary,
             oracle=t.oracle)  # fmt: skip
