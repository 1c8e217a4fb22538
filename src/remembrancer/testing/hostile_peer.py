"""A federation peer that attacks by volume and by time, in a process of its own (tests only).

It holds a registry member's key, sends heartbeats to a victim node and
serves a tlog-tiles prefix ``/logs/<namespace>/`` for the log it announces;
it is believed about nothing, and attacks with what it costs the victim to
find that out (issue 19):

- ``max-bundles``: announces a checkpoint of its own log (``--origin``,
  signed with its key) at ``--size`` entries, with a new root in every
  heartbeat, and serves every entry bundle as a legal but maximal one
  (256 entries of 65,535 bytes, 16.8 MB); its hash tiles are zeros, so
  nothing it serves verifies;
- ``drip``: announces ``--origin`` (another node's log) at ``--size``
  entries, and answers every request one byte every ``--drip-seconds``:
  no read ever times out, the answer never ends.

Run::

    python -m remembrancer.testing.hostile_peer --mode drip --key K \\
        --federation-id F --victim URL --origin O --size N --dir D

It listens on 127.0.0.1 at a free port and writes ``{"url", "did"}`` to
``D/ready.json``.  ``GET /hostile/stats`` answers what it was asked
(``paths``: GET path -> count, ``heartbeats``, ``dripping``: answers in
progress).  Bounds: one cached bundle in memory, at most
:data:`MAX_DRIPS` answers dripping at once, :data:`TIMEOUT` seconds per
heartbeat sent.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.tiles import MAX_ENTRY_SIZE, TILE_WIDTH, parse_entries_path, parse_tile_path
from remembrancer.federation.protocol.contents import HeartbeatContent, LogSummary
from remembrancer.federation.protocol.wire import Message
from remembrancer.node.keyfile import read_key_file

__all__ = ["HostilePeer"]

MAX_DRIPS = 64
TIMEOUT = 5.0


class _State:
    def __init__(self, args: argparse.Namespace, key: SigningKey) -> None:
        self.args = args
        self.key = key
        self.paths: Counter[str] = Counter()
        self.heartbeats = 0
        self.dripping = 0
        self.lock = threading.Lock()
        self.drips = threading.Semaphore(MAX_DRIPS)
        self.root = secrets.token_bytes(32)
        self.note = self._sign()
        self._bundle: bytes | None = None

    def _sign(self) -> bytes:
        return sign_checkpoint(Checkpoint(self.args.origin, self.args.size, self.root), self.key)

    def new_root(self) -> None:
        with self.lock:
            self.root = secrets.token_bytes(32)
            self.note = self._sign()

    def bundle(self, width: int) -> bytes:
        """A legal entry bundle of ``width`` maximal entries (cached at full width)."""
        entry = MAX_ENTRY_SIZE.to_bytes(2, "big") + b"\xa5" * MAX_ENTRY_SIZE
        if width == TILE_WIDTH:
            if self._bundle is None:
                self._bundle = entry * TILE_WIDTH
            return self._bundle
        return entry * width


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    ns = state.args.origin.rsplit("/", 1)[-1]
    prefix = f"/logs/{ns}/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def _send(self, status: int, body: bytes, ctype: str = "application/octet-stream") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 1 << 20))
            self._send(202, b'{"seq":1}', "application/json")

        def do_GET(self) -> None:
            if self.path == "/hostile/stats":
                with state.lock:
                    body = json.dumps({"paths": dict(state.paths), "heartbeats": state.heartbeats,
                                       "dripping": state.dripping}).encode()  # fmt: skip
                return self._send(200, body, "application/json")
            with state.lock:
                state.paths[self.path] += 1
            if not self.path.startswith(prefix):
                return self._send(404, b"")
            if state.args.mode == "drip":
                return self._drip()
            path = self.path[len(prefix) :]
            try:
                if path == "checkpoint":
                    return self._send(200, state.note, "text/plain")
                if path.startswith("tile/entries/"):
                    return self._send(200, state.bundle(parse_entries_path(path).width))
                return self._send(200, bytes(32 * parse_tile_path(path).width))
            except Exception:  # a path that does not parse
                return self._send(404, b"")

        def _drip(self) -> None:
            """Headers at once, then one byte every ``--drip-seconds``, for ever."""
            if not state.drips.acquire(blocking=False):
                return self._send(503, b"")
            with state.lock:
                state.dripping += 1
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(1 << 16))
                self.end_headers()
                self.wfile.flush()
                for byte in state.note * 100:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(state.args.drip_seconds)
            except OSError:
                pass  # the victim gave up: as it should
            finally:
                with state.lock:
                    state.dripping -= 1
                state.drips.release()

    return Handler


def _heartbeats(state: _State) -> None:
    seq = int(time.time() * 1_000_000)
    while True:
        if state.args.mode == "max-bundles":
            state.new_root()  # a new root in every heartbeat: the victim starts over
        summary = LogSummary(state.args.origin, state.args.size, "sha256:" + state.root.hex())
        seq += 1
        msg = Message.sign(state.key, HeartbeatContent((summary,)),
                           federation_id=state.args.federation_id, seq=seq,
                           timestamp=int(time.time()), sender=state.key.did)  # fmt: skip
        req = urllib.request.Request(
            state.args.victim.rstrip("/") + "/federation/v1/messages", data=msg.to_bytes(),
            method="POST", headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                r.read()
            with state.lock:
                state.heartbeats += 1
        except OSError:
            pass
        time.sleep(state.args.heartbeat_seconds)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m remembrancer.testing.hostile_peer")
    p.add_argument("--mode", choices=("max-bundles", "drip"), required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--federation-id", required=True)
    p.add_argument("--victim", required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--heartbeat-seconds", type=float, default=1.0)
    p.add_argument("--drip-seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    state = _State(args, read_key_file(Path(args.key)))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(state))
    server.daemon_threads = True
    url = f"http://127.0.0.1:{server.server_address[1]}"
    ready = Path(args.dir) / "ready.json"
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "did": state.key.did}))
    os.replace(tmp, ready)
    threading.Thread(target=_heartbeats, args=(state,), daemon=True).start()
    server.serve_forever(0.1)


@dataclass
class HostilePeer:
    """A running hostile peer process (see the module docstring)."""

    proc: subprocess.Popen[bytes]
    url: str
    did: str

    @classmethod
    def start(cls, directory: Path, *, mode: str, key_file: Path, federation_id: str,
              victim: str, origin: str, size: int, port: int = 0,
              heartbeat_seconds: float = 1.0, drip_seconds: float = 2.0,
              timeout: float = 30.0) -> HostilePeer:  # fmt: skip
        directory.mkdir(parents=True, exist_ok=True)
        ready = directory / "ready.json"
        ready.unlink(missing_ok=True)
        log = (directory / "hostile.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "remembrancer.testing.hostile_peer", "--mode", mode,
             "--key", str(key_file), "--federation-id", federation_id, "--victim", victim,
             "--origin", origin, "--size", str(size), "--dir", str(directory),
             "--port", str(port), "--heartbeat-seconds", str(heartbeat_seconds),
             "--drip-seconds", str(drip_seconds)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"the hostile peer did not start: {directory / 'hostile.log'}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        return cls(proc, info["url"], info["did"])

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/hostile/stats", timeout=TIMEOUT) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> HostilePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()
