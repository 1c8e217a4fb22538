"""Security properties of a node (docs/reliability.md).

- An unauthenticated (or wrongly authenticated) client cannot change policy,
  the federation registry or a cadence: every admin route refuses it with 401
  and nothing changes; registry proposals and cadence proposals need the
  signatures the policy names, and forged or insufficient ones change nothing.
- A federation peer cannot act outside its roles (nor a suspended peer, an
  unknown one, or one signing under another peer's name).
- No input reaches a path outside the data directory: requests with
  traversal in every path parameter open nothing outside it (checked with a
  Python audit hook on every file the process opens), and backup archives
  whose file list tries to escape, or a target directory with a symlink that
  points out of it, write nothing outside.
- Secrets (the admin token, the node key's seed, an anchoring key) never
  appear in logs or error messages, whatever the inputs.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from remembrancer.core.keys import SigningKey
from remembrancer.core.record import sign_envelope, unsigned_envelope
from remembrancer.demo.keys import demo_key
from remembrancer.demo.records import EXAMPLE_WITNESSES, ledger_payload

DAO = "dao:vaultmesh"
ATTACKER = SigningKey.generate(b"\x66" * 32)


class Impostor:
    """Signs with one key while claiming another's DID."""

    def __init__(self, did: str, key: SigningKey) -> None:
        self.did, self._key = did, key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def _witnesses(ns: str = DAO) -> list[SigningKey]:
    return [demo_key(a) for a in EXAMPLE_WITNESSES[ns]]


def _envelope(schema: str, payload: dict[str, Any], actor: str, ns: str = DAO) -> dict[str, Any]:
    return unsigned_envelope(namespace=ns, schema=schema, payload=payload, actor=actor,
                             event_id=f"sec-{time.time_ns()}", timestamp=int(time.time()),
                             nonce=base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("="))  # fmt: skip


def _run(rel: Any, tmp_path: Path, body: Any) -> None:
    async def go() -> None:
        w = await rel.make_world(tmp_path)
        try:
            await body(w)
        finally:
            await rel.close_world(w)

    asyncio.run(go())


def _visible(w: Any) -> dict[str, Any]:
    """What policy, registry and cadence look like from outside and inside."""
    node = w.node
    return {
        "state": w.state(),
        "policy": {ns: node.sequencer.effective_config(ns) for ns in node.namespaces.current()},
        "cadence": {
            ns: {
                level: (v["target"], v["every"], v["period"], v["confirmations"])
                for level, v in h["levels"].items()
            }
            for ns, h in node.scheduler.health_all().items()
        },
        "registry": node.federation.registry.to_dict(),
        "namespaces": sorted(node.namespaces.current()),
    }


# --- authentication -----------------------------------------------------------------------------


