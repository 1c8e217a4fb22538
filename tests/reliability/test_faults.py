"""Faults with real processes under load (docs/reliability.md): ``kill -9`` of a
node, a full disk, a PostgreSQL restart, a rail (TSA) outage.

In each, records are submitted over HTTP by several threads the whole time
(:class:`~remembrancer.testing.load.RecordLoad`); a record counts as
acknowledged only when its receipt arrived.  Afterwards every acknowledged
record is in the log at its receipt's index, every checkpoint a receipt
carried is consistent with the final tree (proofs from the node, verified
here), and the node reported the fault and the recovery in ``/healthz``,
``/readyz`` and ``/metrics``.

The full-disk test needs to mount a tmpfs and the PostgreSQL test to run a
private server (``initdb`` as the ``postgres`` user) on its own port, so as
never to restart the shared server other tests use; both need root, and skip
without it, except under CI (``CI`` set), where they fail instead.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.note import parse_vkey
from remembrancer.core.rfc6962 import verify_consistency
from remembrancer.demo.procs import NodeProcess, anchor_to_tsa, free_port, init_node
from remembrancer.testing.load import RecordLoad

NS = "dao:vaultmesh"
pytestmark = pytest.mark.slow


def _cannot(reason: str) -> None:
    pytest.skip(reason)


# --- talking to the node ---------------------------------------------------------------------


def fetch(url: str, *, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            body = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def metric(node: NodeProcess, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_until(what: str, check: Any, timeout: float = 30, node: NodeProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = node.log_tail() if node is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)


def check_nothing_acknowledged_lost(node: NodeProcess, load: RecordLoad) -> int:
    """Every acknowledged record at its index; every receipt's checkpoint consistent
    with the final tree (the node's consistency proofs, verified here).  Returns
    the final size."""
    status, view = fetch(f"{node.url}/v1/namespaces/{NS}")
    assert status == 200, view
    final = view["size"]
    vkey = parse_vkey(node.info["vkeys"][NS])
    root = open_checkpoint(view["checkpoint"].encode(), vkey).checkpoint.root_hash
    assert load.acked, "nothing was acknowledged: the test tested nothing"
    for ack in load.acked:
        status, entry = fetch(f"{node.url}/v1/namespaces/{NS}/events/{ack.event_hash}")
        assert status == 200, (
            f"acknowledged record {ack.event_hash} (index {ack.index}) is lost: {entry}"
        )
        assert entry["index"] == ack.index
    seen = {ack.size: ack.checkpoint for ack in load.acked}
    for size, note in sorted(seen.items()):
        cp = open_checkpoint(note.encode(), vkey).checkpoint
        assert cp.size == size <= final
        if size == final:
            assert cp.root_hash == root
            continue
        status, proof = fetch(
            f"{node.url}/v1/namespaces/{NS}/proofs/consistency?old={size}&new={final}"
        )
        assert status == 200, proof
        hashes = [base64.b64decode(h) for h in proof["proof"]]
        verify_consistency(size, final, cp.root_hash, root, hashes)
    return final  # type: ignore[no-any-return]


def admin_token(node: NodeProcess) -> str:
    return (node.directory / "keys" / "admin.token").read_text().strip()


# --- kill -9 --------------------------------------------------------------------------------


def test_kill_9_of_a_node_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    node.start()
    try:
        with RecordLoad(node.url, threads=4, timeout=5) as load:
            for round_ in range(3):
                load.wait_for_acks(60 + 30 * round_)
                gone = load.refusals("transport")
                node.stop(signal.SIGKILL)
                # The clients see the node gone before it comes back.
                wait_until(
                    "the load to see the node gone", lambda g=gone: load.refusals("transport") > g
                )
                node.start()
                # After the restart the node reports the log it found, before any new record.
                # (the load goes on, so the gauge lies between two reads of the size)
                before = fetch(f"{node.url}/v1/namespaces/{NS}")[1]["size"]
                gauge = metric(node, "remembrancer_log_size", namespace=NS)
                after = fetch(f"{node.url}/v1/namespaces/{NS}")[1]["size"]
                assert 0 < before <= gauge <= after
                assert fetch(node.url + "/readyz")[0] == 200
                health = fetch(node.url + "/healthz")[1]
                assert health["status"] == "ok" and health["storage"]["status"] == "ok", health
            load.wait_for_acks(50)
        final = check_nothing_acknowledged_lost(node, load)
        assert final >= len(load.acked)
        # The client saw the crashes as transport errors only, never as a 5xx.
        assert not [k for k in load.refused if k[:1] == "5"], load.refused
    finally:
        node.stop()


# --- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, mounted for this test and unmounted after it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        _cannot("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        _cannot(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves about ``leave`` bytes free on ``disk``."""
    ballast = disk / "ballast"
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    with ballast.open("wb", buffering=0) as f:
        chunk = b"\0" * (64 << 10)
        todo = max(0, free - leave)
        while todo > 0:
            try:
                n = f.write(chunk[: min(len(chunk), todo)])
            except OSError as e:  # the node's writes took the rest meanwhile
                if e.errno != errno.ENOSPC:
                    raise
                break
            todo -= n or 0
    return ballast


def test_a_full_disk_refuses_writes_clearly_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    node.edit_config(data_dir=str(small_disk))
    node.start()
    try:
        with RecordLoad(node.url, threads=3, timeout=10) as load:
            load.wait_for_acks(100)
            ballast = _fill(small_disk, 256 << 10)  # the WAL soon needs more than that
            # Writes fail: a clear error, the process stays up, reads still work.
            wait_until("a storage_full refusal", lambda: any("storage_full" in k for k in load.refused),
                       node=node)  # fmt: skip
            assert node.proc is not None and node.proc.poll() is None
            codes = {k for k in load.refused if k[:1] == "5"}
            assert codes <= {"507 storage_full"}, load.refused
            full = next(
                e for e in reversed(load.errors) if e.get("error", {}).get("code") == "storage_full"
            )
            assert "full" in full["error"]["message"]
            health = fetch(node.url + "/healthz")[1]
            assert health["storage"]["status"] == "full", health
            assert health["storage"]["last_error"]["code"] == "storage_full"
            assert metric(node, "remembrancer_storage_errors_total", code="storage_full") >= 1
            assert metric(node, "remembrancer_storage_writable") == 0
            view = fetch(f"{node.url}/v1/namespaces/{NS}")
            assert view[0] == 200, view
            assert fetch(node.url + "/readyz")[0] == 200  # it still serves reads and proofs
            acked_while_full = load.acks()
            # Space comes back: writes resume without a restart.
            ballast.unlink()
            load.wait_for_acks(50)
            assert load.acks() > acked_while_full
            health = wait_until(
                "storage ok",
                lambda: (h := fetch(node.url + "/healthz")[1])["storage"]["status"] == "ok" and h,
            )
            assert metric(node, "remembrancer_storage_writable") == 1
        check_nothing_acknowledged_lost(node, load)
        # And after a restart too.
        assert node.stop() == 0
        node.start()
        check_nothing_acknowledged_lost(node, load)
    finally:
        node.stop()


# --- a PostgreSQL restart ----------------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL server of our own: initdb into a temp dir, its own port."""

    def __init__(self, directory: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not bins or os.geteuid() != 0 or shutil.which("runuser") is None:
            _cannot("a private PostgreSQL server needs its binaries and root (to run as postgres)")
        self.bin = bins[-1].parent
        self.dir = directory
        self.data = directory / "data"
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, "postgres", "postgres")
        self._as_postgres(self.bin / "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")  # fmt: skip

    def _as_postgres(self, *args: Any) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, args)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(f"{args[0]} failed: {done.stdout}\n{done.stderr}")
        return done

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-l", self.dir / "server.log",
                          "-o", opts, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def running(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pytest.importorskip("psycopg")
    # Not under pytest's temp tree: the postgres user must reach it, and other
    # pytest sessions reset that tree to mode 0700.
    base = Path(tempfile.mkdtemp(prefix="remembrancer-pg-"))
    os.chmod(base, 0o711)
    try:
        pg = PrivatePostgres(base / "pg")
        pg.start()
        try:
            yield pg
        finally:
            if pg.running():
                pg.stop("immediate")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.postgres
def test_a_postgresql_restart_under_load_loses_nothing_acknowledged(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    node.edit_config(storage=private_pg.dsn)
    node.start()
    try:
        with RecordLoad(node.url, threads=4, timeout=10) as load:
            for mode in ("immediate", "fast"):
                load.wait_for_acks(80)
                failed_before = metric(node, "remembrancer_storage_errors_total")
                refused = load.refusals("503")
                private_pg.stop(mode)  # a crash, then a clean restart
                # The outage shows: readyz 503 storage_unavailable, health and metrics.
                _, body = wait_until(
                    "readyz 503", lambda: (r := fetch(node.url + "/readyz"))[0] == 503 and r
                )
                assert body["error"]["code"] == "storage_unavailable", body
                wait_until(
                    "the storage errors",
                    lambda: fetch(node.url + "/healthz")[1]["storage"]["status"] == "unavailable",
                    node=node,
                )
                assert metric(node, "remembrancer_storage_errors_total") > failed_before
                # The clients see the outage (clear 503s) before the server comes back.
                wait_until("the load to see the outage",
                           lambda r=refused: load.refusals("503") >= r + 4, node=node)  # fmt: skip
                private_pg.start()
                wait_until("readyz 200", lambda: fetch(node.url + "/readyz")[0] == 200, node=node)
                load.wait_for_acks(80, timeout=60)
                assert fetch(node.url + "/healthz")[1]["storage"]["status"] == "ok"
            assert node.proc is not None and node.proc.poll() is None
            # While the server was down the load saw clear 503s, nothing else of 5xx.
            assert {k for k in load.refused if k[:1] == "5"} <= {
                "503 unavailable",
                "503 storage_unavailable",
            }, load.refused
        check_nothing_acknowledged_lost(node, load)
    finally:
        node.stop()


# --- a rail outage ------------------------------------------------------------------------------


class TsaProcess:
    """``remembrancer tsa serve`` as a process of its own."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory, self.port = directory, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> TsaProcess:
        log = (self.directory.parent / "tsa.log").open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "remembrancer.cli", "tsa", "serve", "--dir",
                                      str(self.directory), "--listen", f"127.0.0.1:{self.port}"],
                                     stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        log.close()
        wait_until("the TSA", self.answers)
        return self

    def answers(self) -> bool:
        try:
            return fetch(self.url + "ca.pem")[0] == 200
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


def test_a_rail_outage_backs_off_reports_and_recovers(tmp_path: Path) -> None:
    from remembrancer.anchoring.rfc3161.devtsa import DevTsa

    tsa = TsaProcess(tmp_path / "tsa", free_port())
    DevTsa(tsa.directory)  # the CA exists before the node reads its trust bundle
    node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    anchor_to_tsa(node, tsa.url, tsa.directory / "ca.pem", every="1s")
    doc = yaml.safe_load((node.directory / "namespaces.yaml").read_text())
    doc["namespaces"]["fin:clearing"]["cadence"] = {}
    (node.directory / "namespaces.yaml").write_text(yaml.safe_dump(doc))
    tsa.start()
    node.start()
    token = admin_token(node)
    labels = {"namespace": NS, "level": "cold", "target": "rfc3161:tsa"}
    try:
        with RecordLoad(node.url, threads=2, timeout=10) as load:
            load.wait_for_acks(30)
            wait_until(
                "a first anchor",
                lambda: metric(node, "remembrancer_anchors_succeeded_total", **labels) >= 1,
                node=node,
            )
            tsa.kill()
            # Forced attempts while the rail is down: each fails, the level backs off.
            failed = metric(node, "remembrancer_anchors_failed_total", **labels)
            for _ in range(4):
                load.wait_for_acks(5)  # the log grows, so every attempt is a real one
                status, out = fetch(f"{node.url}/v1/admin/anchor/{NS}", method="POST", token=token)
                assert status == 200, out
            assert metric(node, "remembrancer_anchors_failed_total", **labels) >= failed + 4
            health = fetch(node.url + "/healthz")[1]
            assert health["anchoring"][NS] == "backing_off", health
            level = fetch(f"{node.url}/v1/namespaces/{NS}")[1]["anchoring"]["levels"]["cold"]
            assert level["failures"] >= 4 and level["retry_at"] and level["last_error"], level
            assert fetch(node.url + "/readyz")[0] == 200  # records are still admitted
            acked_in_outage = load.acks()
            # The rail comes back: the next attempt anchors the newest checkpoint.
            tsa.start()
            load.wait_for_acks(5)
            succeeded = metric(node, "remembrancer_anchors_succeeded_total", **labels)
            status, out = fetch(f"{node.url}/v1/admin/anchor/{NS}", method="POST", token=token)
            assert status == 200, out
            wait_until("an anchor after the outage",
                       lambda: metric(node, "remembrancer_anchors_succeeded_total", **labels) > succeeded, node=node)  # fmt: skip
            assert fetch(node.url + "/healthz")[1]["anchoring"][NS] == "ok"
            assert load.acks() > acked_in_outage
        check_nothing_acknowledged_lost(node, load)
        receipts = fetch(f"{node.url}/v1/namespaces/{NS}/anchors?limit=500")[1]["receipts"]
        verified = [r for r in receipts if any(a["status"] == "verified" for a in r["anchors"])]
        assert verified and verified[-1]["size"] >= max(
            a.size for a in load.acked[:acked_in_outage]
        )
    finally:
        node.stop()
        tsa.kill()
