"""Backup and restore with real node processes (docs/operations.md).

One real ``serve`` node (SQLite) with records in both seed namespaces,
anchors to the development TSA and witness state (it cosigns a second node's
log, which cosigns its own): it is backed up with ``remembrancer backup
create`` while it serves and a client keeps writing, and again once it is
quiet.  Each backup is restored into a NEW node (a new directory on SQLite;
PostgreSQL) that then serves the same checkpoints, proofs and tiles for the
records acknowledged before the backup; ``remembrancer verify`` passes on
them.  Damaged archives and wrong targets are refused with specific errors
and change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import shutil
import stat
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.tiles import tiles_for_size
from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import (
    NodeProcess,
    anchor_to_tsa,
    cli,
    free_port,
    init_node,
    wire_witnessing,
)
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.node.backup.restore import (
    extract_files,
    read_manifest,
    restore_backup,
    verify_backup,
)
from remembrancer.node.config import load_node_config
from remembrancer.storage import open_store

DAO, FIN = "dao:vaultmesh", "fin:clearing"
ACTOR = demo_key("did:vm:actor:demo")
DAO_WITNESSES = [demo_key(f"did:vm:arbiter:prod-{w}") for w in ("us-east-1", "eu-west-1")]
FIN_WITNESSES = [demo_key(f"did:vm:arbiter:prod-clearing-{w}") for w in "abc"]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()  # type: ignore[no-any-return]


def get_json(url: str) -> Any:
    return json.loads(get(url))


def submit(url: str, namespace: str, i: int) -> tuple[dict[str, Any], bytes]:
    """Submit one signed record; its receipt (once durable) and its bytes."""
    witnesses = DAO_WITNESSES if namespace == DAO else FIN_WITNESSES
    rec = make_record(namespace, "ledger.append@1.0.0", ledger_payload(i, 200), ACTOR, witnesses,
                      timestamp=int(time.time()))  # fmt: skip
    req = urllib.request.Request(f"{url}/v1/namespaces/{namespace}/records", data=rec.leaf,
                                 method="POST", headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read()), rec.leaf


def wait_for(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Writer(threading.Thread):
    """Keeps submitting records to a node; remembers when each was acknowledged."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.acks: list[tuple[float, dict[str, Any], bytes]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        i = 10_000
        try:
            while not self.stop.is_set():
                receipt, leaf = submit(self.url, DAO, i)
                self.acks.append((time.monotonic(), receipt, leaf))
                i += 1
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e


@dataclass
class Scenario:
    base: Path
    alpha: NodeProcess
    beta: NodeProcess
    under_load: Path  # taken while a client kept writing
    acked_before: list[tuple[dict[str, Any], bytes]]  # acknowledged before it started
    acked_during: int
    quiet: Path  # taken once the node was quiet
    quiet_records: list[tuple[dict[str, Any], bytes]]
    quiet_view: dict[str, bytes] = field(default_factory=dict)  # what alpha served then


def head_size(node: NodeProcess, namespace: str) -> int:
    return int(get(f"{node.url}/logs/{namespace}/checkpoint").split(b"\n")[1])