def test_unauthenticated_clients_cannot_change_policy_registry_or_cadence(
    rel: Any, tmp_path: Path
) -> None:
    token = rel.ADMIN_TOKEN
    wrong = [
        [], [(b"authorization", b"Bearer ")], [(b"authorization", b"Bearer " + token[:-1].encode())],
        [(b"authorization", b"Bearer " + token.encode() + b"x")], [(b"authorization", token.encode())],
        [(b"authorization", b"bearer " + token.encode())], [(b"authorization", b"Bearer  " + token.encode())],
        [(b"authorization", b"Basic " + base64.b64encode(b"admin:" + token.encode()))],
        [(b"authorization", b"Bearer " + token.upper().encode())], [(b"x-admin-token", token.encode())],
        [(b"cookie", b"token=" + token.encode())],
    ]  # fmt: skip

    async def body(w: Any) -> None:
        pid = (await w.post("/v1/federation/proposals", w.proposal())).json()["proposal_id"]
        admin_routes = sorted({r.path for r in rel.all_routes(w.app) if "/admin/" in r.path})
        assert len(admin_routes) >= 5, admin_routes
        before = _visible(w)
        for path in admin_routes:
            target = (path.replace("{namespace}", DAO).replace("{proposal_id}", pid)
                      + ("?origin=" + rel.FOREIGN + "&target=rfc3161:tsa" if path.endswith("/replicas/anchor") else ""))  # fmt: skip
            for headers in wrong:
                for query_token in ("", f"&token={token}", f"&access_token={token}"):
                    url = target + (
                        query_token if "?" in target else query_token.replace("&", "?", 1)
                    )
                    answer = await w.post(
                        url, b"", headers=[(b"content-type", b"application/json"), *headers]
                    )
                    assert answer.status == 401, (path, headers, answer.body)
                    assert answer.json()["error"]["code"] == "unauthorized"
                    assert token.encode() not in answer.body
        assert _visible(w) == before
        # Registry: a proposal by an outsider is refused; one by a single peer stays
        # pending (quorum 3); a forged approval (an impostor's witness signature) is refused.
        reg = w.node.federation.registry
        payload = reg.registry_record_payload("take over")
        payload["registry"]["peers"] = [
            p for p in payload["registry"]["peers"] if p["did"] == rel.PEER.did
        ]
        payload["registry"]["quorum"] = 1
        fed = f"fed:{rel.FED}"
        env = _envelope("federation.registry.set@1.0.0", payload, ATTACKER.did, fed)
        outsider = await w.post("/v1/federation/proposals", sign_envelope(env, ATTACKER).leaf)
        # (anyone may propose, a joining node proposes itself; an outsider's signature
        # counts for nothing, and pending proposals are bounded)
        assert outsider.status == 200 and outsider.json()["state"] == "pending", outsider.body
        assert outsider.json()["approval_count"] == 0
        env = _envelope("federation.registry.set@1.0.0", payload, rel.PEER.did, fed)
        forged = sign_envelope(env, rel.PEER, [Impostor(w.node.node_key.did, ATTACKER),
                                               Impostor(rel.WITNESS_ONLY.did, ATTACKER)])  # fmt: skip
        answer = await w.post("/v1/federation/proposals", forged.leaf)
        assert (
            answer.status == 422 and answer.json()["error"]["code"] == "proposal_signature_invalid"
        ), answer.body
        lone = await w.post("/v1/federation/proposals", sign_envelope(env, rel.PEER).leaf)
        assert lone.status == 200 and lone.json()["state"] == "pending", lone.body
        assert w.node.federation.registry.to_dict() == before["registry"]
        # Cadence: a proposal by a non-admin, votes by non-voters and a vote forged
        # under a voter's name change nothing.
        cadence = {"cold": {"target": "rfc3161:attacker", "every": "1s"}}
        actor = demo_key("did:vm:actor:demo")
        proposal = sign_envelope(_envelope("governance.cadence.set@1.0.0",
                                           {"namespace": DAO, "cadence": cadence}, actor.did), actor, _witnesses())  # fmt: skip
        assert (await w.post(f"/v1/namespaces/{DAO}/records", proposal.leaf)).status == 200
        voter = demo_key("did:vm:arbiter:prod-us-east-1")
        # (non-voters' votes are admitted as records and count nothing; a vote under
        # a voter's name with another key is refused)
        for signer, status in ((actor, 200), (ATTACKER, 200), (Impostor(voter.did, ATTACKER), 422),
                               (Impostor(voter.did, ATTACKER), 422)):  # fmt: skip
            vote = _envelope(
                "vote.cast@1.0.0",
                {"proposalId": proposal.event_id, "choice": "approve"},
                signer.did,
            )
            answer = await w.post(
                f"/v1/namespaces/{DAO}/records", sign_envelope(vote, signer, _witnesses()).leaf
            )
            assert answer.status == status, answer.body
        admin_alias = w.node.namespaces.current()[DAO].governance.admins
        admin_did = next(iter(admin_alias))
        forged_admin = sign_envelope(_envelope("governance.cadence.set@1.0.0", {"namespace": DAO, "cadence": cadence},
                                               admin_did), Impostor(admin_did, ATTACKER), _witnesses())  # fmt: skip
        answer = await w.post(f"/v1/namespaces/{DAO}/records", forged_admin.leaf)
        assert (
            answer.status == 422 and answer.json()["error"]["code"] == "actor_signature_invalid"
        ), answer.body
        after = _visible(w)
        pending = after["policy"][DAO]["governance_state"].pop("pending")
        assert [p["votes"] for p in pending.values()] == [[]]  # recorded, no vote counted
        after["policy"][DAO]["governance_state"]["pending"] = {}
        assert after["policy"] == before["policy"] and after["cadence"] == before["cadence"]
        assert "attacker" not in json.dumps(after["policy"])
        # The admin token does work where it should (the refusals above were not vacuous).
        ok = await w.post("/v1/admin/namespaces/reload", b"", headers=w.admin())
        assert ok.status == 200, ok.body

    _run(rel, tmp_path, body)


# --- roles --------------------------------------------------------------------------------------


