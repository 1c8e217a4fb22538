"""The verifier outside Python (``clients/js``, ``remembrancer-verify``) and the
Python one agree, on real files from both sides.

- ``node --test`` passes (the RFC 6962 and signed-note vectors of
  ``tests/vectors``, the strict parsers, the command line);
- the JavaScript command line verifies what a real node process writes (a
  record, its tlog-proof and receipt, the cosigned checkpoint, a witness's
  cosignature, a consistency proof), and ``remembrancer verify`` verifies what
  the JavaScript side's independent log writer produces;
- every tampered or malformed variant gets the same verdict on both sides:
  the same exit status (0 verified, 1 does not verify, 2 bad input) and the
  same error code, including a hostile log that includes a record whose actor
  signature is forged (with a small-order key that WebCrypto alone accepts).

Without Node.js 20 or newer the tests skip, except under CI, where they fail.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from remembrancer.cli.common import exit_code
from remembrancer.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from remembrancer.core.cosignature import parse_cosigner_vkey
from remembrancer.core.encoding import b64url_encode, decode_base64
from remembrancer.core.errors import RemembrancerError, VerificationError
from remembrancer.core.jcs import canonicalize
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Note, format_vkey, open_note, parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import hash_leaf, verify_consistency
from remembrancer.core.tlogproof import TlogProof
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import NodeProcess, init_node, wire_witnessing
from remembrancer.demo.records import ledger_payload, make_record

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "clients" / "js"
BIN = JS / "bin" / "remembrancer-verify.js"
NAMESPACE = "dao:vaultmesh"
ERROR = re.compile(r"^error: ([a-z0-9_]+):", re.M)

Verdict = tuple[int, str | None]


@pytest.fixture(scope="module")
def node_bin() -> str:
    """Node.js 20 or newer (Ed25519 in WebCrypto), or skip (fail under CI)."""
    path = shutil.which("node")
    reason = None
    if path is None:
        reason = "Node.js is not installed: clients/js needs Node.js 20 or newer"
    else:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        if int(version.strip().lstrip("v").split(".")[0] or 0) < 20:
            reason = f"Node.js {version.strip()} is too old: clients/js needs 20 or newer"
    if reason is not None:
        pytest.skip(reason)
    assert path is not None
    return path


def test_node_test_suite_passes(node_bin: str) -> None:
    """``node --test`` in clients/js: the suite `npm test` runs."""
    files = sorted(str(p.relative_to(JS)) for p in (JS / "test").glob("*.test.js"))
    assert len(files) >= 3
    proc = subprocess.run([node_bin, "--test", *files], cwd=JS, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    passed = int(re.search(r"^# pass (\d+)$", out, re.M).group(1))  # type: ignore[union-attr]
    assert passed >= 200 and re.search(r"^# fail 0$", out, re.M), out[-2000:]


# --- running both verifiers ------------------------------------------------------


def _verdict(proc: subprocess.CompletedProcess[str]) -> Verdict:
    m = ERROR.search(proc.stderr)
    return proc.returncode, (m.group(1) if m else None)


def js(node_bin: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([node_bin, str(BIN), *map(str, args)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def py(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remembrancer.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _caught(fn: Callable[[], object]) -> Verdict:
    try:
        fn()
    except RemembrancerError as e:
        return exit_code(e), e.code
    return 0, None


# The Python core's verdicts for the commands `remembrancer` has no offline
# form of (it reads checkpoints and consistency proofs from a node): the same
# core functions, in the order the JavaScript command applies them.


def py_checkpoint(note: bytes, vkeys: list[str], witnesses: list[str], minimum: int) -> Verdict:
    def run() -> None:
        origin = Checkpoint.parse(Note.from_bytes(note).text).origin
        verifier = next((v for v in map(parse_vkey, vkeys) if v.name == origin), None)
        if verifier is None:
            raise VerificationError("no trusted log key", code="log_key_unknown")
        signed = open_checkpoint(note, verifier, [parse_cosigner_vkey(w) for w in witnesses])
        keys = {c.public_key.raw for c in signed.cosignatures} - {verifier.public_key.raw}
        if len(keys) < minimum:
            raise VerificationError("too few cosigners", code="cosigner_quorum_not_met")

    return _caught(run)


def py_cosignature(note: bytes, witnesses: list[str]) -> Verdict:
    def run() -> None:
        for w in witnesses:
            try:
                open_note(note, [parse_cosigner_vkey(w)])
            except VerificationError as e:
                code = {"note_unverified": "cosignature_missing",
                        "note_signature_invalid": "cosignature_invalid"}.get(e.code, e.code)  # fmt: skip
                raise VerificationError(e.message, code=code) from e

    return _caught(run)


def py_consistency(proof: bytes, vkey: str) -> Verdict:
    def run() -> None:
        doc = json.loads(proof)
        hashes = [
            decode_base64(h, what="a proof hash", code="consistency_proof_malformed")
            for h in doc["proof"]
        ]
        notes = [doc["checkpoints"][str(doc[k])].encode() for k in ("old", "new")]
        verifier = parse_vkey(vkey)
        old, new = (open_checkpoint(n, verifier).checkpoint for n in notes)
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, hashes)

    return _caught(run)


# --- the files of both sides ------------------------------------------------------


@dataclass
class Log:
    """One log's files and keys, from a node or from the JavaScript writer."""

    source: str
    dir: Path
    record: Path
    proof: Path
    receipt: Path
    checkpoint: Path
    consistency: Path
    vkey: str
    witness_vkeys: list[str]
    other_vkey: str  # the origin's name, another key
    foreign_vkey: str  # another log's key
    extra: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.dir / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=15) as r:
        return r.read()  # type: ignore[no-any-return]


