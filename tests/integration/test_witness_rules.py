"""C2SP tlog-witness rules of ``POST /witness/add-checkpoint`` beyond the basic flow
(that one is ``test_node_api.py::test_c2sp_witness_client_flow``): signatures by
unknown keys, the empty proof at old size 0, the 63-line proof limit, and the
409 of a stale old size taking its status from the node's one status table.

The node runs in process (ASGI) over real SQLite storage.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import yaml

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.cosignature import CosignatureVerifier, Cosigner
from remembrancer.core.keys import SigningKey
from remembrancer.core.namespace import parse_namespaces
from remembrancer.core.note import Note, NoteSignature, Signer, format_vkey, open_note, sign_note
from remembrancer.core.tiles import TileTree
from remembrancer.core.witness import AddCheckpointRequest
from remembrancer.log.namespaces import StaticNamespaces
from remembrancer.node.app import create_app
from remembrancer.node.config import WitnessedLog
from remembrancer.node.runtime import Node
from remembrancer.node.statuses import WITNESS_STATUS
from remembrancer.storage import open_store

EXAMPLE = Path(__file__).resolve().parents[2] / "src/remembrancer/examples/namespaces.yaml"
FOREIGN = "log.example.org/tiles-1"
LOG_KEY = SigningKey.generate()
ROTATED_KEY = SigningKey.generate()  # a second trusted key of the same log (rotation)
TREE = TileTree()
TREE.append_many([b"entry %d" % i for i in range(100)])

Body = Callable[[httpx.AsyncClient, Node], Awaitable[None]]


def run(tmp_path: Path, body: Body, *, keys: tuple[SigningKey, ...] = (LOG_KEY,)) -> None:
    tmp_path.mkdir(parents=True, exist_ok=True)

    async def go() -> None:
        node = Node(
            store=open_store(f"sqlite:///{tmp_path / 'node.db'}"),
            node_key=SigningKey.generate(),
            origin_prefix="alpha.test",
            namespaces=StaticNamespaces(parse_namespaces(yaml.safe_load(EXAMPLE.read_text()))),
            witnessed=(WitnessedLog(FOREIGN, tuple(format_vkey(FOREIGN, k.public) for k in keys)),),
        )
        app = create_app(node)
        await node.start()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://t"
            ) as client:
                await body(client, node)
        finally:
            await node.stop()

    asyncio.run(go())


def body_text(size: int) -> str:
    return Checkpoint(FOREIGN, size, TREE.root(size)).to_body()


def note(size: int) -> bytes:
    return sign_checkpoint(Checkpoint(FOREIGN, size, TREE.root(size)), LOG_KEY)


async def post(c: httpx.AsyncClient, old: int, proof: list[bytes], n: bytes) -> httpx.Response:
    body = AddCheckpointRequest(old, tuple(proof), n).to_bytes()
    return await c.post("/witness/add-checkpoint", content=body)


async def cosigned_size(c: httpx.AsyncClient) -> int | None:
    got = await c.get(f"/witness/checkpoints/{FOREIGN}")
    if got.status_code == 404:
        return None
    return Checkpoint.parse(Note.from_bytes(got.content).text).size


def test_signatures_by_unknown_keys_are_ignored(tmp_path: Path) -> None:
    """tlog-witness: the witness "MUST ignore signatures from unknown keys"; a
    checkpoint is cosigned when one signature verifies against a trusted key."""
    stranger = SigningKey.generate()
    text = body_text(10)
    mixed = sign_note(
        text,
        [
            Signer("stranger.example/key", stranger),  # another name
            Signer(FOREIGN, stranger),  # the log's name, an unknown key (other key ID)
            Cosigner("witness.example/w1", stranger, 1_700_000_000),  # a cosignature line
            Signer(FOREIGN, LOG_KEY),  # the one trusted signature, last
        ],
    )
    only_unknown = sign_note(
        text, [Signer(FOREIGN, stranger), Signer("stranger.example/key", stranger)]
    )

    async def body(c: httpx.AsyncClient, node: Node) -> None:
        refused = await post(c, 0, [], only_unknown)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "witness_signature_invalid"
        assert await cosigned_size(c) is None
        r = await post(c, 0, [], mixed)
        assert r.status_code == 200, r.text
        wv = CosignatureVerifier(node.witness_name, node.node_key.public)
        assert len(open_note(mixed + r.content, [wv]).verified) == 1
        assert await cosigned_size(c) == 10

    run(tmp_path, body)


def test_a_failing_trusted_key_does_not_hide_one_that_verifies(tmp_path: Path) -> None:
    """With two trusted keys for one origin (a rotation), a bad signature under one
    of them does not make the witness refuse a checkpoint the other signed."""
    text = body_text(20)
    good = NoteSignature.parse_line(
        sign_note(text, [Signer(FOREIGN, ROTATED_KEY)]).decode().split("\n\n")[1].rstrip("\n")
    )
    old_id = Signer(FOREIGN, LOG_KEY).key_id
    garbage = NoteSignature(FOREIGN, old_id, bytes(64))
    both = Note(text, (garbage, good)).to_bytes()
    garbage_only = Note(text, (garbage,)).to_bytes()

    async def body(c: httpx.AsyncClient, node: Node) -> None:
        refused = await post(c, 0, [], garbage_only)
        assert refused.status_code == 403
        r = await post(c, 0, [], both)
        assert r.status_code == 200, r.text
        assert await cosigned_size(c) == 20

    run(tmp_path, body, keys=(LOG_KEY, ROTATED_KEY))


def test_proof_must_be_empty_when_old_size_is_zero(tmp_path: Path) -> None:
    """tlog-witness: "The proof MUST be empty if the old size is zero" (422 otherwise)."""

    async def body(c: httpx.AsyncClient, node: Node) -> None:
        # A hash that even belongs to the tree: still not an acceptable proof from 0.
        r = await post(c, 0, [TREE.root(5)], note(10))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "witness_proof_invalid"
        assert await cosigned_size(c) is None
        ok = await post(c, 0, [], note(10))
        assert ok.status_code == 200
        assert await cosigned_size(c) == 10

    run(tmp_path, body)


def test_at_most_63_proof_lines(tmp_path: Path) -> None:
    """tlog-witness: a client "MUST NOT send more than 63 consistency proof lines";
    the witness parses 63 (then checks the proof: 422) and refuses 64 as malformed (400)."""
    junk = [bytes([i]) * 32 for i in range(64)]

    async def body(c: httpx.AsyncClient, node: Node) -> None:
        assert (await post(c, 0, [], note(10))).status_code == 200
        r63 = await post(c, 10, junk[:63], note(50))
        assert r63.status_code == 422, r63.text
        assert r63.json()["error"]["code"] == "witness_proof_invalid"
        r64 = await post(c, 10, junk, note(50))
        assert r64.status_code == 400, r64.text
        assert r64.json()["error"]["code"] == "witness_request_malformed"
        assert "63" in r64.json()["error"]["message"]
        assert await cosigned_size(c) == 10
        ok = await post(c, 10, TREE.consistency_proof(10, 50), note(50))
        assert ok.status_code == 200
        assert await cosigned_size(c) == 50

    run(tmp_path, body)


def test_stale_old_size_status_comes_from_the_status_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 409 for a stale old size is the table's status for
    ``witness_old_size_mismatch``, not a number of its own in the route; its body
    stays the spec's ``text/x.tlog.size``."""
    import remembrancer.node.statuses as statuses

    assert WITNESS_STATUS["witness_old_size_mismatch"] == 409

    async def first(c: httpx.AsyncClient, node: Node) -> None:
        assert (await post(c, 0, [], note(10))).status_code == 200
        stale = await post(c, 0, [], note(20))
        assert stale.status_code == 409
        assert stale.headers["content-type"].startswith("text/x.tlog.size")
        assert stale.text == "10\n"

    run(tmp_path / "a", first)
    # Change the table: the route must follow it.
    monkeypatch.setitem(statuses.API_STATUS, "witness_old_size_mismatch", 418)

    async def second(c: httpx.AsyncClient, node: Node) -> None:
        assert (await post(c, 0, [], note(10))).status_code == 200
        stale = await post(c, 5, [], note(20))
        assert stale.status_code == 418
        assert stale.headers["content-type"].startswith("text/x.tlog.size")
        assert stale.text == "10\n"

    run(tmp_path / "b", second)


def test_proof_lines_are_standard_base64() -> None:
    """The request codec the tests use writes what the spec's example shows."""
    req = AddCheckpointRequest(3, (b"\xff" * 32,), note(3))
    head = req.to_bytes().split(b"\n\n", 1)[0].decode()
    assert head == "old 3\n" + base64.b64encode(b"\xff" * 32).decode()