def test_a_peer_cannot_act_outside_its_roles(rel: Any, tmp_path: Path) -> None:
    async def body(w: Any) -> None:
        note = w.node.store.log_state(DAO).checkpoint.decode()
        origin = w.node.sequencer.origin(DAO)
        xns = rel.xns_message_record()
        contents = {
            "anchor": {"namespace": DAO, "receipt": {"type": "remembrancer.federation-receipt/v1", "namespace": DAO}},
            "countersign": {"namespace": DAO, "receipt_id": "ab" * 32 + "/rfc3161:tsa/x",
                            "signature": {"node": rel.WITNESS_ONLY.did, "role": "witness",
                                          "timestamp": int(time.time()), "sig": "A" * 86}},
            "receipt": {"namespace": DAO, "receipt": {"type": "remembrancer.anchor-receipt/v1"}},
            "xns": {"source": DAO, "target": "fin:clearing", "record": json.loads(xns.leaf),
                    "proof": "c2sp.org/tlog-proof@v1\nindex 0\n\n" + note},
        }  # fmt: skip
        before = w.state()
        for kind, content in contents.items():
            cases = [
                (w.message(kind, content, key=rel.WITNESS_ONLY), 403, "role_not_allowed"),
                (w.message(kind, content, key=rel.SUSPENDED), 410, "peer_suspended"),
                (w.message(kind, content, key=rel.OUTSIDER), 404, "unknown_sender"),
                # PEER's name, WITNESS_ONLY's key: impersonation fails at the signature.
                (
                    w.message(kind, content, key=rel.WITNESS_ONLY, sender=rel.PEER.did),
                    401,
                    "signature_invalid",
                ),
                (
                    w.message(kind, content, key=rel.PEER, fid="other-federation"),
                    421,
                    "federation_mismatch",
                ),
            ]
            for raw, status, code in cases:
                answer = await w.post("/federation/v1/messages", raw)
                assert (answer.status, answer.json()["error"]["code"]) == (status, code), (
                    kind,
                    answer.body,
                )
                assert w.state() == before, kind
        # What a witness may send, it may send.
        heartbeat = {"logs": [{"origin": origin, "size": 1, "root": "sha256:" + "00" * 32}]}
        for kind, content in (
            ("heartbeat", heartbeat),
            ("checkpoint", {"origin": origin, "note": note}),
        ):
            answer = await w.post(
                "/federation/v1/messages", w.message(kind, content, key=rel.WITNESS_ONLY)
            )
            assert answer.status == 202, answer.body

    _run(rel, tmp_path, body)


# --- paths --------------------------------------------------------------------------------------

TRAVERSAL = ["..", "../../../../../../etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "..%2f..%2f..%2fetc",
             "%252e%252e%252f", "/etc/passwd", "//etc/passwd", "....//....//etc", "..\\..\\etc",
             "%00", "dao:vaultmesh%00.json", "~root", "evil", "evil/secret", "../outside/secret"]  # fmt: skip


class OpenedFiles:
    """Every file this process opens (``open`` audit events), while ``active``."""

    _installed: OpenedFiles | None = None

    def __init__(self) -> None:
        self.active = False
        self.paths: list[tuple[str, str]] = []

    @classmethod
    def install(cls) -> OpenedFiles:
        if cls._installed is None:
            me = cls()

            def hook(event: str, args: tuple[Any, ...]) -> None:
                if me.active and event == "open" and isinstance(args[0], str | bytes):
                    path = os.fsdecode(args[0])
                    mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
                    me.paths.append((os.path.abspath(path), mode))

            sys.addaudithook(hook)
            cls._installed = me
        cls._installed.paths.clear()
        return cls._installed


