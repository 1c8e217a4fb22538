"""kill -9 of a process appending under load, repeated (DESIGN.md section 4).

After each restart every acknowledged record is present at its index, and
every checkpoint ever returned is consistent with the current tree
(consistency proofs verified).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Verifier
from remembrancer.core.rfc6962 import (
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from remembrancer.core.tiles import TileNodeReader
from remembrancer.node.keyfile import write_key_file
from remembrancer.storage import open_store

ORIGIN = "crash.test/dao:vaultmesh"


@pytest.fixture
def pg_url(pg_dsn: str):  # type: ignore[no-untyped-def]
    """A store URL in a fresh PostgreSQL schema, dropped afterwards."""
    import psycopg

    schema = f"crash_{os.getpid()}_{random.randrange(1 << 30)}"
    yield f"{pg_dsn}?schema={schema}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _reader(store, size: int) -> TileNodeReader:  # type: ignore[no-untyped-def]
    def fetch(tiles):  # type: ignore[no-untyped-def]
        found = store.read_tiles("dao:vaultmesh", [(t.level, t.index) for t in tiles])
        return [found.get((t.level, t.index), b"")[: t.width * 32] for t in tiles]

    return TileNodeReader(fetch, size)


def _run_and_kill(url: str, key_file: Path, seconds: float) -> list[dict]:
    errors = key_file.parent / "appender.err"
    with (
        errors.open("ab") as err,
        subprocess.Popen(
            [sys.executable, "-m", "remembrancer.testing.appender", url, str(key_file)],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        ) as proc,
    ):
        return _collect(proc, seconds, errors)


def _collect(proc: subprocess.Popen[bytes], seconds: float, errors: Path) -> list[dict]:
    assert proc.stdout is not None
    acked: list[dict] = []
    deadline = time.monotonic() + seconds
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            buf += chunk
        elif proc.poll() is not None:
            pytest.fail(f"appender died: {errors.read_text()[-2000:]}")
        else:
            time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read() or b""
    for line in buf.split(b"\n"):
        if line.strip():
            try:
                acked.append(json.loads(line))
            except ValueError:
                pass  # a torn last line: written, not fully acknowledged
    return acked


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_under_load_loses_nothing_acknowledged(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'crash.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    key = SigningKey.generate()
    key_file = tmp_path / "node.key"
    write_key_file(key_file, key)
    verifier = Verifier(ORIGIN, key.public)
    rng = random.Random(7)
    acked: list[dict] = []
    for _ in range(4):
        acked += _run_and_kill(url, key_file, rng.uniform(1.5, 3.0))
    assert len(acked) > 200, "the appender acknowledged too little to test anything"

    store = open_store(url)
    try:
        state = store.log_state("dao:vaultmesh")
        assert state is not None
        reader = _reader(store, state.size)
        # Every acknowledged record is present at its index.
        for ack in acked:
            leaf = store.read_entries("dao:vaultmesh", ack["index"], ack["index"] + 1)
            assert leaf, f"acknowledged entry {ack['index']} is missing"
            found = store.find_event_hash("dao:vaultmesh", bytes.fromhex(ack["eventHash"][7:]))
            assert found is not None and found.index == ack["index"]
        # Every checkpoint ever returned is consistent with the current tree.
        seen = {}
        for ack in acked:
            seen[ack["size"]] = ack["checkpoint"].encode()
        for size, note in sorted(seen.items()):
            cp = open_checkpoint(note, verifier).checkpoint
            assert cp.size == size <= state.size
            proof = consistency_proof(size, state.size, reader)
            verify_consistency(size, state.size, cp.root_hash, state.root_hash, proof)
        # And a sample of inclusion proofs at the final size.
        for ack in acked[:: max(1, len(acked) // 50)]:
            leaf = store.read_entries("dao:vaultmesh", ack["index"], ack["index"] + 1)[0]
            proof = inclusion_proof(ack["index"], state.size, reader)
            verify_inclusion(ack["index"], state.size, hash_leaf(leaf), proof, state.root_hash)
    finally:
        store.close()
