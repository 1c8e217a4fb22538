"""``remembrancer monitor`` following real logs: a foreign static tlog-tiles log
(the independent writer of ``testing.naive_tlog`` behind ``python -m
http.server``) that grows, forks, shows a split view and rolls back under it,
and a real node's log.  The monitor runs as a real process; restarts keep its
state; its evidence files verify offline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from remembrancer.core.monitor import MonitorState, RollbackEvidence, verify_rollback
from remembrancer.demo.procs import cli, init_node
from remembrancer.federation.evidence.equivocation import EquivocationEvidence, verify_equivocation
from remembrancer.testing.democheck import wait_for
from remembrancer.testing.naive_tlog import NaiveLog
from remembrancer.testing.static import StaticServer

ORIGIN = "audit.example.com/ledger"
SEED = b"\x51" * 32
W1 = ("witness-one.example.org", b"\x61" * 32, 1_760_000_000)
W2 = ("witness-two.example.org", b"\x62" * 32, 1_760_000_000)
W1_VKEY = NaiveLog.cosigner_vkey(W1[0], W1[1])
W2_VKEY = NaiveLog.cosigner_vkey(W2[0], W2[1])


def honest(size: int) -> NaiveLog:
    log = NaiveLog(ORIGIN, SEED, cosigners=[W1])
    log.append(b"record %d" % i for i in range(size))
    return log


def forked(size: int, at: int) -> NaiveLog:
    """The same log key, another history from entry ``at`` on."""
    log = NaiveLog(ORIGIN, SEED, cosigners=[W1])
    log.append((b"record %d" % i) if i != at else b"rewritten history" for i in range(size))
    return log


class Site:
    """One directory served by http.server; the log lives under /log."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = StaticServer(root).start()
        self.prefix = self.server.url + "/log"

    def publish(self, log: NaiveLog, sizes: list[int] | None = None) -> None:
        log.publish(self.root / "log", sizes)

    def write(self, files: dict[str, bytes]) -> None:
        for path, data in files.items():
            target = self.root / "log" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "www")
    yield s
    s.server.stop()


def monitor_args(site: Site, state: Path, *extra: str) -> list[str]:
    return ["monitor", "--tiles", site.prefix, "--vkey", honest(0).vkey, "--state", str(state),
            "--witness", W1_VKEY, *extra]  # fmt: skip