def test_no_request_reaches_a_path_outside_the_data_directory(rel: Any, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "secret").write_text("outside-secret-content\n")
    opened = OpenedFiles.install()
    package = Path(rel.__file__).resolve().parents[2] / "src"

    async def body(w: Any) -> None:
        # A symlink in the data directory that points out of it.
        (w.directory / "evil").symlink_to(outside, target_is_directory=True)
        routes = [r for r in rel.all_routes(w.app) if getattr(r, "param_convertors", None)]
        opened.active = True
        try:
            for route in routes:
                for bad in TRAVERSAL:
                    path = route.path
                    for name in route.param_convertors:
                        path = path.replace("{" + name + "}", bad).replace(
                            "{" + name + ":path}", bad
                        )
                    for method in sorted(route.methods - {"HEAD"}):
                        answer = await w.call(
                            method, path.encode("ascii", "backslashreplace"), body=b"{}"
                        )
                        assert answer.status < 500, (method, path, answer.body)
                        assert (
                            b"outside-secret" not in answer.body
                            and b"root:x:0:0" not in answer.body
                        )
            # Traversal inside bodies: an origin, a tile path and a namespace in a note.
            evil_note = (
                b"old 0\n\n../../etc/passwd\n1\n"
                + base64.b64encode(bytes(32))
                + b"\n\n\xe2\x80\x94 x AAAA\n"
            )
            assert (await w.post("/witness/add-checkpoint", evil_note, headers=[])).status < 500
            with open(w.directory / "control", "w"):  # the hook sees opens (a control)
                pass
        finally:
            opened.active = False
        assert (str(w.directory / "control"), "w") in opened.paths
        data_dir = str(w.directory)
        for path, mode in opened.paths:
            inside = path.startswith(data_dir + os.sep) and not path.startswith(
                str(w.directory / "evil")
            )
            if any(c in mode for c in "wax+"):
                assert inside, f"a request made the node write {path}"
            else:
                allowed = inside or path.startswith(
                    (str(package), sys.prefix, sys.base_prefix, "/proc", "/dev")
                )
                assert allowed, f"a request made the node read {path}"

    _run(rel, tmp_path, body)


