"""Hostile load over the network against real node processes (issue 19, cases 2 to 4).

Each case runs bounded in time and asserts its bound (docs/operations.md,
"Resource budget: memory, time and connections"):

- **connections**: a node under a 1,024 file limit with 1,000 half-sent
  requests open still answers ``/healthz``, and half-open connections are
  closed after the header deadline (``server`` in node.yaml);
- **memory**: a malicious peer process serves maximal entry bundles
  (256 entries of 65,535 bytes) for a 16,384-entry checkpoint; the mirroring
  node's peak RSS stays within its replication memory budget, and it fetches
  no bundle beyond the chunk it is verifying (``replication``);
- **time**: a peer claims to host a third node's log at a larger size and
  drips its answers; the victim's replica of the honest log still progresses
  within a deadline, and the staller's score drops (``replication``).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from remembrancer.demo.keys import demo_key
from remembrancer.demo.procs import NodeProcess, init_node
from remembrancer.demo.records import ledger_payload, make_record
from remembrancer.net.http import request
from remembrancer.testing.replicas import http, http_json, wait_for

NS = "dao:vaultmesh"

# Run the node under RLIMIT_NOFILE 1024 (soft and hard): the command after the
# wrapper is exec'd with the limit in force.
LOW_FILE_LIMIT = (
    sys.executable,
    "-c",
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024));"
    " os.execv(sys.argv[1], sys.argv[1:])",
)


def _write(node: NodeProcess, count: int, start: int = 0) -> list[str]:
    """Submit ``count`` records to ``node``'s log; their event hashes."""
    actor = demo_key("did:vm:actor:demo")
    w = [demo_key("did:vm:arbiter:prod-us-east-1"), demo_key("did:vm:arbiter:prod-eu-west-1")]

    def one(i: int) -> str:
        rec = make_record(NS, "ledger.append@1.0.0", ledger_payload(start + i, 200), actor, w,
                          timestamp=int(time.time()))  # fmt: skip
        http(f"{node.url}/v1/namespaces/{NS}/records", rec.leaf)
        return rec.event_hash_hex

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset), without blocking."""
    try:
        return sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _half_open(port: int, n: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """``n`` connections that each sent half a request (no end of headers)."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: victim\r\nX-Slow: ")
        out.append(s)
    return out


def _metric(node: NodeProcess, name: str, **labels: str) -> float:
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in http(f"{node.url}/metrics").decode().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for s in held:
            s.close()


def test_healthz_answers_under_1000_half_open_connections(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """Issue 19 case 4: 1,000 half-sent requests against a node under a 1,024 file
    limit; /healthz answers, the node writes records, and the half-open
    connections are closed (oldest first per client, the rest at the header
    deadline)."""
    header_timeout = 3.0
    node = init_node(tmp_path / "victim", origin_prefix="victim.test")
    node.prefix = LOW_FILE_LIMIT
    node.edit_config(scheduler={"enabled": False},
                     server={"header_timeout_s": header_timeout})  # fmt: skip
    node.start()
    try:
        limit = (Path("/proc") / str(node.proc.pid) / "limits").read_text()  # type: ignore[union-attr]
        assert any(line.startswith("Max open files") and line.split()[3:5] == ["1024", "1024"]
                   for line in limit.splitlines()), limit  # fmt: skip
        sockets += _half_open(node.port, 1000)
        t0 = time.monotonic()
        answer = request("GET", f"{node.url}/healthz", timeout=15, limit=1 << 16, trust_env=False)
        latency = time.monotonic() - t0
        assert answer.status == 200, answer.content
        print(f"/healthz under 1000 half-open connections: {latency * 1000:.1f} ms")
        # The honest workload still completes.
        assert len(_write(node, 20)) == 20
        assert http_json(f"{node.url}/v1/namespaces/{NS}")["size"] >= 20
        # Every half-open connection is closed within the header deadline (and slack).
        wait_for(lambda: all(_closed(s) for s in sockets), header_timeout * 3 + 10,
                 "the half-open connections to be closed")  # fmt: skip
        assert _metric(node, "remembrancer_http_connections_closed_total",
                       reason="half_open_per_client") > 900  # fmt: skip

        # A few half-open connections under the per-client cap: closed by the deadline.
        before = _metric(node, "remembrancer_http_connections_closed_total",
                         reason="header_timeout")  # fmt: skip
        opened = time.monotonic()
        late = _half_open(node.port, 3)
        sockets += late
        wait_for(lambda: all(_closed(s) for s in late), header_timeout * 3 + 10,
                 "the header deadline to close the half-open connections")  # fmt: skip
        waited = time.monotonic() - opened
        assert waited >= header_timeout * 0.9, waited  # closed by the deadline, not before
        after = _metric(node, "remembrancer_http_connections_closed_total",
                        reason="header_timeout")  # fmt: skip
        assert after - before >= 3
        print(f"3 half-open connections closed after {waited:.1f} s (header timeout"
              f" {header_timeout} s)")  # fmt: skip
        # A request whose headers are over the cap is answered 431 and closed.
        s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        sockets.append(s)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: victim\r\nX-Big: " + b"a" * 70_000)
        got = b""
        while chunk := s.recv(4096):
            got += chunk
        assert got.startswith(b"HTTP/1.1 431 "), got[:100]
        assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "headers_too_large"
    finally:
        node.stop()