class Follower:
    """``remembrancer monitor`` in follow mode, its output collected line by line."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "remembrancer.cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = []
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            reader = threading.Thread(target=self._read, args=(stream, sink), daemon=True)
            reader.start()
            self.readers.append(reader)

    @staticmethod
    def _read(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line.rstrip("\n"))

    def line_with(self, text: str, timeout: float = 60) -> str:
        def found() -> str | None:
            if self.proc.poll() is not None and not any(text in x for x in self.out):
                raise RuntimeError(f"monitor exited {self.proc.returncode}: {self.err}")
            return next((x for x in self.out if text in x), None)

        try:
            return wait_for(found, timeout, f"a monitor line with {text!r}")
        except RuntimeError as e:
            raise AssertionError(str(e)) from e

    def exit_code(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        for reader in self.readers:  # all output read (EOF) before anyone looks at it
            reader.join(timeout)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.exit_code()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def test_follows_a_growing_log_and_catches_a_fork(site: Site, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    site.publish(honest(300))
    mon = Follower(monitor_args(site, state, "--interval", "0.2"))
    try:
        first = mon.line_with(" size 300 ")
        assert f" {ORIGIN} size 300 root " in first and "first seen" in first
        assert "cosigned by witness-one.example.org" in first
        site.publish(honest(1000))
        grown = mon.line_with(" size 1000 ")
        assert "consistent with size 300" in grown
        # The same key now signs a tree that rewrote entry 500: a fork.
        site.publish(forked(1200, at=500))
        assert mon.exit_code() == 1
        assert any("error: log_fork:" in x for x in mon.err), mon.err
        assert len([x for x in mon.out if " size " in x]) == 2  # one line per new checkpoint
    finally:
        mon.stop()
    [evidence_file] = tmp_path.glob("*.fork.1000-1200.equivocation")
    report = verify_equivocation(EquivocationEvidence.parse(evidence_file.read_bytes()))
    assert report.conflict == "prefix_mismatch"
    assert (report.checkpoint_a.size, report.checkpoint_b.size) == (1000, 1200)
    out = cli("evidence", "verify", str(evidence_file))
    assert out.stdout.startswith(f"OK: fork of {ORIGIN}: sizes 1000 and 1200")
    # The state stays at the last good checkpoint; a restart finds the fork again.
    assert MonitorState.from_bytes(state.read_bytes()).size == 1000
    again = cli(*monitor_args(site, state, "--once"), check=False)
    assert again.returncode == 1 and "log_fork" in again.stderr


def test_a_split_view(site: Site, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    site.publish(honest(300))
    assert "first seen" in cli(*monitor_args(site, state, "--once")).stdout
    site.publish(forked(300, at=7))
    out = cli(*monitor_args(site, state, "--once"), check=False)
    assert out.returncode == 1 and "error: log_split_view: split view" in out.stderr
    [evidence_file] = tmp_path.glob("*.split-view.300-300.equivocation")
    assert verify_equivocation(EquivocationEvidence.parse(evidence_file.read_bytes())).conflict == (
        "same_size"
    )
    assert cli("evidence", "verify", str(evidence_file)).stdout.startswith("OK: split view of")


def test_a_rollback(site: Site, tmp_path: Path) -> None:
    """The log (or its CDN) serves an older checkpoint after a newer one: a rollback
    file, since the smaller tree is a prefix of the one seen."""
    state = tmp_path / "state.json"
    site.publish(honest(1000))
    cli(*monitor_args(site, state, "--once"))
    site.publish(honest(1000), sizes=[1000, 600])  # every tile still there, checkpoint 600
    out = cli(*monitor_args(site, state, "--once"), check=False)
    assert out.returncode == 1 and "error: log_rollback: rollback" in out.stderr
    [evidence_file] = tmp_path.glob("*.rollback.1000-600.rollback")
    report = verify_rollback(RollbackEvidence.parse(evidence_file.read_bytes()))
    assert (report.seen.size, report.served.size) == (1000, 600)
    assert cli("evidence", "verify", str(evidence_file)).stdout.startswith(
        f"OK: rollback of {ORIGIN}: the log signed size 1000, size 600 was served"
    )
    # A tampered rollback file does not verify (exit 1): swap the two notes.
    lines = evidence_file.read_text().split("\n")
    lines[3], lines[4] = "seen " + lines[4][len("served ") :], "served " + lines[3][len("seen ") :]
    swapped = tmp_path / "swapped.rollback"
    swapped.write_text("\n".join(lines))
    bad = cli("evidence", "verify", str(swapped), check=False)
    assert bad.returncode == 1 and "rollback_not_smaller" in bad.stderr


def test_a_rollback_to_another_history_is_a_fork(site: Site, tmp_path: Path) -> None:
    """When the old tree's tiles are still served, a smaller checkpoint that is not
    their prefix is proven a fork (an equivocation file, not just a rollback)."""
    state = tmp_path / "state.json"
    site.publish(honest(1000))
    cli(*monitor_args(site, state, "--once"))
    site.write({"checkpoint": forked(600, at=3).checkpoint()})
    out = cli(*monitor_args(site, state, "--once"), check=False)
    assert out.returncode == 1 and "log_fork" in out.stderr and "not a prefix" in out.stderr
    [evidence_file] = tmp_path.glob("*.fork.1000-600.equivocation")
    report = verify_equivocation(EquivocationEvidence.parse(evidence_file.read_bytes()))
    assert (report.checkpoint_a.size, report.checkpoint_b.size) == (600, 1000)


def test_restarts_keep_state(site: Site, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    site.publish(honest(300))
    assert "first seen" in cli(*monitor_args(site, state, "--once")).stdout
    site.publish(honest(500))
    out = cli(*monitor_args(site, state, "--once"))
    assert " size 500 " in out.stdout and "consistent with size 300" in out.stdout
    assert cli(*monitor_args(site, state, "--once")).stdout == ""  # nothing new: no line
    saved = json.loads(state.read_text())
    assert (saved["size"], saved["checkpoints_seen"], saved["origin"]) == ("500", 2, ORIGIN)
    assert saved["checkpoint"] == honest(500).checkpoint().decode()
    assert not list(tmp_path.glob(".state.json.*.tmp"))  # the atomic write left nothing behind
    # A state file edited by hand is refused (exit 2) and left alone.
    saved["size"] = "400"
    state.write_text(json.dumps(saved))
    bad = cli(*monitor_args(site, state, "--once"), check=False)
    assert bad.returncode == 2 and "monitor_state_invalid" in bad.stderr
    assert json.loads(state.read_text())["size"] == "400"
    # A state whose checkpoint the log's key did not sign is refused.
    impostor = NaiveLog(ORIGIN, b"\x53" * 32)
    impostor.append(b"record %d" % i for i in range(500))
    saved["checkpoint"] = impostor.checkpoint().decode()
    saved["root"] = json.loads(MonitorState(ORIGIN, honest(0).vkey, impostor.checkpoint(), 0)
                               .to_bytes())["root"]  # fmt: skip
    saved["size"] = "500"
    state.write_text(json.dumps(saved))
    bad = cli(*monitor_args(site, state, "--once"), check=False)
    assert bad.returncode == 2 and "monitor_state_invalid" in bad.stderr and "verify" in bad.stderr
    # The state of another log (another key) is refused too.
    saved["checkpoint"] = honest(500).checkpoint().decode()
    saved["root"] = json.loads(MonitorState(ORIGIN, honest(0).vkey, honest(500).checkpoint(), 0)
                               .to_bytes())["root"]  # fmt: skip
    state.write_text(json.dumps(saved))
    assert cli(*monitor_args(site, state, "--once")).stdout == ""
    other = NaiveLog(ORIGIN, b"\x52" * 32).vkey
    args = monitor_args(site, state, "--once")
    args[args.index("--vkey") + 1] = other
    bad = cli(*args, check=False)
    assert bad.returncode == 2 and "monitor_state_mismatch" in bad.stderr


def test_cosignature_quorum(site: Site, tmp_path: Path) -> None:
    """Each checkpoint needs the quorum of --witness cosignatures; one that lacks it
    proves nothing against the log: --once fails (1), follow mode warns and waits."""
    state = tmp_path / "state.json"
    site.publish(honest(300))  # cosigned by W1 only
    both = monitor_args(site, state, "--once", "--witness", W2_VKEY)
    out = cli(*both, check=False)
    assert out.returncode == 1 and "cosigner_quorum_not_met" in out.stderr
    assert not state.exists()
    assert "first seen" in cli(*both, "--quorum", "1").stdout
    follow = Follower(monitor_args(site, state, "--witness", W2_VKEY, "--interval", "0.2"))
    try:
        wait_for(lambda: any("cosigner_quorum_not_met" in x for x in follow.err), 60,
                 "a warning about the quorum")  # fmt: skip
        two = NaiveLog(ORIGIN, SEED, cosigners=[W1, W2])
        two.append(b"record %d" % i for i in range(400))
        site.publish(two)
        line = follow.line_with(" size 400 ")
        assert "cosigned by witness-one.example.org, witness-two.example.org" in line
        # Another monitor on the same state file is refused while this one runs.
        locked = cli(*monitor_args(site, state, "--once"), check=False)
        assert locked.returncode == 2 and "monitor_state_locked" in locked.stderr
        follow.proc.send_signal(signal.SIGTERM)
        assert follow.exit_code() == 0
    finally:
        follow.stop()
    bad = cli(*monitor_args(site, state, "--once", "--quorum", "2"), check=False)
    assert bad.returncode == 2 and "--quorum 2" in bad.stderr


def test_follows_a_node_log(tmp_path: Path) -> None:
    """--url URL --namespace NS: a real node's log, read through the tiles it serves."""
    node = init_node(tmp_path / "alpha", origin_prefix="alpha.test")
    node.start()
    try:
        vkey = node.info["vkeys"]["dao:vaultmesh"]
        demo = node.directory / "keys" / "demo"

        def record(i: int, *where: str) -> None:
            cli("record", "--namespace", "dao:vaultmesh", "--schema", "ledger.append@1.0.0",
                "--payload", json.dumps({"stream": "ops", "data": {"i": i}}),
                "--actor-key", str(demo / "demo.key"),
                "--witness-key", str(demo / "prod-us-east-1.key"),
                "--witness-key", str(demo / "prod-eu-west-1.key"), *where)  # fmt: skip

        record_file = tmp_path / "rec.json"
        record(0, "--out", str(record_file))
        from remembrancer.cli.record import submit
        from remembrancer.core.record import Record

        submit(node.url, Record.from_bytes(record_file.read_bytes().strip()))
        # verify, proving now from the node's tiles (--url with --namespace).
        ok = cli("verify", str(record_file), "--url", node.url, "--namespace", "dao:vaultmesh",
                 "--index", "0", "--vkey", vkey)  # fmt: skip
        assert (
            ok.stdout.startswith("OK: sha256:")
            and "entry 0 of alpha.test/dao:vaultmesh" in ok.stdout
        )
        state = tmp_path / "state.json"
        args = ["monitor", "--url", node.url, "--namespace", "dao:vaultmesh", "--vkey", vkey,
                "--state", str(state), "--once"]  # fmt: skip
        assert "alpha.test/dao:vaultmesh size 1 " in cli(*args).stdout
        for i in range(1, 4):
            record(i, "--url", node.url)
        assert "size 4 root" in cli(*args).stdout
    finally:
        node.stop()
    assert os.path.getsize(state) > 0


def test_state_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (here: fsync) leaves the previous state file whole."""
    from remembrancer.cli.monitor import write_atomically
    from remembrancer.core.errors import ConfigError

    state = tmp_path / "state.json"
    write_atomically(state, b"old state")

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(ConfigError):
        write_atomically(state, b"new state, never complete")
    assert state.read_bytes() == b"old state"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