def _archive_with(
    backup: bytes, edit: Any, key: Any, extra: list[tarfile.TarInfo] | None = None
) -> bytes:
    """A copy of a backup archive with its manifest edited, hashes fixed and re-signed by
    the node ``key`` (as a writer holding it would: what is tested is the edit)."""
    import hashlib

    from remembrancer.core.encoding import b64url_encode
    from remembrancer.core.jcs import canonicalize
    from remembrancer.node.backup.manifest import MANIFEST_DOMAIN

    with tarfile.open(fileobj=io.BytesIO(backup)) as src:
        members = [(i, src.extractfile(i).read()) for i in src.getmembers()]  # type: ignore[union-attr]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as dst:
        renames: dict[str, str] = {}
        manifest = json.loads(members[-1][1])
        edit(manifest, renames)
        data_by_name = {renames.get(i.name, i.name): d for i, d in members[:-1]}
        for m in manifest["members"]:
            d = data_by_name[m["name"]]
            m["size"], m["sha256"] = len(d), hashlib.sha256(d).hexdigest()
        manifest.pop("signature")
        sig = key.sign(MANIFEST_DOMAIN + canonicalize(manifest))
        manifest["signature"] = {"alg": "Ed25519", "kid": key.did, "sig": b64url_encode(sig)}
        for info, data in members[:-1]:
            info.name = renames.get(info.name, info.name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
        for info in extra or []:
            dst.addfile(info)
        data = json.dumps(manifest).encode()
        last = tarfile.TarInfo("manifest.json")
        last.size = len(data)
        dst.addfile(last, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node directory and its backup (``backup.tar`` beside it)."""
    from remembrancer.node.backup.write import create_backup
    from remembrancer.node.config import check_data_dir, load_node_config, write_initial_config
    from remembrancer.storage import open_store

    directory = tmp_path_factory.mktemp("backed-up") / "node"
    write_initial_config(directory, origin_prefix="backup.test")
    config = load_node_config(directory / "node.yaml", env={})
    check_data_dir(config.data_dir)
    open_store(config.storage).close()
    create_backup(config, directory.parent / "backup.tar", include_keys=True)
    return directory


@pytest.fixture(scope="module")
def backup_archive(backed_up: Path) -> bytes:
    return (backed_up.parent / "backup.tar").read_bytes()


@pytest.fixture(scope="module")
def backup_key(backed_up: Path) -> Any:
    from remembrancer.node.keyfile import read_key_file

    return read_key_file(backed_up / "keys" / "node.key")


def _rename_file(old: str, new_member: str, new_path: str) -> Any:
    def edit(manifest: dict[str, Any], renames: dict[str, str]) -> None:
        for f in manifest["files"]:
            if f["member"] == old:
                f["member"], f["path"] = new_member, new_path
        for m in manifest["members"]:
            if m["name"] == old:
                m["name"] = new_member
        renames[old] = new_member

    return edit


ESCAPES = {
    "dot-dot member": _rename_file("node/keys/node.key", "node/../../escaped.key", "../../escaped.key"),
    "dot-dot in the middle": _rename_file("node/keys/node.key", "node/keys/../../../escaped.key", "keys/../../../escaped.key"),
    "absolute path": _rename_file("node/keys/node.key", "node//tmp/escaped.key", "/tmp/escaped.key"),
    "external file written": _rename_file("node/keys/node.key", "external/0/escaped.key", "/tmp/escaped.key"),
    "backslashes": _rename_file("node/keys/node.key", "node/..\\..\\escaped.key", "..\\..\\escaped.key"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(ESCAPES))
def test_a_backup_cannot_write_outside_the_directory_it_is_extracted_to(
    case: str, backup_archive: bytes, backup_key: Any, tmp_path: Path
) -> None:
    from remembrancer.core.errors import RemembrancerError
    from remembrancer.node.backup.restore import extract_files, verify_backup

    archive = tmp_path / "a" / "b" / "evil.tar"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(_archive_with(backup_archive, ESCAPES[case], backup_key))
    target = tmp_path / "a" / "b" / "target"
    before = {p for p in tmp_path.rglob("*")} | set(Path("/tmp").glob("escaped*"))
    try:
        verify_backup(archive, trust=[backup_key.did])
        written = extract_files(archive, target, trust=[backup_key.did])
    except RemembrancerError as e:
        assert e.code in ("backup_manifest_invalid", "backup_members_mismatch"), e.explain()
        written = []
    after = {p for p in tmp_path.rglob("*")} | set(Path("/tmp").glob("escaped*"))
    for p in after - before:
        assert p == target or target in p.parents, f"{case}: wrote {p} ({written})"


def test_tar_members_that_are_links_or_devices_are_refused(
    backup_archive: bytes, backup_key: Any, tmp_path: Path
) -> None:
    from remembrancer.core.errors import RemembrancerError
    from remembrancer.node.backup.restore import extract_files, verify_backup

    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE):
        target = tmp_path / f"t-{kind!r}"
        link = tarfile.TarInfo("node/link")
        link.type, link.linkname = kind, "/etc/passwd"
        archive = tmp_path / f"link-{kind!r}.tar"
        archive.write_bytes(_archive_with(backup_archive, lambda m, r: None, backup_key, [link]))
        for action in (
            lambda a: verify_backup(a, trust=[backup_key.did]),
            lambda a, t=target: extract_files(a, t, trust=[backup_key.did]),
        ):
            with pytest.raises(RemembrancerError) as e:
                action(archive)
            assert e.value.code in ("backup_members_mismatch", "backup_truncated"), (
                e.value.explain()
            )
        assert not target.exists()


def test_extracting_a_backup_does_not_follow_a_symlink_out_of_the_target(
    backup_archive: bytes, backup_key: Any, tmp_path: Path
) -> None:
    from remembrancer.core.errors import RemembrancerError
    from remembrancer.node.backup.restore import extract_files

    archive = tmp_path / "backup.tar"
    archive.write_bytes(backup_archive)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "keys").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RemembrancerError) as e:
        extract_files(archive, target, trust=[backup_key.did])
    assert e.value.code == "file_outside_directory", e.value.explain()
    assert list(outside.iterdir()) == []
    assert [p.name for p in target.iterdir()] == ["keys"]


# --- secrets ------------------------------------------------------------------------------------


def _encodings(secret: bytes) -> list[bytes]:
    b64 = base64.b64encode(secret)
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"="),
            base64.urlsafe_b64encode(secret).rstrip(b"=")]  # fmt: skip


def test_secrets_never_appear_in_logs_or_error_messages(tmp_path: Path) -> None:
    """A real node process (JSON logs), fed inputs that carry near-copies of its
    admin token and key seed, inputs that carry the secrets themselves in the
    wrong places, and work that makes it handle them (an anchoring key that does
    not parse, a node key file that does not match); its log, its answers and
    the command line's errors are then searched for every encoding of them."""
    import urllib.error
    import urllib.request

    from remembrancer.demo.procs import cli, init_node
    from remembrancer.node.keyfile import read_key_file

    node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    token = (node.directory / "keys" / "admin.token").read_text().strip()
    node_key = read_key_file(node.directory / "keys" / "node.key")
    seed = node_key.to_bytes()
    evm_secret = "5e" * 31 + "zz"  # a key that does not parse: its text must not be echoed
    (node.directory / "keys" / "evm.key").write_text("0x" + evm_secret + "\n")
    (node.directory / "keys" / "evm.key").chmod(0o600)
    node.edit_config(anchoring={"eip155": {"31337": {"rpc": "http://127.0.0.1:9", "key_file": "keys/evm.key"}}},
                     log_format="json")  # fmt: skip
    ns_file = node.directory / "namespaces.yaml"
    ns_file.write_text(
        ns_file.read_text().replace('target: "eip155:8453"', 'target: "eip155:31337"')
    )
    node.start()
    answers: list[bytes] = []

    def call(path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes:
        req = urllib.request.Request(node.url + path, data=body, headers=headers or {},
                                     method="POST" if body is not None else "GET")  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            return e.read()

    near = [token[:-1], token[1:], token[::-1], token.upper(), token[:20]]
    try:
        # Near-copies of the token: refused, and neither they nor the token show up.
        for bad in near:
            for path in (f"/v1/admin/anchor/{DAO}", "/v1/admin/namespaces/reload"):
                answers.append(call(path, b"", {"Authorization": f"Bearer {bad}"}))
                answers.append(call(path, b"", {"Authorization": bad}))
        # The secrets themselves, in the wrong places (echoes of the client's own input
        # in its answers are not leaks; the log must not keep them).
        for secret in [token, *[e.decode() for e in _encodings(seed)[1:]]]:
            call(f"/v1/namespaces/{DAO}/records", json.dumps({"token": secret}).encode(),
                 {"Content-Type": "application/json"})  # fmt: skip
            call(f"/v1/namespaces/{DAO}/events/{secret}")
            call("/witness/add-checkpoint", f"old 0\n\n{secret}\n1\n{secret}\n\n".encode())
            call("/federation/v1/messages", json.dumps({"signature": secret}).encode(),
                 {"Content-Type": "application/json"})  # fmt: skip
            call(f"/v1/admin/anchor/{DAO}?token={secret}", b"")
        # A record whose actor is the node key itself.
        env = _envelope("ledger.append@1.0.0", ledger_payload(1), node_key.did)
        answers.append(call(f"/v1/namespaces/{DAO}/records", sign_envelope(env, node_key, _witnesses()).leaf,
                            {"Content-Type": "application/json"}))  # fmt: skip
        assert json.loads(answers[-1])["index"] == 0, answers[-1]
        # Work that handles secrets: the admin anchors now, the EVM rail reads its key.
        answers.append(call(f"/v1/admin/anchor/{DAO}", b"", {"Authorization": f"Bearer {token}"}))
        assert b"eip155:31337" in answers[-1], answers[-1]
        answers.append(call(f"/v1/namespaces/{DAO}"))
        answers.append(call("/v1/node"))
        answers.append(call("/healthz"))
        answers.append(call("/metrics"))
    finally:
        node.stop()
    # Start-up errors name the file, never its secret: a node key file that does not
    # match its seed, an admin token that is too short, a record signed with a broken key file.
    key_file = node.directory / "keys" / "node.key"
    key_file.write_text(key_file.read_text().replace("did:key:z", "did:key:Z"))
    broken_key = cli("serve", "--config", str(node.config), check=False, timeout=60)
    record = cli("record", "--namespace", DAO, "--schema", "ledger.append@1.0.0", "--payload", "{}",
                 "--actor-key", str(key_file), "--out", str(tmp_path / "r.json"), check=False)  # fmt: skip
    short = "short-" + token[:6]
    (node.directory / "keys" / "admin.token").write_text(short + "\n")
    node.edit_config(node_key="keys/missing.key")
    short_token = cli("serve", "--config", str(node.config), check=False, timeout=60)
    assert broken_key.returncode != 0 and record.returncode != 0 and short_token.returncode != 0
    log = (node.directory / "node.log").read_bytes()
    assert b"eip155:31337" in log, "the EVM rail was never used"
    texts = {
        "node log": log,
        "answers": b"\n".join(answers),
        "serve with a broken key file": (broken_key.stdout + broken_key.stderr).encode(),
        "record with a broken key file": (record.stdout + record.stderr).encode(),
        "serve with a short token": (short_token.stdout + short_token.stderr).encode(),
    }
    secrets = {"admin token": [token.encode()], "short token": [short.encode()],
               "node seed": _encodings(seed), "EVM key": [evm_secret.encode()],
               "near-copies of the token": [b.encode() for b in near]}  # fmt: skip
    for where, text in texts.items():
        for what, forms in secrets.items():
            for form in forms:
                assert form not in text, f"the {what} appears in the {where}"
