"""Several real ``remembrancer serve`` processes of one node over one
PostgreSQL schema (``ha.enabled``, docs/operations.md): one sequencer at a
time by a lease with a fencing epoch, reads served everywhere, writes
forwarded to the leader, failover after ``kill -9`` under load.

Every wait is on a condition with a deadline; the lease is short (3 s) so
the tests stay bounded."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remembrancer.core.rfc6962 import CompactRange, hash_leaf
from remembrancer.demo.procs import LOCAL_ANSWER, NodeProcess
from remembrancer.demo.records import example_record
from remembrancer.net.http import HttpFailure, request
from remembrancer.testing.ha import ha_group, ha_view, wait_for_leader
from remembrancer.testing.load import RecordLoad

NS = "dao:vaultmesh"
LEASE = 3.0


@pytest.fixture
def store_url(pg_dsn: str) -> Iterator[str]:
    import psycopg

    schema = f"ha_{os.getpid()}_{random.randrange(1 << 30)}"
    yield f"{pg_dsn}?schema={schema}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    made: list[NodeProcess] = []
    yield made
    for p in made:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.send_signal(signal.SIGCONT)
        p.stop(signal.SIGKILL)


def _get(url: str, timeout: float = 10) -> Any:
    answer = request("GET", url, timeout=timeout, limit=LOCAL_ANSWER, trust_env=False)
    return answer


def _post_record(url: str, i: int, *, wait: bool = True, headers: dict[str, str] | None = None) -> Any:  # fmt: skip
    rec = example_record(NS, i, timestamp=int(time.time()))
    suffix = "" if wait else "?wait=false"
    return request("POST", f"{url}/v1/namespaces/{NS}/records{suffix}", content=rec.leaf,
                   headers={"content-type": "application/json", **(headers or {})}, timeout=30,
                   limit=LOCAL_ANSWER, trust_env=False), rec  # fmt: skip


def _until(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def test_one_leader_reads_everywhere_writes_forwarded(
    tmp_path: Path, store_url: str, procs: list[NodeProcess]
) -> None:
    procs += ha_group(tmp_path, 3, store_url, lease_seconds=LEASE)
    a, b, c = procs
    a.start()
    b.start()
    c.start()
    # The first process took the lease; the others follow it, at the same epoch.
    assert wait_for_leader(procs) is a
    views = [ha_view(p) for p in procs]
    assert [v["role"] for v in views if v] == ["leader", "follower", "follower"]
    assert {v["epoch"] for v in views if v} == {views[0]["epoch"] if views[0] else None}
    assert all(v and v["leader"] == a.url for v in views)

    # Writes to any process: followers forward them to the leader.
    receipts = []
    for i, p in enumerate([b, c, a, b, c, a]):
        answer, rec = _post_record(p.url, 1000 + i)
        assert answer.status == 200, answer.content
        assert answer.headers.get("x-remembrancer-sequenced-by") == (None if p is a else a.url)
        receipt = json.loads(answer.content)
        assert receipt["eventHash"] == rec.event_hash_hex
        receipts.append(receipt)
        # Read-your-writes on every process, at once: the proof at the new size.
        for q in procs:
            proof = _get(f"{q.url}/v1/namespaces/{NS}/proofs/inclusion?index={receipt['index']}")
            assert proof.status == 200, (q.url, proof.content)
            assert json.loads(proof.content)["treeSize"] >= receipt["treeSize"]
    assert [r["index"] for r in receipts] == list(range(6))

    # Every process serves the same checkpoint, tiles, records, proofs and explorer pages.
    for path in (f"/logs/{NS}/checkpoint", f"/logs/{NS}/tile/0/000.p/6",
                 f"/logs/{NS}/tile/entries/000.p/6", f"/v1/namespaces/{NS}/records/3",
                 f"/v1/namespaces/{NS}/proofs/consistency?old=2&new=6",
                 f"/v1/explorer/namespaces/{NS}/records/3"):  # fmt: skip
        answers = [_get(p.url + path) for p in procs]
        assert [x.status for x in answers] == [200, 200, 200], (path, answers[0].content)
        if "explorer" in path:  # JSON stamped with the second it was made ("at")
            views = [{k: v for k, v in json.loads(x.content).items() if k != "at"} for x in answers]
            assert views[0] == views[1] == views[2], path
        else:
            assert len({x.content for x in answers}) == 1, path
    assert _get(f"{c.url}/logs/{NS}/checkpoint").content.split(b"\n")[1] == b"6"

    # wait=false on a follower: forwarded, and the leader's 202 comes back.
    answer, rec = _post_record(c.url, 2000, wait=False)
    assert answer.status == 202 and answer.headers.get("location", "").endswith(rec.event_hash_hex)
    _until(lambda: _get(f"{b.url}/v1/namespaces/{NS}/receipts/{rec.event_hash_hex}").status == 200,
           "the forwarded record's receipt on another follower")  # fmt: skip

    # A request that was already forwarded once is not forwarded again (no loops).
    answer, _ = _post_record(b.url, 3000, headers={"x-remembrancer-forwarded": "http://x"})
    assert answer.status == 503
    assert json.loads(answer.content)["error"]["code"] == "no_leader"
    assert answer.headers.get("retry-after") == "1"

    # A graceful stop releases the lease: a follower takes over without waiting it out,
    # resumes the log where it was, and the remaining follower forwards to it.
    assert a.stop(signal.SIGTERM) == 0
    new = wait_for_leader([b, c], timeout=30)
    other = c if new is b else b
    _until(lambda: (ha_view(other) or {}).get("leader") == new.url, "the follower to see it")
    answer, _ = _post_record(other.url, 4000)
    assert answer.status == 200, answer.content
    assert json.loads(answer.content)["index"] == 7


def test_paused_leader_is_fenced_off_and_steps_down(
    tmp_path: Path, store_url: str, procs: list[NodeProcess]
) -> None:
    """SIGSTOP the leader past its lease with a record in its batcher; another
    process takes over; SIGCONT: the old leader's append is refused by the
    store (the fencing epoch), and it steps down and forwards."""
    procs += ha_group(tmp_path, 2, store_url, lease_seconds=LEASE)
    a, b = procs
    # A gathers each batch for 4 s: the record below sits in its batcher across the pause.
    a.edit_config(limits={"batch_wait_ms": 4000})
    a.start()
    b.start()
    assert wait_for_leader(procs) is a
    epoch = (ha_view(a) or {})["epoch"]

    answer, rec = _post_record(a.url, 1, wait=False)
    assert answer.status == 202, answer.content
    assert a.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_for_leader([b], timeout=60) is b
        assert (ha_view(b) or {})["epoch"] == epoch + 1
    finally:
        a.proc.send_signal(signal.SIGCONT)

    # The record A had admitted is refused (fenced), never written.
    receipt_url = f"{a.url}/v1/namespaces/{NS}/receipts/{rec.event_hash_hex}"
    refused = _until(lambda: (r := _get(receipt_url)).status != 202 and r, "A's verdict")
    assert refused.status == 503, refused.content
    assert json.loads(refused.content)["error"]["code"] == "fenced"
    assert refused.headers.get("retry-after") == "1"
    assert _get(f"{b.url}/v1/namespaces/{NS}/events/{rec.event_hash_hex}").status == 404
    assert _get(f"{b.url}/logs/{NS}/checkpoint").status == 404  # nothing was ever written

    # A steps down: it follows B, and a write to A now reaches the log through B.
    view = _until(lambda: (v := ha_view(a)) and v["role"] == "follower" and v["leader"] and v,
                  "A to follow")  # fmt: skip
    assert view["leader"] == b.url and view["fenced_appends"] >= 1
    answer, _ = _post_record(a.url, 2)
    assert answer.status == 200, answer.content
    assert answer.headers.get("x-remembrancer-sequenced-by") == b.url
    assert json.loads(answer.content)["index"] == 0


def _checkpoint_fields(note: str) -> tuple[int, bytes]:
    lines = note.split("\n")
    return int(lines[1]), base64.b64decode(lines[2])


def test_failover_after_kill_9_under_load(
    tmp_path: Path, store_url: str, procs: list[NodeProcess]
) -> None:
    procs += ha_group(tmp_path, 3, store_url, lease_seconds=LEASE)
    for p in procs:
        p.start()
    leader = wait_for_leader(procs)
    served: dict[int, set[str]] = defaultdict(set)  # size -> checkpoint notes seen
    stop_watch = threading.Event()

    def watch() -> None:  # checkpoints served by every process, all along
        while not stop_watch.is_set():
            for p in procs:
                if p.proc is None or p.proc.poll() is not None:
                    continue
                try:
                    answer = request("GET", f"{p.url}/logs/{NS}/checkpoint", timeout=5,
                                     limit=LOCAL_ANSWER, trust_env=False)  # fmt: skip
                except HttpFailure:
                    continue
                if answer.status == 200:
                    note = answer.content.decode()
                    served[_checkpoint_fields(note)[0]].add(note)
            stop_watch.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    # Load through all three processes, as a round-robin load balancer spreads it.
    with RecordLoad([p.url for p in procs], threads=4, timeout=20) as load:
        load.wait_for_acks(100, timeout=120)
        assert leader.proc is not None
        killed_at = time.monotonic()
        leader.proc.kill()
        leader.proc.wait()
        survivors = [p for p in procs if p is not leader]
        new = wait_for_leader(survivors, timeout=60)
        takeover = time.monotonic() - killed_at
        load.urls = [p.url for p in survivors]  # the load balancer drops the dead one
        load.wait_for_acks(100, timeout=120)
    stop_watch.set()
    watcher.join(10)
    print(f"takeover after {takeover:.2f} s (lease {LEASE:g} s); acks {load.acks()},"
          f" refused {dict(load.refused)}")  # fmt: skip
    assert new is not leader

    from remembrancer.storage import open_store

    store = open_store(store_url)
    try:
        state = store.log_state(NS)
        assert state is not None
        leaves = store.read_entries(NS, 0, state.size)
        # Every acknowledged record is at its index.
        for ack in load.acked:
            found = store.find_event_hash(NS, bytes.fromhex(ack.event_hash.split(":")[1]))
            assert found is not None and found.index == ack.index, ack
            served[ack.size].add(ack.checkpoint)
        # No two checkpoints of the same size differ; the log is consistent with each.
        served[state.size].add(state.checkpoint.decode())
        sizes = sorted(served)
        assert all(len(notes) == 1 for notes in served.values()), {
            s: n for s, n in served.items() if len(n) > 1
        }
        tree = CompactRange()
        for i, leaf in enumerate(leaves):
            tree.append(hash_leaf(leaf))
            if i + 1 in served:
                assert _checkpoint_fields(next(iter(served[i + 1])))[1] == tree.root(), i + 1
        assert sizes[-1] == state.size and len(sizes) > 10
    finally:
        store.close()