def served_view(node: NodeProcess, records: list[tuple[dict[str, Any], bytes]]) -> dict[str, bytes]:
    """Everything a verifier fetches: checkpoints, tiles, entry bundles, tlog-proofs,
    consistency proofs (with their checkpoints)."""
    out: dict[str, bytes] = {}
    for ns in (DAO, FIN):
        size = head_size(node, ns)
        out[f"{ns} checkpoint"] = get(f"{node.url}/logs/{ns}/checkpoint")
        for t in tiles_for_size(size):
            out[f"{ns} {t.path()}"] = get(f"{node.url}/logs/{ns}/{t.path()}")
            if t.level == 0:
                out[f"{ns} {t.entries_path()}"] = get(f"{node.url}/logs/{ns}/{t.entries_path()}")
        for old in sorted({1, size // 2 or 1, size}):
            out[f"{ns} consistency {old}"] = get(
                f"{node.url}/v1/namespaces/{ns}/proofs/consistency?old={old}&new={size}"
            )
    for receipt, _ in records:
        ns, index = receipt["namespace"], receipt["index"]
        out[f"{ns} proof {index}"] = get(
            f"{node.url}/v1/namespaces/{ns}/proofs/inclusion?index={index}&format=tlog-proof"
        )
    return out


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    base = tmp_path_factory.mktemp("backup")
    with ExitStack() as stack:
        tsa = stack.enter_context(DevTsaServer(DevTsa(base / "tsa")))
        alpha = init_node(base / "alpha", origin_prefix="alpha.test")
        beta = init_node(base / "beta", origin_prefix="beta.test")
        anchor_to_tsa(alpha, tsa.url, base / "tsa" / "ca.pem")
        wire_witnessing([alpha, beta], quorum=1)
        for node in (alpha, beta):
            stack.callback(node.stop)
            node.start()

        records = [submit(alpha.url, DAO, i) for i in range(40)]
        records += [submit(alpha.url, FIN, i) for i in range(5)]
        submit(beta.url, DAO, 0)  # alpha, as beta's witness, keeps state for beta's log
        wait_for("alpha to cosign beta's log", lambda: _status(f"{alpha.url}/witness/checkpoints/beta.test/{DAO}") == 200)  # fmt: skip
        wait_for("a verified anchor of alpha's log", lambda: any(
            a["status"] == "verified"
            for r in get_json(f"{alpha.url}/v1/namespaces/{DAO}/anchors")["receipts"]
            for a in r["anchors"]))  # fmt: skip

        writer = Writer(alpha.url)
        writer.start()
        wait_for("the writer to get going", lambda: len(writer.acks) >= 20)
        under_load = base / "under-load.tar"
        started = time.monotonic()
        cli("backup", "create", "--config", str(alpha.config), "--out", str(under_load),
            "--include-keys")  # fmt: skip
        finished = time.monotonic()
        wait_for("the writer to go on past the backup's end",
                 lambda: sum(t > finished for t, _, _ in writer.acks) >= 5)  # fmt: skip
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
        acked_before = records + [(r, leaf) for t, r, leaf in writer.acks if t < started]
        during = sum(started <= t <= finished for t, _, _ in writer.acks)

        # Quiet: no more writes, and alpha's latest checkpoints carry beta's cosignature.
        for ns in (DAO, FIN):
            wait_for(f"beta's cosignature on alpha's {ns} checkpoint",
                     lambda ns=ns: b"beta.test/witness" in get(f"{alpha.url}/logs/{ns}/checkpoint"))  # fmt: skip
        quiet_records = records + [(r, leaf) for _, r, leaf in writer.acks]
        before = served_view(alpha, quiet_records)
        quiet = base / "quiet.tar"
        cli(
            "backup", "create", "--config", str(alpha.config), "--out", str(quiet), "--include-keys"
        )
        assert served_view(alpha, quiet_records) == before, "alpha changed during the quiet backup"
        yield Scenario(base, alpha, beta, under_load, acked_before, during, quiet, quiet_records,
                       before)  # fmt: skip


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return e.code


def alpha_did(scenario: Scenario) -> str:
    return str(scenario.alpha.info["did"])


def new_node_from(archive: Path, directory: Path, did: str, **config: Any) -> NodeProcess:
    """A new node directory made from an archive's configuration files (and keys),
    trusting the node key ``did``.

    It runs next to the original with the same key and origins, so it asks no
    witness to cosign (docs/operations.md: a restored copy never runs next to
    the original with its witnessing configuration intact)."""
    out = cli("backup", "extract-config", str(archive), "--dir", str(directory), "--trust", did)
    assert f"wrote {directory / 'keys' / 'node.key'} (secret, mode 0600)" in out.stdout
    node = NodeProcess(directory, free_port())
    node.edit_config(listen=f"127.0.0.1:{node.port}", witnessing={}, **config)
    return node


def test_a_backup_under_load_restores_into_a_new_node_serving_the_same_proofs(
    scenario: Scenario, tmp_path: Path
) -> None:
    archive, alpha = scenario.under_load, scenario.alpha
    assert scenario.acked_during > 0, "the node was written to while the backup ran"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as tar:
        modes = {m.name: stat.S_IMODE(m.mode) for m in tar.getmembers()}
    assert modes["node/keys/node.key"] == modes["node/keys/admin.token"] == 0o600
    assert modes["node/node.yaml"] == 0o644 and list(modes)[-1] == "manifest.json"
    ok = cli("backup", "verify", str(archive), "--config", str(alpha.config))
    assert ok.stdout.startswith(f"OK: {archive}: 2 logs")
    # Without a key to trust there is nothing to check it against.
    out = cli("backup", "verify", str(archive), check=False)
    assert out.returncode == 2 and out.stderr.startswith("error: backup_trust_missing:")

    manifest = read_manifest(archive)
    size = {g.namespace: g.size for g in manifest.logs}
    dao_before = [r for r, _ in scenario.acked_before if r["namespace"] == DAO]
    assert size[DAO] >= max(r["index"] for r in dao_before) + 1
    assert size[DAO] < head_size(alpha, DAO), "writes went on after the snapshot"

    node = new_node_from(archive, tmp_path / "restored", alpha_did(scenario))
    out = cli("backup", "restore", str(archive), "--config", str(node.config))
    assert json.loads(out.stdout)["backend"] == "sqlite"
    assert (tmp_path / "restored" / "data" / "remembrancer.db").is_file()
    node.start()
    try:
        head = {g.namespace: g.checkpoint for g in manifest.logs}
        for ns in (DAO, FIN):
            assert get(f"{node.url}/logs/{ns}/checkpoint") == head[ns]
        # Every record acknowledged before the backup: same entry, same proof at
        # the restored size as alpha's (whose log has grown since).
        for receipt, leaf in scenario.acked_before:
            ns, index = receipt["namespace"], receipt["index"]
            found = get_json(f"{node.url}/v1/namespaces/{ns}/events/{receipt['eventHash']}")
            assert found["index"] == index and found["record"] == json.loads(leaf)
            query = f"proofs/inclusion?index={index}&size={size[ns]}"
            mine = get_json(f"{node.url}/v1/namespaces/{ns}/{query}")
            theirs = get_json(f"{alpha.url}/v1/namespaces/{ns}/{query}")
            assert mine["proof"] == theirs["proof"] and mine["treeSize"] == size[ns]
        # Alpha's current log extends the restored one.
        grown = head_size(alpha, DAO)
        proof = get_json(
            f"{alpha.url}/v1/namespaces/{DAO}/proofs/consistency?old={size[DAO]}&new={grown}"
        )
        assert (
            proof["checkpoints"][str(size[DAO])].split("\n")[2] == head[DAO].decode().split("\n")[2]
        )
        # remembrancer verify passes on the restored node's proofs.
        vkey = alpha.info["vkeys"][DAO]
        for receipt, leaf in (scenario.acked_before[0], scenario.acked_before[39]):
            rec, proof_file = tmp_path / "rec.json", tmp_path / "rec.tlog-proof"
            rec.write_bytes(leaf)
            cli("proof", "inclusion", "--url", node.url, "--namespace", DAO,
                "--index", str(receipt["index"]), "--out", str(proof_file))  # fmt: skip
            assert cli(
                "verify", str(rec), "--proof", str(proof_file), "--vkey", vkey
            ).stdout.startswith("OK:")
        # The witness state and the anchors came along.
        witnessed = get(f"{node.url}/witness/checkpoints/beta.test/{DAO}").split(b"\n\n")[0]
        assert (
            witnessed == get(f"{alpha.url}/witness/checkpoints/beta.test/{DAO}").split(b"\n\n")[0]
        )
        receipts = get_json(f"{node.url}/v1/namespaces/{DAO}/anchors")["receipts"]
        assert any(a["status"] == "verified" for r in receipts for a in r["anchors"])
        # The restored node takes new records after the restored ones.
        receipt, _ = submit(node.url, FIN, 99)
        assert receipt["index"] == size[FIN]
    finally:
        node.stop()


@pytest.mark.postgres
def test_a_quiet_backup_restores_into_postgresql_byte_for_byte(
    scenario: Scenario, tmp_path: Path, pg_dsn: str
) -> None:
    import psycopg

    schema = f"restore_{os.getpid()}_{random.randrange(1 << 30)}"
    node = new_node_from(scenario.quiet, tmp_path / "pg-node", alpha_did(scenario),
                         storage=f"{pg_dsn}?schema={schema}")  # fmt: skip
    try:
        out = cli("backup", "restore", str(scenario.quiet), "--config", str(node.config))
        assert json.loads(out.stdout)["backend"] == "postgresql"
        node.start()
        try:
            assert served_view(node, scenario.quiet_records) == scenario.quiet_view
            alpha = scenario.alpha
            for args in (["checkpoint", "--namespace", DAO], ["checkpoint", "--namespace", FIN],
                         ["proof", "consistency", "--namespace", DAO, "--old", "7", "--new", "40"]):  # fmt: skip
                assert cli(*args, "--url", node.url).stdout == cli(*args, "--url", alpha.url).stdout
            files = []
            for who in (node, alpha):
                files.append(tmp_path / f"{who.port}.tlog-proof")
                cli("proof", "inclusion", "--url", who.url, "--namespace", DAO, "--index", "3",
                    "--out", str(files[-1]))  # fmt: skip
            assert files[0].read_bytes() == files[1].read_bytes()
            rec = tmp_path / "rec.json"
            rec.write_bytes(scenario.quiet_records[3][1])
            vkey = alpha.info["vkeys"][DAO]
            ok = cli("verify", str(rec), "--proof", str(files[0]), "--vkey", vkey,
                     "--witness-vkey", scenario.beta.info["witness"]["vkey"], "--min-cosigners", "1")  # fmt: skip
            assert ok.stdout.startswith("OK:")
        finally:
            node.stop()
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --- refusals ------------------------------------------------------------------------------


def _rewrite(source: Path, dest: Path, change: Any) -> None:
    """Copy an archive, passing each member's (name, bytes) through ``change``
    (which returns new bytes, or None to drop the member)."""
    with tarfile.open(source) as src, tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as out:
        for info in src.getmembers():
            extracted = src.extractfile(info)
            assert extracted is not None
            data = change(info.name, extracted.read())
            if data is not None:
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))


