"""``remembrancer monitor``: follow a log as a monitor (auditor) does;
``remembrancer evidence verify``: check what it (or a witness) wrote, offline.

Each round the monitor fetches the log's checkpoint, verifies the log
signature (and, with ``--witness``, a quorum of cosignatures), then compares
it with the last checkpoint it verified (kept in ``--state``):

- first run: the right-edge tiles must hash to the root; the checkpoint is
  kept (trust on first use, like any monitor);
- same size and root: nothing to say;
- larger: the root of the old size, read from the new tree's tiles (each
  checked against the new root), must be the old root: the log only grew;
- same size, another root (a *split view*), or larger but not extending the
  old tree (a *fork*): an equivocation file
  (:mod:`remembrancer.federation.evidence`, conclusive offline);
- smaller (a *rollback*): an equivocation file when the old tree's tiles are
  still served and show the smaller checkpoint is not its prefix, otherwise a
  rollback file (:mod:`remembrancer.core.monitor`).

It prints one line per new checkpoint, rewrites the state file atomically
after each, and on evidence writes the file, prints its path and exits 1,
leaving the state at the last good checkpoint (a restart finds the same
evidence again).  Fetch failures, bad signatures and a missing cosigner
quorum prove nothing about the log: in follow mode they are warnings and the
next round tries again; with ``--once`` they end the run (exit 1 for
something that did not verify, 3 for the network).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

import click

from remembrancer.cli.common import errors_as_one_line, read_input
from remembrancer.core.cosignature import CosignatureVerifier, parse_cosigner_vkey
from remembrancer.core.errors import (
    ConfigError,
    FormatError,
    NotFoundError,
    PeerError,
    VerificationError,
)
from remembrancer.core.monitor import (
    MAX_STATE_BYTES,
    MonitorState,
    RollbackEvidence,
    open_state,
    verify_rollback,
)
from remembrancer.core.note import Verifier, parse_vkey

if TYPE_CHECKING:
    from remembrancer.cli.tiledlog import TiledLog


class LogMisbehaved(VerificationError):
    """The log signed something it cannot have signed honestly; ``details.evidence``."""

    default_code = "log_misbehaved"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ConfigError(f"cannot write {path}: {e.strerror}", code="file_unwritable") from e


@contextlib.contextmanager
def _locked(state_file: Path) -> Iterator[None]:
    """One monitor per state file: an exclusive lock on ``<state>.lock``."""
    try:
        fd = os.open(state_file.with_name(state_file.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot open the lock of {state_file}: {e.strerror}",
                          code="file_unwritable") from e  # fmt: skip
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise ConfigError(f"another monitor is using {state_file}",
                              code="monitor_state_locked") from e  # fmt: skip
        yield
    finally:
        os.close(fd)


def _slug(origin: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", origin)[:100]


class Monitor:
    """One followed log; :meth:`round` is one poll (the tiles client is given)."""

    def __init__(self, log: TiledLog, vkey: str, verifier: Verifier,
                 witnesses: list[CosignatureVerifier], quorum: int, state_file: Path,
                 evidence_dir: Path, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.log = log
        self.vkey = vkey
        self.verifier = verifier
        self.witnesses = witnesses
        self.quorum = quorum
        self.state_file = state_file
        self.evidence_dir = evidence_dir
        self.clock = clock
        self.state: MonitorState | None = None

    def load(self) -> None:
        if not self.state_file.exists():
            return
        data = read_input(str(self.state_file), limit=MAX_STATE_BYTES, what="state file")
        try:
            self.state, _ = open_state(data, self.vkey)
        except VerificationError as e:
            raise ConfigError(f"the state file's checkpoint does not verify: {e.message}",
                              code="monitor_state_invalid") from e  # fmt: skip

    def _now(self) -> int:
        return int(self.clock())

    def _evidence(
        self, kind: str, old: int, new: int, data: bytes, ext: str, what: str
    ) -> NoReturn:
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        assert self.state is not None
        path = self.evidence_dir / f"{_slug(self.state.origin)}.{kind}.{old}-{new}.{ext}"
        write_atomically(path, data)
        raise LogMisbehaved(f"{what}; evidence: {path}", code=f"log_{kind.replace('-', '_')}",
                            details={"evidence": str(path)})  # fmt: skip

    def round(self) -> str | None:
        """Poll once; the line to print for a new checkpoint, else None.

        Raises :class:`LogMisbehaved` after writing evidence; other
        RemembrancerErrors for what proves nothing (network, bad signatures).
        """
        from remembrancer.cli.tiledlog import open_head
        from remembrancer.core.rfc6962 import root_hash
        from remembrancer.federation.evidence.equivocation import EquivocationEvidence

        self.log.extend_deadline()
        note = self.log.checkpoint()
        head = open_head(note, self.log, self.verifier, self.witnesses, self.quorum)
        cp, old = head.checkpoint, self.state
        if old is None:
            head.reader.verify()
            what = "first seen"
        elif cp.size == old.size and cp.root_hash == old.root_hash:
            return None
        elif cp.size == old.size:
            evidence = EquivocationEvidence.build(self.vkey, old.note, note)
            self._evidence("split-view", old.size, cp.size, evidence.to_bytes(), "equivocation",
                           f"split view: two checkpoints of size {cp.size} with different roots")  # fmt: skip
        elif cp.size > old.size:
            if root_hash(old.size, head.reader) != old.root_hash:
                evidence = EquivocationEvidence.build(self.vkey, old.note, note, head.reader)
                self._evidence("fork", old.size, cp.size, evidence.to_bytes(), "equivocation",
                               f"fork: the tree of size {cp.size} does not extend the one of "
                               f"size {old.size}")  # fmt: skip
            what = f"consistent with size {old.size}"
        else:
            self._rollback(old, note, cp.size, cp.root_hash)
        seen = 1 if old is None else old.checkpoints_seen + 1
        self.state = MonitorState(cp.origin, self.vkey, note, self._now(), seen)
        write_atomically(self.state_file, self.state.to_bytes())
        stamp = datetime.fromtimestamp(self.state.observed_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        cosigned = (
            f", cosigned by {', '.join(c.name for c in head.cosigners)}" if head.cosigners else ""
        )
        root = base64.b64encode(cp.root_hash).decode()
        return f"{stamp} {cp.origin} size {cp.size} root {root} {what}{cosigned}"

    def _rollback(self, old: MonitorState, note: bytes, size: int, root: bytes) -> NoReturn:
        from remembrancer.core.rfc6962 import root_hash
        from remembrancer.core.tileclient import VerifiedTileReader
        from remembrancer.federation.evidence.equivocation import EquivocationEvidence

        what = f"rollback: the log serves size {size} after signing size {old.size}"
        try:  # Is the served tree even a prefix of the one seen? The old tiles may tell.
            reader = VerifiedTileReader(self.log.fetch_tiles, old.size, old.root_hash)
            forked = root_hash(size, reader) != root
        except (PeerError, NotFoundError, FormatError, VerificationError):
            forked = False
        if forked:
            evidence = EquivocationEvidence.build(self.vkey, old.note, note, reader)
            self._evidence("fork", old.size, size, evidence.to_bytes(), "equivocation",
                           f"{what}, and not a prefix of it (a fork)")  # fmt: skip
        rollback = RollbackEvidence(old.origin, self.vkey, old.note, note)
        verify_rollback(rollback)
        self._evidence("rollback", old.size, size, rollback.to_bytes(), "rollback", what)


@click.command()
@click.option("--url", default=None,
              help="A Remembrancer node's base URL (with --namespace), or a log's tlog-tiles prefix.")  # fmt: skip
@click.option("--namespace", default=None, help="The log's namespace on the node of --url.")
@click.option("--tiles", default=None, help="The tlog-tiles prefix of any log.")
@click.option("--vkey", required=True, help="The log's note verifier key (named after its origin).")
@click.option("--state", "state_path", required=True, type=click.Path(dir_okay=False),
              help="The state file: the last verified checkpoint (created on the first run).")  # fmt: skip
@click.option("--witness", multiple=True,
              help="A witness's cosignature/v1 vkey whose cosignature counts (repeatable).")  # fmt: skip
@click.option("--quorum", type=click.IntRange(0), default=None,
              help="Distinct --witness cosignatures each checkpoint needs (default: all of them).")  # fmt: skip
@click.option("--interval", type=click.FloatRange(0.1, 86400), default=60.0, show_default=True,
              help="Seconds between polls.")  # fmt: skip
@click.option("--once", is_flag=True, help="Poll once and exit (0 if all is well).")
@click.option("--evidence-dir", type=click.Path(file_okay=False), default=None,
              help="Where evidence files go (default: next to the state file).")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(1, 3600), default=60.0, show_default=True,
              help="Deadline for one poll's fetches, in seconds.")  # fmt: skip
@errors_as_one_line
def monitor(url: str | None, namespace: str | None, tiles: str | None, vkey: str,
            state_path: str, witness: tuple[str, ...], quorum: int | None, interval: float,
            once: bool, evidence_dir: str | None, timeout: float) -> None:  # fmt: skip
    """Follow a log (any tlog-tiles log, or a node's): verify each new checkpoint's
    signature, cosignatures and consistency with the last one seen, print one line
    per new checkpoint, keep the state across restarts.  On a split view, fork or
    rollback: write an evidence file (check it with `remembrancer evidence verify`)
    and exit 1."""
    from remembrancer.cli.tiledlog import TiledLog, log_prefix

    verifier = parse_vkey(vkey)
    witnesses = [parse_cosigner_vkey(w) for w in witness]
    need = len(witnesses) if quorum is None else quorum
    if need > len(witnesses):
        raise FormatError(f"--quorum {need} needs at least {need} --witness keys", code="usage")
    state_file = Path(state_path)
    if not state_file.parent.is_dir():
        raise NotFoundError(f"no directory {state_file.parent} for the state file",
                            code="file_not_found")  # fmt: skip
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    with _locked(state_file), TiledLog(log_prefix(url, namespace, tiles), timeout=timeout) as log:
        mon = Monitor(log, vkey, verifier, witnesses, need, state_file,
                      Path(evidence_dir) if evidence_dir else state_file.parent)  # fmt: skip
        mon.load()
        if once:
            line = mon.round()
            if line:
                click.echo(line)
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        while not stop.is_set():
            try:
                line = mon.round()
            except LogMisbehaved:
                raise
            except (PeerError, NotFoundError, FormatError, VerificationError) as e:
                click.echo(f"warning: {e.explain()} (next poll in {interval:g} s)", err=True)
            else:
                if line:
                    click.echo(line)
            stop.wait(interval)
    click.echo("stopped", err=True)


@click.group()
def evidence() -> None:
    """Check evidence files offline (equivocation, rollback)."""


@evidence.command("verify")
@click.argument("evidence_file", type=click.Path(dir_okay=False, allow_dash=True))
@errors_as_one_line
def evidence_verify(evidence_file: str) -> None:
    """Verify an evidence file offline: a split view or fork
    (remembrancer.equivocation/v1) or a rollback (remembrancer.rollback/v1).
    Exit 0 only if it proves what it claims."""
    from remembrancer.core.monitor import MAX_ROLLBACK_BYTES, ROLLBACK_HEADER
    from remembrancer.federation.evidence.equivocation import (
        EQUIVOCATION_HEADER,
        EquivocationEvidence,
        verify_equivocation,
    )

    data = read_input(evidence_file, limit=MAX_ROLLBACK_BYTES + 1024, what="evidence file")
    first = data.split(b"\n", 1)[0]
    if first == ROLLBACK_HEADER.encode():
        rollback = verify_rollback(RollbackEvidence.parse(data))
        click.echo(f"OK: rollback of {rollback.origin}: the log signed size {rollback.seen.size}, "
                   f"size {rollback.served.size} was served after it ({rollback.evidence_ref})")  # fmt: skip
    elif first == EQUIVOCATION_HEADER.encode():
        report = verify_equivocation(EquivocationEvidence.parse(data))
        a, b = report.checkpoint_a, report.checkpoint_b
        what = "split view" if report.conflict == "same_size" else "fork"
        click.echo(f"OK: {what} of {report.origin}: sizes {a.size} and {b.size} both signed by "
                   f"{report.log_key.did}, not one append-only log ({report.evidence_ref})")  # fmt: skip
    else:
        raise FormatError(f"{evidence_file} is neither {EQUIVOCATION_HEADER} nor {ROLLBACK_HEADER}",
                          code="evidence_unknown")  # fmt: skip


COMMANDS: list[click.Command] = [monitor, evidence]