def _post(url: str, body: bytes) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _wait(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def node_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    """Two real node processes that witness each other; 12 records on the first,
    whose files are written by the node and the Python client."""
    tmp = tmp_path_factory.mktemp("js-verifier-nodes")
    nodes: list[NodeProcess] = [
        init_node(tmp / f"n{i}", origin_prefix=f"n{i}.test") for i in range(2)
    ]
    for n in nodes:
        n.edit_config(scheduler={"enabled": False})
    wire_witnessing(nodes)
    for n in nodes:
        n.start()
    try:
        alpha, beta = nodes
        actor = demo_key("did:vm:actor:demo")
        witnesses = [
            demo_key("did:vm:arbiter:prod-us-east-1"),
            demo_key("did:vm:arbiter:prod-eu-west-1"),
        ]
        records: list[Record] = []
        receipts: list[dict[str, Any]] = []

        def post(i: int) -> None:
            rec = make_record(NAMESPACE, "ledger.append@1.0.0", ledger_payload(i), actor, witnesses,
                              timestamp=int(time.time()))  # fmt: skip
            receipts.append(_post(f"{alpha.url}/v1/namespaces/{NAMESPACE}/records", rec.leaf))
            records.append(rec)

        for i in range(5):
            post(i)
        old_note = _get(f"{alpha.url}/logs/{NAMESPACE}/checkpoint")
        old_size = Checkpoint.parse(Note.from_bytes(old_note).text).size
        for i in range(5, 12):
            post(i)
        vkey = alpha.info["vkeys"][NAMESPACE]
        witness_vkey = beta.info["witness"]["vkey"]

        def cosigned() -> bytes | None:
            note = _get(f"{alpha.url}/logs/{NAMESPACE}/checkpoint")
            signed = open_checkpoint(note, parse_vkey(vkey), [parse_cosigner_vkey(witness_vkey)])
            return note if signed.checkpoint.size == 12 and signed.cosignatures else None

        note = _wait(cosigned, "the log's head at size 12, cosigned by the other node")
        d = tmp / "files"
        d.mkdir()
        index = 6
        (d / "record.json").write_bytes(records[index].leaf)
        (d / "checkpoint").write_bytes(note)
        (d / "checkpoint.old").write_bytes(old_note)
        # The Python client writes the proof files, as a user would.
        proof_out = subprocess.run(
            [sys.executable, "-m", "remembrancer.cli", "proof", "inclusion", "--url", alpha.url, "--namespace",
             NAMESPACE, "--index", str(index), "--out", str(d / "record.tlog-proof")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proof_out.returncode == 0, proof_out.stderr
        consistency_out = subprocess.run(
            [sys.executable, "-m", "remembrancer.cli", "proof", "consistency", "--url", alpha.url, "--namespace",
             NAMESPACE, "--old", str(old_size), "--new", "12", "--out", str(d / "consistency.json")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert consistency_out.returncode == 0, consistency_out.stderr
        (d / "receipt.json").write_text(json.dumps(receipts[index]))
        stranger = SigningKey.generate()
        yield Log(
            source="node",
            dir=d,
            record=d / "record.json",
            proof=d / "record.tlog-proof",
            receipt=d / "receipt.json",
            checkpoint=d / "checkpoint",
            consistency=d / "consistency.json",
            vkey=vkey,
            witness_vkeys=[witness_vkey],
            other_vkey=format_vkey(parse_vkey(vkey).name, stranger.public),
            foreign_vkey=beta.info["vkeys"][NAMESPACE],
            extra={
                "node": alpha,
                "old_checkpoint": d / "checkpoint.old",
                "record_value": json.loads(records[index].leaf),
            },
        )
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture(scope="module")
def js_log(node_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Log:
    """A log written by the JavaScript tests' independent writer (helpers.js)."""
    d = tmp_path_factory.mktemp("js-verifier-js-log")
    script = "const {writeLog} = await import(process.argv[1]); await writeLog(process.argv[2]);"
    proc = subprocess.run([node_bin, "--input-type=module", "-e", script, str(JS / "test" / "helpers.js"), str(d)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    m = json.loads((d / "manifest.json").read_text())
    f = {k: Path(v) for k, v in m["files"].items()}
    return Log(source="js", dir=d, record=f["record"], proof=f["proof"], receipt=f["receipt"],
               checkpoint=f["checkpoint"], consistency=f["consistency"], vkey=m["vkey"],
               witness_vkeys=m["witness_vkeys"], other_vkey=m["other_vkey"], foreign_vkey=m["foreign_vkey"],
               extra={"old_checkpoint": f["old_checkpoint"], "record_value": json.loads(f["record"].read_bytes())})  # fmt: skip


@pytest.fixture(params=["node", "js"])
def log(request: pytest.FixtureRequest) -> Log:
    return request.getfixturevalue(f"{request.param}_log")  # type: ignore[no-any-return]


# --- the files verify on both sides ------------------------------------------------


def test_both_verifiers_accept_the_genuine_files(node_bin: str, log: Log) -> None:
    args = [
        log.record,
        "--proof",
        log.proof,
        "--vkey",
        log.vkey,
        *_witness_args(log),
        "--min-cosigners",
        "1",
        "--json",
    ]
    mine, theirs = js(node_bin, "verify", *args), py("verify", *args)
    assert mine.returncode == 0, mine.stderr
    assert theirs.returncode == 0, theirs.stderr
    a, b = json.loads(mine.stdout), json.loads(theirs.stdout)
    for key in (
        "valid",
        "eventHash",
        "namespace",
        "origin",
        "index",
        "treeSize",
        "cosigners",
        "checked",
    ):
        assert a[key] == b[key], key
    assert a["cosigners"] >= 1 and a["canonical"] is True
    assert [s["valid"] for s in a["signatures"]] == [True] * len(a["signatures"])
    receipt = [log.record, "--receipt", log.receipt, "--vkey", log.vkey]
    assert (
        _verdict(js(node_bin, "verify", *receipt)) == _verdict(py("verify", *receipt)) == (0, None)
    )
    trust = log.file("trust.json", json.dumps({"log_vkeys": [log.vkey], "witness_vkeys": log.witness_vkeys,
                                               "min_cosigners": 1}))  # fmt: skip
    policy = [log.record, "--proof", log.proof, "--trust", trust]
    assert _verdict(js(node_bin, "verify", *policy)) == _verdict(py("verify", *policy)) == (0, None)
    # The record alone: the same eventHash and leaf hash as the Python core's.
    alone = js(node_bin, "record", log.record, "--json")
    assert alone.returncode == 0, alone.stderr
    record = Record.from_bytes(log.record.read_bytes())
    assert json.loads(alone.stdout)["eventHash"] == record.event_hash_hex
    assert json.loads(alone.stdout)["leafHash"] == base64.b64encode(hash_leaf(record.leaf)).decode()
    # The checkpoint, each witness's cosignature and the consistency proof.
    note = log.checkpoint.read_bytes()
    ok = js(
        node_bin,
        "checkpoint",
        log.checkpoint,
        "--vkey",
        log.vkey,
        *_witness_args(log),
        "--min-cosigners",
        "1",
    )
    assert _verdict(ok) == py_checkpoint(note, [log.vkey], log.witness_vkeys, 1) == (0, None), (
        ok.stderr
    )
    ok = js(node_bin, "cosignature", log.checkpoint, *_witness_args(log))
    assert _verdict(ok) == py_cosignature(note, log.witness_vkeys) == (0, None), ok.stderr
    ok = js(node_bin, "consistency", log.consistency, "--vkey", log.vkey, "--json")
    assert _verdict(ok) == py_consistency(log.consistency.read_bytes(), log.vkey) == (0, None), (
        ok.stderr
    )
    doc = json.loads(log.consistency.read_bytes())
    assert (
        json.loads(ok.stdout)["old"]["treeSize"]
        == doc["old"]
        < json.loads(ok.stdout)["new"]["treeSize"]
    )


def _witness_args(log: Log) -> list[str]:
    return [a for w in log.witness_vkeys for a in ("--witness-vkey", w)]


# --- tampered and malformed files: the same verdict on both sides ---------------------


def _flip_b64(text: str, byte: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _proof_parts(log: Log) -> tuple[list[str], str]:
    head, note = log.proof.read_text().split("\n\n", 1)
    return head.split("\n"), note


def _with_proof(log: Log, name: str, head: list[str], note: str) -> Path:
    return log.file(name, "\n".join(head) + "\n\n" + note)


def _sig_lines(note: str) -> tuple[str, list[str]]:
    body, block = note.rsplit("\n\n", 1)
    return body + "\n", block.rstrip("\n").split("\n")


def _note(body: str, lines: list[str]) -> str:
    return body + "\n" + "".join(line + "\n" for line in lines)


def _tamper_cosignature(line: str) -> str:
    prefix, sig = line.rsplit(" ", 1)
    return f"{prefix} {_flip_b64(sig, 30)}"


def _variants(log: Log) -> list[tuple[str, list[str | Path], Verdict]]:
    """(name, `verify` arguments, expected verdict) for one log's files."""
    head, note = _proof_parts(log)
    body, lines = _sig_lines(note)
    value = log.extra["record_value"]
    vkey = ["--vkey", log.vkey]
    proof = ["--proof", log.proof]
    changed = dict(value, payload={**value["payload"], "tampered": True})
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    noncanonical = (
        head[2][:-2] + alphabet[alphabet.index(head[2][-2]) + 1] + "="
    )  # a padding bit set
    bad_root = body.split("\n")
    bad_root[2] = _flip_b64(bad_root[2])
    receipt = json.loads(log.receipt.read_text())
    witnesses = _witness_args(log)
    return [
        ("genuine", [log.record, *proof, *vkey], (0, None)),
        ("pretty-printed record", [log.file("pretty.json", json.dumps(value, indent=2)), *proof, *vkey], (0, None)),
        ("record payload changed", [log.file("changed.json", canonicalize(changed)), *proof, *vkey],
         (1, "inclusion_root_mismatch")),
        ("record with a duplicate key", [log.file("dup.json", log.record.read_text().replace("{", '{"nonce":"xxxxxxxx",', 1)),
                                         *proof, *vkey], (2, "json_duplicate_key")),
        ("namespace with a trailing newline", [log.file("nl.json", canonicalize(dict(value, namespace=value["namespace"] + "\n"))),
                                               *proof, *vkey], (2, "record_field_type")),
        ("record that is no record", [log.proof, *proof, *vkey], (2, "json_malformed")),
        ("proof hash flipped", [log.record, "--proof", _with_proof(log, "p1", [*head[:2], _flip_b64(head[2]), *head[3:]], note),
                                *vkey], (1, "inclusion_root_mismatch")),
        ("proof for the next index", [log.record, "--proof", _with_proof(log, "p2", [head[0], f"index {int(head[1][6:]) + 1}", *head[2:]], note),
                                      *vkey], (1, "inclusion_root_mismatch")),
        ("proof hash dropped", [log.record, "--proof", _with_proof(log, "p3", head[:-1], note), *vkey], (1, "proof_wrong_length")),
        ("proof hash not canonical base64", [log.record, "--proof", _with_proof(log, "p4", [*head[:2], noncanonical, *head[3:]], note),
                                             *vkey], (2, "tlog_proof_hash_invalid")),
        ("proof header", [log.record, "--proof", _with_proof(log, "p5", ["c2sp.org/tlog-proof@v2", *head[1:]], note), *vkey],
         (2, "tlog_proof_header")),
        ("unauthenticated extra data", [log.record, "--proof", _with_proof(log, "p6", [head[0], "extra aGk=", *head[1:]], note),
                                        *vkey], (0, None)),
        ("checkpoint root changed", [log.record, "--proof", _with_proof(log, "p7", head, _note("\n".join(bad_root), lines)),
                                     *vkey], (1, "checkpoint_signature_invalid")),
        ("log signature removed", [log.record, "--proof", _with_proof(log, "p8", head, _note(body, lines[1:])), *vkey,
                                   *witnesses], (1, "checkpoint_unsigned")),
        ("cosignature forged, witness known", [log.record, "--proof", _with_proof(log, "p9", head, _note(body, [lines[0], _tamper_cosignature(lines[1]), *lines[2:]])),
                                               *vkey, *witnesses], (1, "cosignature_invalid")),
        ("cosignature forged, witness unknown", [log.record, "--proof", _with_proof(log, "p10", head, _note(body, [lines[0], _tamper_cosignature(lines[1]), *lines[2:]])),
                                                 *vkey], (0, None)),
        ("too few cosigners", [log.record, *proof, *vkey, *witnesses, "--min-cosigners", str(len(log.witness_vkeys) + 1)],
         (1, "cosigner_quorum_not_met")),
        ("another log's key", [log.record, *proof, "--vkey", log.foreign_vkey], (1, "log_key_unknown")),
        ("the origin's name, another key", [log.record, *proof, "--vkey", log.other_vkey], (1, "checkpoint_unsigned")),
        ("a witness key given as the log key", [log.record, *proof, "--vkey", log.witness_vkeys[0]], (2, "vkey_type_unsupported")),
        ("no key", [log.record, *proof], (2, "usage")),
        ("proof and receipt", [log.record, *proof, "--receipt", log.receipt, *vkey], (2, "usage")),
        ("receipt of another record", [log.record, "--receipt", log.file("r1", json.dumps(dict(receipt, eventHash="sha256:" + "0" * 64))),
                                       *vkey], (1, "receipt_record_mismatch")),
        ("receipt with a float index", [log.record, "--receipt", log.file("r2", re.sub(r'"index": ?(\d+)', r'"index": \1.0', log.receipt.read_text())),
                                        *vkey], (2, "receipt_malformed")),
        ("missing file", [log.dir / "no-such-file", *proof, *vkey], (2, "file_not_found")),
        ("negative quorum", [log.record, *proof, *vkey, "--min-cosigners", "-1"], (2, None)),
    ]  # fmt: skip


def test_tampered_files_get_the_same_verdict_on_both_sides(node_bin: str, log: Log) -> None:
    wrong = []
    for name, args, want in _variants(log):
        mine, theirs = _verdict(js(node_bin, "verify", *args)), _verdict(py("verify", *args))
        if want[1] is None and want[0] == 2:  # a usage error: the exit status is the verdict
            mine, theirs = (mine[0], None), (theirs[0], None)
        if not mine == theirs == want:
            wrong.append(f"{name}: JavaScript {mine}, Python {theirs}, expected {want}")
    assert wrong == []


def test_tampered_checkpoints_and_consistency_proofs_agree(node_bin: str, log: Log) -> None:
    note = log.checkpoint.read_text()
    body, lines = _sig_lines(note)
    w = log.witness_vkeys
    bad_root = body.split("\n")
    bad_root[2] = _flip_b64(bad_root[2])
    checkpoints = [
        ("genuine", note, w, 1, (0, None)),
        ("root changed", _note("\n".join(bad_root), lines), w, 0, (1, "checkpoint_signature_invalid")),
        ("size changed", body.replace("\n", "\n1", 1) + "\n" + "".join(x + "\n" for x in lines), [], 0, (1, "checkpoint_signature_invalid")),
        ("cosignature forged", _note(body, [lines[0], _tamper_cosignature(lines[1]), *lines[2:]]), w, 0, (1, "cosignature_invalid")),
        ("log signature removed", _note(body, lines[1:]), w, 0, (1, "checkpoint_unsigned")),
        ("quorum", note, w, len(w) + 1, (1, "cosigner_quorum_not_met")),
        ("no blank line", note.replace("\n\n", "\n"), w, 0, (2, "note_malformed")),
        ("a tab", note.replace("\n", "\t\n", 1), w, 0, (2, "note_control_character")),
    ]  # fmt: skip
    wrong = []
    for name, text, witnesses, minimum, want in checkpoints:
        path = log.file("cp", text)
        args = [path, "--vkey", log.vkey, *[a for v in witnesses for a in ("--witness-vkey", v)],
                "--min-cosigners", str(minimum)]  # fmt: skip
        mine, theirs = (
            _verdict(js(node_bin, "checkpoint", *args)),
            py_checkpoint(text.encode(), [log.vkey], witnesses, minimum),
        )
        if not mine == theirs == want:
            wrong.append(f"checkpoint {name}: JavaScript {mine}, Python {theirs}, expected {want}")
    cosignatures = [
        ("genuine", note, (0, None)),
        (
            "forged",
            _note(body, [lines[0], _tamper_cosignature(lines[1]), *lines[2:]]),
            (1, "cosignature_invalid"),
        ),
        ("absent", _note(body, lines[:1]), (1, "cosignature_missing")),
    ]
    for name, text, want in cosignatures:
        mine = _verdict(js(node_bin, "cosignature", log.file("cs", text), "--witness-vkey", w[0]))
        theirs = py_cosignature(text.encode(), w[:1])
        if not mine == theirs == want:
            wrong.append(f"cosignature {name}: JavaScript {mine}, Python {theirs}, expected {want}")
    doc = json.loads(log.consistency.read_text())
    new_note = doc["checkpoints"][str(doc["new"])]
    new_body, new_lines = _sig_lines(new_note)
    forked = new_body.split("\n")
    forked[2] = _flip_b64(forked[2])
    proofs = [
        ("genuine", doc, (0, None)),
        ("proof hash flipped", dict(doc, proof=[_flip_b64(doc["proof"][0]), *doc["proof"][1:]]), (1, "consistency_root2_mismatch")
         if len(doc["proof"]) > 1 else (1, "consistency_root1_mismatch")),
        ("proof hash dropped", dict(doc, proof=doc["proof"][:-1]), (1, "proof_wrong_length")),
        ("old and new swapped", dict(doc, old=doc["new"], new=doc["old"]), (1, "consistency_sizes_reversed")),
        ("new checkpoint re-rooted", dict(doc, checkpoints={**doc["checkpoints"], str(doc["new"]): _note("\n".join(forked), new_lines)}),
         (1, "checkpoint_signature_invalid")),
    ]  # fmt: skip
    for name, value, want in proofs:
        path = log.file("consistency-variant.json", json.dumps(value))
        mine = _verdict(js(node_bin, "consistency", path, "--vkey", log.vkey))
        theirs = py_consistency(path.read_bytes(), log.vkey)
        if name == "proof hash flipped":  # which root fails first depends on the hash's place
            ok = mine == theirs and mine[0] == 1 and (mine[1] or "").startswith("consistency_root")
        else:
            ok = mine == theirs == want
        if not ok:
            wrong.append(f"consistency {name}: JavaScript {mine}, Python {theirs}, expected {want}")
    assert wrong == []


# --- a hostile log: included, but the actor never signed it -------------------------------


def _small_order_did() -> str:
    from remembrancer.core.keys import base58btc_encode

    identity = bytes([1]) + bytes(31)  # the neutral element: a key of order 1
    return "did:key:z" + base58btc_encode(b"\xed\x01" + identity)


@pytest.mark.parametrize("forgery", ["wrong signature", "small-order key"])
def test_a_hostile_log_with_a_forged_record_fails_on_both_sides(
    node_bin: str, tmp_path: Path, forgery: str
) -> None:
    """A log may include whatever it likes and sign it: the record's own actor
    signature is what shows who wrote it.  With the neutral element as key, one
    'signature' satisfies WebCrypto's Ed25519 for every
    message (R = B, S = 1); PyNaCl (libsodium) refuses such keys, and so must
    the JS side."""
    actor = demo_key("did:vm:actor:demo")
    rec = make_record(
        "dao:hostile", "ledger.append@1.0.0", ledger_payload(1), actor, timestamp=1764100000
    )
    env = rec.envelope()
    if forgery == "wrong signature":
        env["signatures"][0]["sig"] = b64url_encode(actor.sign(b"something else"))
    else:
        did = _small_order_did()
        env["actor"] = did
        base_point = (
            bytes([0x58]) + bytes([0x66]) * 31
        )  # R = B and S = 1: [S]B = R + [k]A when A = 0
        env["signatures"] = [{"alg": "Ed25519", "kid": did, "role": "actor",
                              "sig": b64url_encode(base_point + bytes([1]) + bytes(31))}]  # fmt: skip
    forged = Record.from_value(env)
    log_key = SigningKey.generate()
    origin = "hostile.example/dao:hostile"
    note = sign_checkpoint(Checkpoint(origin, 1, hash_leaf(forged.leaf)), log_key)
    (tmp_path / "record.json").write_bytes(forged.leaf)
    (tmp_path / "record.tlog-proof").write_bytes(TlogProof(0, (), note).to_bytes())
    args = [tmp_path / "record.json", "--proof", tmp_path / "record.tlog-proof", "--vkey",
            format_vkey(origin, log_key.public)]  # fmt: skip
    want = (1, "actor_signature_invalid")
    assert _verdict(js(node_bin, "verify", *args)) == want
    assert _verdict(py("verify", *args)) == want


def test_ed25519_edge_cases_get_pynacls_verdicts(node_bin: str) -> None:
    """WebCrypto (OpenSSL) accepts signatures that PyNaCl (libsodium) refuses:
    small-order keys and R, S >= L.  verify.js applies libsodium's rules first;
    here both libraries judge the same edge cases."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    p = 2**255 - 19
    order_8 = (0x05FC536D880238B13933C6D305ACDFD5F098EFF289F4C345B027B2C28F95E826,
               0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7)  # fmt: skip
    small = [y.to_bytes(32, "little") for y in (0, 1, p - 1, p, p + 1, *order_8)]
    small += [bytes([*e[:31], e[31] | 0x80]) for e in small]
    base_point = bytes([0x58]) + bytes([0x66]) * 31
    key = SigningKey.generate()
    message = b"a message"
    sig = key.sign(message)
    s_plus_l = (
        int.from_bytes(sig[32:], "little") + 2**252 + 27742317777372353535851937790883648493
    ).to_bytes(33, "little")
    cases = [(key.public.raw, sig), (key.public.raw, sig[:32] + bytes(32))]
    cases += [(k, base_point + bytes([1]) + bytes(31)) for k in small]  # R = B, S = 1
    cases += [(k, bytes([1]) + bytes(63)) for k in small]  # R = identity, S = 0
    cases += [(key.public.raw, r + sig[32:]) for r in small]  # a small-order R
    if s_plus_l[32] == 0:
        cases.append(
            (key.public.raw, sig[:32] + s_plus_l[:32])
        )  # S + L: the same point, S not reduced

    def nacl(k: bytes, s: bytes) -> bool:
        try:
            VerifyKey(k).verify(message, s)
        except (BadSignatureError, ValueError):
            return False
        return True

    script = """
        const v = await import(process.argv[1]);
        const cases = JSON.parse(process.argv[2]);
        const hex = (h) => Uint8Array.from(Buffer.from(h, "hex"));
        const out = [];
        for (const [k, s] of cases) out.push(await v.ed25519Verify(hex(k), hex(s), hex(process.argv[3])));
        console.log(JSON.stringify(out));
    """
    proc = subprocess.run([node_bin, "--input-type=module", "-e", script, str(JS / "verify.js"),
                           json.dumps([[k.hex(), s.hex()] for k, s in cases]), message.hex()],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout)
    mine = [nacl(k, s) for k, s in cases]
    assert mine[0] is True and not any(mine[1:])
    assert theirs == mine


def test_the_explorer_serves_the_package_file(node_log: Log) -> None:
    """The running node's explorer serves clients/js/verify.js byte for byte."""
    node: NodeProcess = node_log.extra["node"]
    assert _get(f"{node.url}/explorer/static/verify.js") == (JS / "verify.js").read_bytes()