def _key_of(node: NodeProcess) -> Any:
    from remembrancer.node.keyfile import read_key_file

    return read_key_file(node.directory / "keys" / "node.key")


def sign_manifest(doc: dict[str, Any], key: Any) -> None:
    """(Re-)sign a manifest dict as ``backup create`` does (format v2)."""
    from remembrancer.core.encoding import b64url_encode
    from remembrancer.core.jcs import canonicalize
    from remembrancer.node.backup.manifest import MANIFEST_DOMAIN

    doc.pop("signature", None)
    sig = key.sign(MANIFEST_DOMAIN + canonicalize(doc))
    doc["signature"] = {"alg": "Ed25519", "kid": key.did, "sig": b64url_encode(sig)}


def _edit_manifest(source: Path, dest: Path, edit: Any, resign: Any = None) -> None:
    """Edit the manifest; re-sign it with ``resign`` (a key), so that what is checked
    is the edit itself, not the signature (which any edit breaks)."""

    def change(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        doc = json.loads(data)
        edit(doc)
        if resign is not None:
            sign_manifest(doc, resign)
        return json.dumps(doc).encode()

    _rewrite(source, dest, change)


def _flip_byte(member: str, where: float) -> Any:
    def corrupt(source: Path, dest: Path, *_: Any) -> None:
        shutil.copyfile(source, dest)
        with tarfile.open(source) as tar:
            info = tar.getmember(member)
        offset = info.offset_data + int(info.size * where)
        with dest.open("r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x01]))

    return corrupt


def _truncate(fraction: float, member: str | None = None) -> Any:
    """Cut the archive at ``fraction`` of its length, or of ``member``'s data."""

    def corrupt(source: Path, dest: Path, *_: Any) -> None:
        data = source.read_bytes()
        end = int(len(data) * fraction)
        if member is not None:
            with tarfile.open(source) as tar:
                info = tar.getmember(member)
            end = info.offset_data + int(info.size * fraction)
        dest.write_bytes(data[:end])

    return corrupt


def _swap_roots(doc: dict[str, Any]) -> None:
    doc["logs"][0]["root_hash"], doc["logs"][1]["root_hash"] = (
        doc["logs"][1]["root_hash"],
        doc["logs"][0]["root_hash"],
    )


def _forge_entry(source: Path, dest: Path, key: Any) -> None:
    """Change an entry and fix the manifest's hash of it (re-signed by the node key):
    only the Merkle check can tell."""
    import hashlib

    sums: dict[str, str] = {}

    def change(name: str, data: bytes) -> bytes:
        if name == f"logs/{DAO}/entries.bin":
            data = data.replace(b'"entry":5,', b'"entry":6,', 1)
            sums[name] = hashlib.sha256(data).hexdigest()
        if name == "manifest.json":
            doc = json.loads(data)
            for m in doc["members"]:
                m["sha256"] = sums.get(m["name"], m["sha256"])
            sign_manifest(doc, key)
            data = json.dumps(doc).encode()
        return data

    _rewrite(source, dest, change)


def _resigned(edit: Any) -> Any:
    return lambda s, d, key: _edit_manifest(s, d, edit, resign=key)


def _other_key_signs(source: Path, dest: Path, key: Any) -> None:
    from remembrancer.core.keys import SigningKey

    _edit_manifest(source, dest, lambda doc: None, resign=SigningKey.generate())


# Each corruption gets (source, dest, the node key); the node key lets a case re-sign
# the manifest, as a faulty writer holding it would, so that the deeper check is the
# one that trips.
CORRUPTIONS: dict[str, tuple[Any, str]] = {
    "flipped byte in the entries": (_flip_byte(f"logs/{DAO}/entries.bin", 0.5), "backup_member_corrupt"),
    "flipped byte in a checkpoint": (_flip_byte(f"logs/{FIN}/checkpoints.jsonl", 0.3), "backup_member_corrupt"),
    "flipped byte in the state": (_flip_byte("state.jsonl", 0.9), "backup_member_corrupt"),
    "truncated": (_truncate(0.6), "backup_truncated"),
    "truncated in the manifest": (_truncate(0.5, "manifest.json"), "backup_truncated"),
    "no manifest": (lambda s, d, *_: _rewrite(s, d, lambda n, b: None if n == "manifest.json" else b), "backup_truncated"),
    "a member missing": (lambda s, d, *_: _rewrite(s, d, lambda n, b: None if n == "state.jsonl" else b), "backup_members_mismatch"),
    "wrong member hash in the manifest": (_resigned(lambda m: m["members"][-1].update(sha256="0" * 64)), "backup_member_corrupt"),
    "wrong root in the manifest": (_resigned(_swap_roots), "backup_root_mismatch"),
    "an entry changed, hashes fixed": (_forge_entry, "backup_root_mismatch"),
    "a log key that is no did:key": (_resigned(lambda m: m.update(log_keys=["did:web:example.org"])), "backup_manifest_invalid"),
    "manifest of a newer format": (_resigned(lambda m: m.update(format="remembrancer-backup/v9")), "backup_format_unsupported"),
    "not a tar archive": (lambda s, d, k: d.write_bytes(b"hello" * 1000), "backup_malformed"),
    "manifest edited, not re-signed": (lambda s, d, k: _edit_manifest(s, d, _swap_roots), "backup_manifest_signature_invalid"),
    "manifest signed by another key": (_other_key_signs, "backup_manifest_untrusted"),
    "manifest without its signature": (lambda s, d, k: _edit_manifest(s, d, lambda m: m.pop("signature")), "backup_manifest_invalid"),
    "the signature stripped, called v1": (lambda s, d, k: _strip_to_v1(s, d), "backup_manifest_unsigned"),
    "the signature stripped, called v2": (lambda s, d, k: _edit_manifest(s, d, lambda m: (m.pop("signature"), m.update(format="remembrancer-backup/v2"))), "backup_manifest_invalid"),
    "v3 without its table counts": (_resigned(lambda m: m.pop("table_rows")), "backup_manifest_invalid"),
    "a table row count wrong": (_resigned(lambda m: m["table_rows"].update(witness_cosigned=m["table_rows"]["witness_cosigned"] + 1)), "backup_malformed"),
    "a table row changed, hash fixed": (lambda s, d, k: _forge_table_row(s, d, k), "backup_malformed"),
}  # fmt: skip


def _strip_to_v1(source: Path, dest: Path) -> None:
    """A v3 archive made to look like v1: unsigned, without its typed tables."""
    members = _read_members(source)
    del members["tables.jsonl"]

    def edit(m: dict[str, Any]) -> None:
        m.pop("table_rows")
        m["format"] = "remembrancer-backup/v1"

    _write_members(dest, members, edit, None)


def _forge_table_row(source: Path, dest: Path, key: Any) -> None:
    """A witness row whose root is not 32 bytes, the member hash and signature fixed."""
    members = _read_members(source)
    rows = [json.loads(line) for line in members["tables.jsonl"].splitlines()]
    row = next(r for r in rows if r["table"] == "witness_cosigned")
    row["root_hash"] = base64.b64encode(b"short").decode()
    members["tables.jsonl"] = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    _write_members(dest, members, lambda m: None, key)


@pytest.fixture(scope="module")
def empty_target(scenario: Scenario, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """node.yaml of a node made from the quiet backup, whose store is still empty."""
    directory = tmp_path_factory.mktemp("target") / "node"
    extract_files(scenario.quiet, directory, trust=[alpha_did(scenario)])
    return directory / "node.yaml"


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_a_damaged_archive_is_refused_and_the_target_stays_empty(
    scenario: Scenario, empty_target: Path, tmp_path: Path, case: str
) -> None:
    corrupt, code = CORRUPTIONS[case]
    damaged = tmp_path / "damaged.tar"
    corrupt(scenario.quiet, damaged, _key_of(scenario.alpha))
    with pytest.raises(RemembrancerError) as info:
        verify_backup(damaged, trust=[alpha_did(scenario)])
    assert info.value.code == code, info.value.explain()
    config = load_node_config(empty_target)
    with pytest.raises(RemembrancerError) as again:
        restore_backup(config, damaged)
    assert again.value.code == code
    store = open_store(config.storage)
    try:
        assert store.namespaces() == []
        with store.snapshot() as snap:
            assert list(snap.state()) == []
    finally:
        store.close()


def test_the_cli_names_the_damage_and_exits_non_zero(scenario: Scenario, empty_target: Path,
                                                     tmp_path: Path) -> None:  # fmt: skip
    damaged = tmp_path / "damaged.tar"
    _flip_byte(f"logs/{DAO}/entries.bin", 0.2)(scenario.quiet, damaged)
    for args in (
        ["verify", str(damaged), "--trust", alpha_did(scenario)],
        ["restore", str(damaged), "--config", str(empty_target)],
    ):
        out = cli("backup", *args, check=False)
        assert out.returncode == 1
        assert out.stderr.startswith(f"error: backup_member_corrupt: member logs/{DAO}/entries.bin")
    _truncate(0.5)(scenario.quiet, damaged)
    out = cli("backup", "verify", str(damaged), "--trust", alpha_did(scenario), check=False)
    assert out.returncode == 2 and out.stderr.startswith("error: backup_truncated:")


def test_a_restore_refuses_a_store_in_use_or_another_node(
    scenario: Scenario, tmp_path: Path
) -> None:
    alpha = scenario.alpha
    before = get(f"{alpha.url}/logs/{DAO}/checkpoint")
    out = cli("backup", "restore", str(scenario.quiet), "--config", str(alpha.config), check=False)
    assert out.returncode == 3 and "error: store_not_empty:" in out.stderr
    assert get(f"{alpha.url}/logs/{DAO}/checkpoint") == before

    other = init_node(tmp_path / "other", origin_prefix="other.test")
    out = cli("backup", "restore", str(scenario.quiet), "--config", str(other.config), check=False)
    assert out.returncode == 2 and "error: backup_origin_mismatch:" in out.stderr
    other.edit_config(origin_prefix="alpha.test")
    out = cli("backup", "restore", str(scenario.quiet), "--config", str(other.config), check=False)
    assert out.returncode == 2 and "error: backup_node_key_mismatch:" in out.stderr
    assert not (other.directory / "data" / "remembrancer.db").exists()
    out = cli(
        "backup", "create", "--config", str(alpha.config), "--out", str(scenario.quiet), check=False
    )
    assert out.returncode == 2 and "error: backup_exists:" in out.stderr
    out = cli("backup", "extract-config", str(scenario.quiet), "--dir", str(alpha.directory),
              "--trust", alpha_did(scenario), check=False)  # fmt: skip
    assert out.returncode == 2 and "error: file_exists:" in out.stderr
    # With --allow-new-node-key the rotation is the operator's call, and the earlier
    # key, which signed the backup, is named with --trust: the new key alone (the
    # only one in other's configuration) checks nothing in it.
    restore = ["backup", "restore", str(scenario.quiet), "--config", str(other.config),
               "--allow-new-node-key"]  # fmt: skip
    out = cli(*restore, check=False)
    assert out.returncode == 1 and "error: backup_manifest_untrusted:" in out.stderr
    assert (
        not (other.directory / "data" / "remembrancer.db").exists()
        or not open_store(load_node_config(other.config).storage).namespaces()
    )
    out = cli(*restore, "--trust", alpha_did(scenario))
    assert {g["namespace"] for g in json.loads(out.stdout)["logs"]} == {DAO, FIN}


def test_a_backup_without_keys_holds_no_secret(scenario: Scenario, tmp_path: Path) -> None:
    archive = tmp_path / "no-keys.tar"
    out = json.loads(
        cli(
            "backup", "create", "--config", str(scenario.alpha.config), "--out", str(archive)
        ).stdout
    )
    assert out["includes_keys"] is False
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "node/node.yaml" in names and "node/namespaces.yaml" in names
    assert not any("keys/" in n for n in names)
    node_key = (scenario.alpha.directory / "keys" / "node.key").read_bytes().split(b"\n")[1]
    assert base64.b64decode(node_key) not in archive.read_bytes()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600


def test_after_a_node_key_rotation_a_backup_names_the_earlier_key(tmp_path: Path) -> None:
    import asyncio
    from importlib import resources

    import yaml

    from remembrancer.core.errors import VerificationError
    from remembrancer.core.keys import SigningKey
    from remembrancer.core.namespace import parse_namespaces
    from remembrancer.log.namespaces import StaticNamespaces
    from remembrancer.log.sequencer import Sequencer
    from remembrancer.node.backup.write import create_backup
    from remembrancer.node.config import check_data_dir, write_initial_config
    from remembrancer.node.keyfile import read_key_file, write_key_file

    write_initial_config(tmp_path / "n", origin_prefix="rotation.test")
    config = load_node_config(tmp_path / "n" / "node.yaml")
    check_data_dir(config.data_dir)
    spaces = yaml.safe_load(
        resources.files("remembrancer.examples").joinpath("namespaces.yaml").read_text()
    )
    old = read_key_file(config.node_key)
    new = SigningKey.generate()
    for key, entries in ((old, [b"one", b"two"]), (new, [b"three"])):
        write_key_file(config.node_key, key, overwrite=True)
        store = open_store(config.storage)
        seq = Sequencer(
            store, key, config.origin_prefix, StaticNamespaces(parse_namespaces(spaces))
        )
        seq.append_raw(DAO, entries)
        asyncio.run(seq.close())
        store.close()

    archive = tmp_path / "rotated.tar"
    with pytest.raises(VerificationError) as info:
        create_backup(config, archive)
    assert info.value.code == "backup_checkpoint_invalid" and "--log-key" in info.value.message
    assert info.value.details == {"namespace": DAO, "size": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n"]  # no partial file left behind
    out = cli(
        "backup",
        "create",
        "--config",
        str(config.path),
        "--out",
        str(archive),
        "--log-key",
        old.did,
    )
    assert json.loads(out.stdout)["node_did"] == new.did
    assert verify_backup(archive, trust=[new.did, old.did]).log_keys == (new.did, old.did)
    # The archive lists the earlier key, but a reader trusts only the keys it names.
    with pytest.raises(VerificationError) as info:
        verify_backup(archive, trust=[new.did])
    assert info.value.code == "backup_checkpoint_invalid" and old.did in info.value.message
    out = cli("backup", "verify", str(archive), "--config", str(config.path), "--trust", old.did)
    assert out.stdout.startswith("OK:")


def _read_members(source: Path) -> dict[str, bytes]:
    with tarfile.open(source) as tar:
        out = {}
        for info in tar.getmembers():
            extracted = tar.extractfile(info)
            assert extracted is not None
            out[info.name] = extracted.read()
    return out


def _write_members(dest: Path, members: dict[str, bytes], edit: Any, key: Any) -> None:
    """Write ``members`` (the manifest last) with the manifest's member sizes and
    hashes fixed, ``edit`` applied, and signed by ``key`` (None: left unsigned)."""
    doc = json.loads(members.pop("manifest.json"))
    edit(doc)
    doc["members"] = [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                      for n, d in members.items()]  # fmt: skip
    if key is not None:
        sign_manifest(doc, key)
    else:
        doc.pop("signature", None)
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as out:
        for name, data in [*members.items(), ("manifest.json", json.dumps(doc).encode())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            out.addfile(info, io.BytesIO(data))


def _as_legacy(source: Path, dest: Path, fmt: str, key: Any = None) -> int:
    """The archive as format v1 (unsigned) or v2 (signed by ``key``) wrote it: the
    typed tables' rows as named state (scopes ``anchors``, ``witness``,
    ``federation-receipts``, in the JSON the node kept then), no ``tables.jsonl``.
    Returns how many rows moved."""
    members = _read_members(source)
    lines = []
    subjects: dict[str, dict[str, str]] = {}
    for row in map(json.loads, members.pop("tables.jsonl").splitlines()):
        if row["table"] == "anchor_receipts":
            scope, key_, value = "anchors", f"{row['namespace']}/{row['size']:020d}", row["receipt"]
        elif row["table"] == "witness_cosigned":
            doc = {"size": row["size"], "root": row["root_hash"],
                   "note": base64.b64decode(row["note"]).decode(),
                   "cosignature": row["cosignature"], "time": row["time"]}  # fmt: skip
            scope, key_ = "witness", row["origin"]
            value = base64.b64encode(json.dumps(doc).encode()).decode()
        elif row["table"] == "federation_evidence":
            scope, key_, value = "federation-evidence", row["ref"], row["data"]
            index = subjects.setdefault(row["subject"], {})
            index[row["incident"]] = row["ref"]
        else:
            scope, key_ = "federation-receipts", f"{row['namespace']}/{row['receipt_id']}"
            value = row["receipt"]
        lines.append(json.dumps({"key": key_, "scope": scope, "value": value}).encode() + b"\n")
    for subject, incidents in subjects.items():
        value = base64.b64encode(json.dumps({"incidents": incidents}).encode()).decode()
        lines.append(json.dumps({"key": subject, "scope": "federation-evidence-subjects",
                                 "value": value}).encode() + b"\n")  # fmt: skip
    members["state.jsonl"] += b"".join(lines)

    def edit(doc: dict[str, Any]) -> None:
        doc["format"] = fmt
        doc["state_rows"] += len(lines)
        doc.pop("table_rows")

    _write_members(dest, members, edit, key)
    return len(lines)


def _as_v1(source: Path, dest: Path) -> None:
    """The archive as format v1 wrote it: an unsigned manifest, typed rows as state."""
    assert _as_legacy(source, dest, "remembrancer-backup/v1") > 0


def test_a_v1_archive_is_read_only_when_the_operator_vouches_for_it(
    scenario: Scenario, tmp_path: Path
) -> None:
    """A v1 manifest is unsigned: its state and configuration are on the operator's
    word (--allow-unsigned); its logs are still checked against the trusted keys and
    its replay index against the entries."""
    v1 = tmp_path / "v1.tar"
    _as_v1(scenario.quiet, v1)
    did = alpha_did(scenario)
    out = cli("backup", "verify", str(v1), "--trust", did, check=False)
    assert out.returncode == 1 and out.stderr.startswith("error: backup_manifest_unsigned:")
    assert "--allow-unsigned" in out.stderr
    ok = cli("backup", "verify", str(v1), "--trust", did, "--allow-unsigned")
    assert ok.stdout.startswith(f"OK: {v1}: 2 logs")
    from remembrancer.core.keys import SigningKey

    stranger = SigningKey.generate().did  # the logs still need a trusted key
    out = cli("backup", "verify", str(v1), "--trust", stranger, "--allow-unsigned", check=False)
    assert out.returncode == 1 and out.stderr.startswith("error: backup_checkpoint_invalid:")
    out = cli("backup", "extract-config", str(v1), "--dir", str(tmp_path / "x"), "--trust", did,
              check=False)  # fmt: skip
    assert out.returncode == 1 and "backup_manifest_unsigned" in out.stderr
    assert not (tmp_path / "x").exists()
    node = new_node_from(scenario.quiet, tmp_path / "from-v1", did)
    out = cli("backup", "restore", str(v1), "--config", str(node.config), check=False)
    assert out.returncode == 1 and "backup_manifest_unsigned" in out.stderr
    out = cli("backup", "restore", str(v1), "--config", str(node.config), "--allow-unsigned")
    assert {g["namespace"] for g in json.loads(out.stdout)["logs"]} == {DAO, FIN}
    # The rows v1 kept as named state are in the typed tables now, served as before.
    node.start()
    try:
        alpha = scenario.alpha
        witnessed = get(f"{node.url}/witness/checkpoints/beta.test/{DAO}").split(b"\n\n")[0]
        assert (
            witnessed == get(f"{alpha.url}/witness/checkpoints/beta.test/{DAO}").split(b"\n\n")[0]
        )
        mine = get_json(f"{node.url}/v1/namespaces/{DAO}/anchors?limit=500")["receipts"]
        assert mine and any(a["status"] == "verified" for r in mine for a in r["anchors"])
        sizes = [r["size"] for r in mine]
        assert sizes == sorted(sizes)
        page = get_json(f"{node.url}/v1/namespaces/{DAO}/anchors?after={sizes[0]}&limit=1")
        assert [r["size"] for r in page["receipts"]] == sizes[1:2]
    finally:
        node.stop()


def test_a_v2_archive_restores_its_state_rows_into_the_typed_tables(
    scenario: Scenario, tmp_path: Path
) -> None:
    """Format v2 (signed, typed state still in state.jsonl) is read, and a restore
    puts its anchor receipts and witness state into their tables; written again,
    the same store gives a v3 archive with them in tables.jsonl."""
    from remembrancer.storage import open_store

    v2 = tmp_path / "v2.tar"
    moved = _as_legacy(scenario.quiet, v2, "remembrancer-backup/v2", _key_of(scenario.alpha))
    did = alpha_did(scenario)
    ok = cli("backup", "verify", str(v2), "--trust", did)
    assert ok.stdout.startswith(f"OK: {v2}: 2 logs")
    node = new_node_from(scenario.quiet, tmp_path / "from-v2", did)
    cli("backup", "restore", str(v2), "--config", str(node.config))
    store = open_store(f"sqlite:///{tmp_path / 'from-v2' / 'data' / 'remembrancer.db'}")
    try:
        anchors = store.anchor_receipts(DAO, limit=1000)
        assert anchors and all(r.namespace == DAO for r in anchors)
        cosigned = store.get_cosigned(f"beta.test/{DAO}")
        assert cosigned is not None and cosigned.size >= 1
        with store.snapshot() as snap:
            moved_back = (len(list(snap.anchor_receipts())) + len(list(snap.cosigned()))
                          + len(list(snap.federation_receipts())))  # fmt: skip
            legacy = [s for s, _, _ in snap.state() if s in ("anchors", "witness",
                                                             "federation-receipts")]  # fmt: skip
        assert moved_back == moved and legacy == []
    finally:
        store.close()
    again = tmp_path / "again.tar"
    cli("backup", "create", "--config", str(node.config), "--out", str(again))
    manifest = read_manifest(again)
    assert manifest.format == "remembrancer-backup/v3" and manifest.table_rows is not None
    assert sum(manifest.table_rows.to_dict().values()) == moved
