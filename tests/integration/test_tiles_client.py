"""The client commands against a foreign static tlog-tiles log.

The log is laid out by ``remembrancer.testing.naive_tlog`` (an independent
writer from the specs, sharing no code with the project's tiles, notes or
checkpoints), served by ``python -m http.server`` in a real subprocess, and
read by the ``remembrancer`` command in another.  Its origin is not ours, its
checkpoint carries a witness cosignature, and it has full and partial tiles
at three levels and entry bundles.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from remembrancer.demo.procs import cli
from remembrancer.testing.naive_merkle import NaiveTree
from remembrancer.testing.naive_tlog import NaiveLog
from remembrancer.testing.static import StaticServer

ORIGIN = "transparency.example.net/foreign-log"
LOG_SEED = b"\x11" * 32
WITNESS = ("witness.example.net/w1", b"\x22" * 32, 1_760_000_000)
WITNESS_VKEY = NaiveLog.cosigner_vkey(WITNESS[0], WITNESS[1])
SIZE = 70_000  # the spec's example: 3 levels, partial tiles at each


def entry(i: int) -> bytes:
    return b"foreign entry %d " % i + bytes([i % 251]) * (i % 37)


@pytest.fixture(scope="module")
def log() -> NaiveLog:
    naive = NaiveLog(ORIGIN, LOG_SEED, cosigners=[WITNESS])
    naive.append(entry(i) for i in range(SIZE))
    return naive


@pytest.fixture(scope="module")
def served(log: NaiveLog, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("www")
    log.publish(root / "log")
    with StaticServer(root) as server:
        yield server.url + "/log"


def test_checkpoint_of_a_foreign_log(log: NaiveLog, served: str) -> None:
    out = cli("checkpoint", "--tiles", served, "--vkey", log.vkey)
    assert out.stdout.encode() == log.checkpoint()
    assert f"verified: signed by {ORIGIN}" in out.stderr
    assert "verified: 3 right-edge tiles hash to the root at size 70000" in out.stderr
    # The layout is detected from --url alone (a prefix with a checkpoint under it).
    assert cli("checkpoint", "--url", served + "/").stdout.encode() == log.checkpoint()
    # Another key: exit 1.  No log there: exit 2 with a clear error.
    other = NaiveLog(ORIGIN, b"\x33" * 32).vkey
    bad = cli("checkpoint", "--tiles", served, "--vkey", other, check=False)
    assert bad.returncode == 1 and "checkpoint_unsigned" in bad.stderr
    none = cli("checkpoint", "--url", served.rsplit("/", 1)[0] + "/nothing", check=False)
    assert none.returncode == 2 and "log_checkpoint_missing" in none.stderr


def test_inclusion_proofs_and_entries_verify(log: NaiveLog, served: str, tmp_path: Path) -> None:
    naive = NaiveTree(log.leaves)
    for index in (0, 65_535, 69_999):  # a full tile, the end of a level-2 subtree, a partial one
        proof, got = tmp_path / f"{index}.tlog-proof", tmp_path / f"{index}.entry"
        cli("proof", "inclusion", "--tiles", served, "--index", str(index), "--out", str(proof),
            "--entry-out", str(got), "--vkey", log.vkey)  # fmt: skip
        assert got.read_bytes() == entry(index)
        text = proof.read_bytes()
        head, note = text.split(b"\n\n", 1)
        assert note == log.checkpoint()
        lines = head.decode().split("\n")
        assert lines[:2] == ["c2sp.org/tlog-proof@v1", f"index {index}"]
        assert [base64.b64decode(h) for h in lines[2:]] == naive.inclusion_proof(index, SIZE)
        ok = cli("verify", str(got), "--raw", "--proof", str(proof), "--vkey", log.vkey,
                 "--witness-vkey", WITNESS_VKEY, "--min-cosigners", "1")  # fmt: skip
        assert (
            ok.stdout.startswith("OK: entry sha256:")
            and f"is entry {index} of {ORIGIN}" in ok.stdout
        )
    # The same, proved now from the tiles, in one command.
    got = tmp_path / "69999.entry"
    ok = cli("verify", str(got), "--raw", "--tiles", served, "--index", "69999", "--vkey", log.vkey,
             "--witness-vkey", WITNESS_VKEY, "--min-cosigners", "1", "--json")  # fmt: skip
    report = json.loads(ok.stdout)
    assert report["valid"] and report["treeSize"] == SIZE and report["cosigners"] == 1
    assert "tiles against the checkpoint root" in report["checked"]
    # A wrong entry or index does not verify (exit 1); a missing cosigner quorum neither.
    wrong = cli("verify", str(got), "--raw", "--tiles", served, "--index", "69998",
                "--vkey", log.vkey, check=False)  # fmt: skip
    assert wrong.returncode == 1 and "inclusion" in wrong.stderr
    short = cli("verify", str(got), "--raw", "--tiles", served, "--index", "69999", "--vkey",
                log.vkey, "--witness-vkey", NaiveLog.cosigner_vkey("w.example/2", b"\x44" * 32),
                "--min-cosigners", "1", check=False)  # fmt: skip
    assert short.returncode == 1 and "cosigner_quorum_not_met" in short.stderr


def test_consistency_proof_from_tiles(log: NaiveLog, served: str) -> None:
    out = cli("proof", "consistency", "--tiles", served, "--old", "1000", "--vkey", log.vkey)
    value = json.loads(out.stdout)
    assert (value["origin"], value["old"], value["new"]) == (ORIGIN, 1000, SIZE)
    proof = [base64.b64decode(h) for h in value["proof"]]
    assert proof == NaiveTree(log.leaves).consistency_proof(1000, SIZE)
    assert value["roots"] == {
        "1000": base64.b64encode(log.root(1000)).decode(),
        str(SIZE): base64.b64encode(log.root(SIZE)).decode(),
    }
    assert value["checkpoints"][str(SIZE)] == log.checkpoint().decode()
    between = json.loads(cli("proof", "consistency", "--tiles", served, "--old", "300",
                             "--new", "65536").stdout)  # fmt: skip
    assert [base64.b64decode(h) for h in between["proof"]] == NaiveTree(
        log.leaves
    ).consistency_proof(300, 65_536)


def test_a_stale_checkpoint_whose_partial_tiles_were_deleted(tmp_path: Path) -> None:
    """A CDN still serves the checkpoint of size 300 while the log, now at 1000,
    has deleted the partial tiles of 300 (tlog-tiles allows it once the full tile
    exists): the client reads the prefix of the full tile and bundle instead."""
    naive = NaiveLog(ORIGIN, LOG_SEED)
    naive.append(entry(i) for i in range(1000))
    files = naive.publish(tmp_path / "log", sizes=[1000, 300], drop_partials=True)
    assert "tile/0/001.p/44" not in files and "tile/entries/001.p/44" not in files
    assert files["checkpoint"] == naive.checkpoint(300)
    with StaticServer(tmp_path) as server:
        prefix = server.url + "/log"
        proof, got = tmp_path / "p", tmp_path / "e"
        cli("proof", "inclusion", "--tiles", prefix, "--index", "299", "--out", str(proof),
            "--entry-out", str(got), "--vkey", naive.vkey)  # fmt: skip
        assert got.read_bytes() == entry(299)
        assert cli("verify", str(got), "--raw", "--proof", str(proof), "--vkey", naive.vkey).stdout


def test_a_checkpoint_with_extension_lines(tmp_path: Path) -> None:
    """tlog-checkpoint extension lines are opaque: kept, signed over, and carried
    verbatim into the tlog-proof (and cosigned by the naive writer's witness)."""
    naive = NaiveLog(ORIGIN, LOG_SEED, cosigners=[WITNESS], extensions=["timestamp 1760000000"])
    naive.append(entry(i) for i in range(20))
    naive.publish(tmp_path / "log")
    assert b"\ntimestamp 1760000000\n\n" in naive.checkpoint()
    with StaticServer(tmp_path) as server:
        prefix = server.url + "/log"
        assert cli("checkpoint", "--tiles", prefix, "--vkey", naive.vkey).stdout.encode() == (
            naive.checkpoint()
        )
        got = tmp_path / "e"
        ok = cli("verify", str(got.with_name("none")), "--raw", "--tiles", prefix, "--index", "3",
                 "--vkey", naive.vkey, check=False)  # fmt: skip
        assert ok.returncode == 2 and "file_not_found" in ok.stderr
        got.write_bytes(entry(3))
        ok = cli("verify", str(got), "--raw", "--tiles", prefix, "--index", "3", "--vkey",
                 naive.vkey, "--witness-vkey", WITNESS_VKEY, "--min-cosigners", "1")  # fmt: skip
        assert "is entry 3 of" in ok.stdout and "1 cosigners" in ok.stdout
        state = tmp_path / "state.json"
        mon = cli("monitor", "--tiles", prefix, "--vkey", naive.vkey, "--state", str(state),
                  "--witness", WITNESS_VKEY, "--once")  # fmt: skip
        assert " size 20 " in mon.stdout


def test_a_host_serving_a_wrong_tile_is_caught(tmp_path: Path) -> None:
    naive = NaiveLog(ORIGIN, LOG_SEED)
    naive.append(entry(i) for i in range(1000))
    naive.publish(tmp_path / "log")
    tile = tmp_path / "log/tile/0/001"
    data = bytearray(tile.read_bytes())
    data[40] ^= 0x80
    tile.write_bytes(bytes(data))
    bundle = tmp_path / "log/tile/entries/000"
    bundle.write_bytes(bundle.read_bytes().replace(b"foreign entry 7 ", b"foreign entry 8 "))
    with StaticServer(tmp_path) as server:
        prefix = server.url + "/log"
        out = tmp_path / "p"
        bad = cli("proof", "inclusion", "--tiles", prefix, "--index", "300", "--out", str(out),
                  check=False)  # fmt: skip
        assert (
            bad.returncode == 1
            and "tile_hash_mismatch" in bad.stderr
            and "tile/0/001" in bad.stderr
        )
        assert not out.exists()
        bad = cli("proof", "inclusion", "--tiles", prefix, "--index", "7", "--out", str(out),
                  "--entry-out", str(tmp_path / "e"), check=False)  # fmt: skip
        assert bad.returncode == 1 and "entry_hash_mismatch" in bad.stderr
        ok = cli("proof", "inclusion", "--tiles", prefix, "--index", "8", "--out", str(out),
                 "--entry-out", str(tmp_path / "e"), "--vkey", naive.vkey)  # fmt: skip
        assert ok.returncode == 0 and (tmp_path / "e").read_bytes() == entry(8)
        # A wrong right-edge tile: even `checkpoint` notices the tiles are not what was signed.
        assert cli("checkpoint", "--tiles", prefix).returncode == 0
        edge = tmp_path / "log/tile/0/003.p/232"
        edge.write_bytes(bytes(32) + edge.read_bytes()[32:])
        bad = cli("checkpoint", "--tiles", prefix, "--vkey", naive.vkey, check=False)
        assert bad.returncode == 1 and "tiles_root_mismatch" in bad.stderr


# --- bounded fetching: real servers that misbehave -------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, tuple[bytes, dict[str, str]]]] = {}

    def do_GET(self) -> None:
        if self.path not in self.files:
            self.send_response(404)
            self.end_headers()
            return
        body, headers = self.files[self.path]
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def custom_server() -> Iterator[tuple[str, dict[str, tuple[bytes, dict[str, str]]]]]:
    files: dict[str, tuple[bytes, dict[str, str]]] = {}
    handler = type("H", (_Handler,), {"files": files})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def test_gzip_bundles_are_read_and_gzip_bombs_refused(
    custom_server: tuple[str, dict[str, tuple[bytes, dict[str, str]]]], tmp_path: Path
) -> None:
    """tlog-tiles lets a log send bundles with Content-Encoding: gzip unasked; a
    bomb that inflates past the bundle limit is refused, not inflated."""
    url, files = custom_server
    naive = NaiveLog(ORIGIN, LOG_SEED)
    naive.append(entry(i) for i in range(300))
    for path, data in naive.files([300]).items():
        headers = {}
        if path.startswith("tile/entries/"):
            data, headers = gzip.compress(data), {"Content-Encoding": "gzip"}
        files["/log/" + path] = (data, headers)
    got = tmp_path / "e"
    cli("proof", "inclusion", "--tiles", url + "/log", "--index", "260", "--out", str(tmp_path / "p"),
        "--entry-out", str(got), "--vkey", naive.vkey)  # fmt: skip
    assert got.read_bytes() == entry(260)
    bomb = gzip.compress(b"\x00" * (64 << 20))
    files["/log/tile/entries/001.p/44"] = (bomb, {"Content-Encoding": "gzip"})
    bad = cli("proof", "inclusion", "--tiles", url + "/log", "--index", "260", "--out",
              str(tmp_path / "p"), "--entry-out", str(got), check=False)  # fmt: skip
    assert bad.returncode == 3 and "log_answer_too_large" in bad.stderr
    files["/log/checkpoint"] = (b"x" * (2 << 20), {})
    big = cli("checkpoint", "--tiles", url + "/log", check=False)
    assert big.returncode == 3 and "log_answer_too_large" in big.stderr


def test_a_server_that_never_answers_meets_the_deadline() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        # cli() fails the test if the command is still running after 60 s.
        out = cli("checkpoint", "--tiles", f"http://127.0.0.1:{port}/log", "--timeout", "2",
                  check=False, timeout=60)  # fmt: skip
    assert out.returncode == 3 and "log_fetch_timeout" in out.stderr


def test_a_gzip_bomb_is_never_inflated_past_the_cap(
    custom_server: tuple[str, dict[str, tuple[bytes, dict[str, str]]]],
) -> None:
    """In process, with tracemalloc: a 512 MiB bomb behind one small bundle costs
    about the bundle cap in memory, not the bomb's size."""
    import tracemalloc
    import zlib

    from remembrancer.cli.tiledlog import MAX_BUNDLE_BYTES, TiledLog
    from remembrancer.core.errors import PeerError
    from remembrancer.core.tiles import Tile

    url, files = custom_server
    packer = zlib.compressobj(1, wbits=31)  # gzip, built without holding 512 MiB
    zeros = bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(512)) + packer.flush()
    files["/log/tile/entries/000"] = (bomb, {"Content-Encoding": "gzip"})
    with TiledLog(url + "/log", timeout=60) as log:
        tracemalloc.start()
        try:
            with pytest.raises(PeerError) as e:
                log.fetch_bundles([Tile(0, 0)])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert e.value.code == "log_answer_too_large"
    assert peak < 3 * MAX_BUNDLE_BYTES, peak
