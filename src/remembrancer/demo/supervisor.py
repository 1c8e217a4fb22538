"""The supervisor behind ``remembrancer demo`` (``make run``): a local
federation (:mod:`remembrancer.demo.localfed`) run, fed and watched until
a signal or ``duration`` ends it.

1. It takes the data directory's lock (one supervisor per directory), stops
   processes a killed earlier run left behind, creates the three nodes on
   the first start and writes this run's configuration.
2. It starts the development TSA, anvil when it is installed (its chain is
   saved in the data directory, so EVM anchors stay verifiable across
   restarts), and the three nodes; then checks each log's head against the
   checkpoint saved at the previous stop (signature, and an RFC 6962
   consistency proof once the log grew), and says so.
3. It feeds a steady stream of signed records (:mod:`remembrancer.demo.workload`)
   to every node over HTTP, sends a cross-namespace message between nodes
   every ``message_seconds`` (notify, query, invoke in turn), writes proof
   files to ``proofs/`` once they exist (a record's tlog-proof cosigned by
   both witnesses, an anchor receipt of a checkpoint holding it, that
   anchor's federation receipt, a message delivery) and prints the commands
   that check them offline.
4. Every ``progress_seconds`` it prints one line read from the nodes' APIs:
   entries per node, cosignatures, anchors verified, final federation
   receipts, messages delivered; and saves each log's checkpoint.
5. On stop: feeding stops, the nodes get SIGTERM (they drain and exit 0;
   SIGKILL after 30 s), then the TSA and anvil; one summary line.

Nothing here is simulated: every record, proof, anchor and receipt comes
from the real processes, as a user of the API would get it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib.util
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.errors import ConfigError, PeerError, RemembrancerError, VerificationError
from remembrancer.core.note import parse_vkey
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import verify_consistency
from remembrancer.demo.anvil import find_anvil
from remembrancer.demo.localfed import (
    FEDERATION_ID,
    NAMES,
    QUORUM,
    DemoCadence,
    LocalFederation,
    NodeIdentity,
    choose_ports,
)
from remembrancer.demo.procs import NodeProcess
from remembrancer.demo.proofs import SAMPLE_NAMESPACE, ProofFiles
from remembrancer.demo.readings import Api, NodeReading, Snapshot, clock, metric_sum, shown
from remembrancer.demo.traffic import ROUTES, Feeder, send_message
from remembrancer.demo.workload import Workload
from remembrancer.program import invocation

STATE_FILE = "demo.json"
STATE_FORMAT = 1


MAX_RESTARTS = 3
READ_TIMEOUT = 2.0  # seconds per request when reading a node's figures
READ_DEADLINE = 4.0  # seconds a reading of all nodes waits at most


ANVIL_HELP = ("install it with `bash .ci/install-anvil.sh` (npm @foundry-rs/anvil) or Foundry's"
              " foundryup, or set REMEMBRANCER_ANVIL to its path, and start again")  # fmt: skip

Echo = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DemoOptions:
    data: Path = Path("demo-data")
    duration: float | None = None  # seconds of feeding; None: until stopped
    records_per_second: float = 30.0  # for the whole federation
    use_anvil: bool = True
    base_port: int | None = None  # None: 8080-8084 or free ports; 0: free ports
    progress_seconds: float = 5.0
    message_seconds: float = 20.0
    cadence: DemoCadence = field(default_factory=DemoCadence)


@dataclass(frozen=True, slots=True)
class DemoSummary:
    seconds: float
    admitted: dict[str, int]  # records admitted this run, per node
    messages_sent: int
    snapshot: Snapshot | None
    exit_codes: dict[str, int | None]
    consistent_logs: int  # logs proven to extend the previous run's checkpoint
    files: dict[str, Path]


def check_extends(api: Api, node: NodeProcess, namespace: str, vkey: str,
                  old_note: bytes) -> tuple[int, int]:  # fmt: skip
    """Check the node's current checkpoint of ``namespace`` against one saved
    earlier: both signed by the log's key ``vkey``, and the current one equal
    to it or proven (RFC 6962 consistency proof) to extend it.  Returns the
    old and new sizes; raises VerificationError if the log forked or shrank."""
    verifier = parse_vkey(vkey)
    old = open_checkpoint(old_note, verifier).checkpoint
    new_note = api.text(f"{node.url}/logs/{namespace}/checkpoint").encode()
    new = open_checkpoint(new_note, verifier).checkpoint
    if new.size < old.size:
        raise VerificationError(f"{new.origin} shrank from {old.size} to {new.size} entries",
                                code="demo_log_inconsistent")  # fmt: skip
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            raise VerificationError(f"{new.origin} has another root at size {old.size}",
                                    code="demo_log_inconsistent")  # fmt: skip
        return old.size, new.size
    answer = api.get(f"{node.url}/v1/namespaces/{namespace}/proofs/consistency"
                     f"?old={old.size}&new={new.size}")  # fmt: skip
    proof = [base64.b64decode(h) for h in answer["proof"]]
    try:
        verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except VerificationError as e:
        raise VerificationError(f"{new.origin} at size {new.size} does not extend its checkpoint"
                                f" at size {old.size}: {e.message}", code="demo_log_inconsistent") from e  # fmt: skip
    return old.size, new.size


class Supervisor:
    """Runs the demo; ``stop`` (set by a signal handler, or a test) ends it."""

    def __init__(self, options: DemoOptions, *, echo: Echo = print,
                 stop: threading.Event | None = None) -> None:  # fmt: skip
        self.options = options
        self.stop = stop or threading.Event()
        self._echo = echo
        self._echo_lock = threading.RLock()  # a signal handler may echo
        self._halt = threading.Event()  # stops this run's threads
        self._sample_lock = threading.Lock()
        self.sample: tuple[Record, dict[str, Any]] | None = None
        self.fed: LocalFederation | None = None
        self.identities: dict[str, NodeIdentity] = {}
        self.feeders: list[Feeder] = []
        self.helpers: list[threading.Thread] = []
        self.files: dict[str, Path] = {}  # the proof files written so far
        self.proof_files: ProofFiles | None = None
        self.messages_sent = 0
        self.consistent_logs = 0
        self.started = time.monotonic()
        self.ready = threading.Event()  # set once the federation is up and fed
        self.restarts: Counter[str] = Counter()
        self.no_anvil_reason = ""
        self._reading: set[str] = set()  # nodes with a reader in flight
        self._reading_lock = threading.Lock()
        self.failure: BaseException | None = None

    # --- output ---------------------------------------------------------------------
    def echo(self, text: str) -> None:
        """Print a line; a closed output (``| head``) never stops a run, nor
        keeps it from stopping its processes."""
        with self._echo_lock:
            try:
                self._echo(text)
            except OSError:
                pass

    def event(self, text: str) -> None:
        self.echo(f"[{clock(time.monotonic() - self.started)}] {text}")

    @property
    def data(self) -> Path:
        return self.options.data.resolve()

    @property
    def proofs(self) -> Path:
        return self.data / "proofs"

    @property
    def nodes(self) -> list[NodeProcess]:
        assert self.fed is not None
        return self.fed.nodes

    # --- the run ------------------------------------------------------------------------
    def run(self) -> DemoSummary:
        self.data.mkdir(parents=True, exist_ok=True)
        with self._locked():
            return self._run()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One supervisor per data directory (an advisory lock, released by
        the system if this process dies)."""
        path = self.data / ".lock"
        f: IO[str] = open(path, "a+")  # noqa: SIM115 (held for the whole run)
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "?"
                raise ConfigError(
                    f"another `remembrancer demo` (pid {holder}) is running on {self.data};"
                    " stop it first (Ctrl-C), or use another --data", code="demo_running",
                ) from None  # fmt: skip
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
            yield
        finally:
            f.close()

    def _run(self) -> DemoSummary:
        o = self.options
        state = self._load_state()
        ports, note = choose_ports(o.base_port)
        anvil = find_anvil() if o.use_anvil else None
        self.no_anvil_reason = "anvil is not installed"
        if anvil is not None and importlib.util.find_spec("eth_account") is None:
            anvil = None  # the nodes' eip155 rail needs it
            self.no_anvil_reason = ("anvil is installed but the `evm` extra is not (pip install"
                                    " 'remembrancer[evm]')")  # fmt: skip
        self.fed = fed = LocalFederation(self.data, ports, anvil_binary=anvil, cadence=o.cadence)
        left = fed.stop_leftovers()
        if left:
            self.echo(f"stopped processes left running by a run that was killed: {', '.join(left)}")
        if note:
            self.echo(f"note: {note}")
        if (self.data / "remembrancer.db").exists():
            self.echo(f"note: {shown(self.data / 'remembrancer.db')} is the log of the earlier"
                      " single-process demo; it is left as it is (the federation's logs are under"
                      f" {shown(self.data / 'nodes')})")  # fmt: skip
        created = fed.init()
        fed.configure()
        self.identities = fed.identities()
        self.proof_files = ProofFiles(self.proofs, fed, self.identities, event=self.event,
                                      echo=self.echo, files=self.files)  # fmt: skip
        self._check_identities(state)
        first = bool(created) or not state.get("checkpoints")
        self.echo(("Starting" if first else "Restarting") + " a local federation of three nodes"
                  f" (data in {shown(self.data)}, kept between runs)")  # fmt: skip
        self.started = time.monotonic()
        codes: dict[str, int | None] = {}
        snapshot: Snapshot | None = None
        serving = False
        try:
            self._start(fed, anvil)
            if not self.stop.is_set():
                self._check_previous(state)
                self._where_to_look(fed, anvil)
                serving = True
                snapshot = self._serve(state)
        finally:
            self._halt.set()
            for t in [*self.feeders, *self.helpers]:
                t.join(30)
            if serving:
                readings = self.read_nodes()
                snapshot = self.snapshot(readings)
                with contextlib.suppress(OSError):
                    self._save_checkpoints(state, readings)
            self.echo("stopping: the nodes drain their queues and exit, then the TSA"
                      + (" and anvil (its chain is saved)" if fed.anvil is not None else ""))  # fmt: skip
            codes = fed.stop()
            if serving:
                state["runs"] = int(state.get("runs", 0)) + 1
                state["last_stop"] = {"at": int(time.time()), "exit_codes": codes}
                self._write_state(state)
        if self.failure is not None:
            raise self.failure
        summary = DemoSummary(
            seconds=time.monotonic() - self.started,
            admitted={n: sum(f.admitted for f in self.feeders if f.node == n) for n in NAMES},
            messages_sent=self.messages_sent, snapshot=snapshot, exit_codes=codes,
            consistent_logs=self.consistent_logs, files=dict(self.files),
        )  # fmt: skip
        self._summary(summary)
        return summary

    def _start(self, fed: LocalFederation, anvil: str | None) -> None:
        t = time.monotonic()
        fed.start_tsa()
        fed.record_children()
        self.event(f"development TSA up at {fed.tsa_url} (its CA: {shown(fed.trust_bundle)})")
        if anvil is not None:
            fed.start_anvil()
            fed.record_children()
            self.event(f"anvil up at {fed.anvil_url} (EVM chain 31337; its state is kept in"
                       f" {shown(fed.anvil_dir / 'state.json')})")  # fmt: skip
        elif self.options.use_anvil:
            fix = (
                f"; to add it, {ANVIL_HELP}"
                if self.no_anvil_reason.endswith("not installed")
                else ""
            )
            self.event(f"{self.no_anvil_reason}: EVM anchoring is skipped (the TSA anchors every"
                       f" log){fix}")  # fmt: skip
        else:
            self.event("--no-anvil: EVM anchoring is skipped (the TSA anchors every log)")
        fed.start_nodes()
        fed.record_children()
        self.event(f"nodes {', '.join(NAMES)} up ({time.monotonic() - t:.1f} s)")

    def _where_to_look(self, fed: LocalFederation, anvil: str | None) -> None:
        c = self.options.cadence
        rails = "the TSA" + (" and anvil" if anvil else "")
        lines = [
            f"Federation {FEDERATION_ID}: quorum {QUORUM} of 3, hybrid collaborative anchoring"
            f" ({c.epoch_seconds} s epochs) to {rails}; every node witnesses and mirrors the"
            " others' logs.",
            "Where to look:",
        ]
        for name, n in zip(NAMES, fed.nodes, strict=True):
            lines.append(f"  {name:<6} explorer {n.url}/explorer   API {n.url}/v1/namespaces"
                         f"   log {shown(n.directory / 'node.log')}")  # fmt: skip
        n0 = fed.nodes[0].url
        lines += [
            f"  API reference {n0}/docs; federation status: remembrancer federation status --url {n0}",
            f"  development TSA {fed.tsa_url}" + (f"; anvil {fed.anvil_url}" if anvil else ""),
        ]
        rate = self.options.records_per_second
        feeding = (f"Feeding {rate:g} signed records/s to the three nodes (the seed's schemas,"
                   " demo actors and record witnesses)" if rate > 0 else "Not feeding records")  # fmt: skip
        stop = (f"for {self.options.duration:g} s" if self.options.duration is not None
                else "until Ctrl-C")  # fmt: skip
        lines.append(f"{feeding}; a message between namespaces every"
                     f" {self.options.message_seconds:g} s; running {stop} (the data stays).")  # fmt: skip
        self.echo("\n".join(lines))

    def _serve(self, state: dict[str, Any]) -> Snapshot | None:
        """Feed, message, write proofs and report until stopped."""
        o = self.options
        sizes = self._sizes()
        if o.records_per_second > 0:
            per_node = o.records_per_second / len(self.nodes)
            workers = max(1, min(8, math.ceil(per_node / 40)))
            for name, n in zip(NAMES, self.nodes, strict=True):
                for w in range(workers):
                    seed = name if workers == 1 else f"{name}-{w}"
                    workload = Workload(seed, start=sizes.get(name) or 0)
                    self.feeders.append(Feeder(name, n.url, per_node / workers, workload,
                                               self._halt, self._admitted))  # fmt: skip
        self.helpers = [
            threading.Thread(target=self._guard, args=(self._messenger,), name="messages", daemon=True),
            threading.Thread(target=self._guard, args=(self._checks, state), name="checks", daemon=True),
        ]  # fmt: skip
        for t in [*self.feeders, *self.helpers]:
            t.start()
        self.started = time.monotonic()
        self.ready.set()
        next_progress = self.started + o.progress_seconds
        snapshot: Snapshot | None = None
        while not self.stop.is_set() and self.failure is None:
            if o.duration is not None and time.monotonic() - self.started >= o.duration:
                break
            self._watch()
            if time.monotonic() >= next_progress:
                next_progress = max(next_progress + o.progress_seconds, time.monotonic())
                readings = self.read_nodes(min(READ_DEADLINE, o.progress_seconds / 2))
                snapshot = self.snapshot(readings)
                self.event(self._progress(snapshot))
                with contextlib.suppress(OSError):
                    self._save_checkpoints(state, readings)
            self.stop.wait(0.25)
        return snapshot or Snapshot({n: None for n in NAMES}, 0, 0, 0, 0)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        """Run a helper thread; an unexpected failure stops the demo with it."""
        try:
            fn(*args)
        except VerificationError as e:
            self.failure = e
        except Exception as e:  # reported, and the run goes on without it
            self.event(f"warning: {threading.current_thread().name} stopped: {e!r}")

    def _progress(self, s: Snapshot) -> str:
        line = s.line()
        refused: Counter[str] = Counter()
        for f in self.feeders:
            refused.update(f.refused)
        if refused:
            top = ", ".join(f"{c} x{k}" for c, k in refused.most_common(2))
            line += f" | refused {sum(refused.values())} ({top})"
        unreachable = sum(f.unreachable for f in self.feeders)
        if unreachable:
            line += f" | unreachable {unreachable}"
        return line

    def _admitted(self, node: str, record: Record, receipt: dict[str, Any]) -> None:
        if node == NAMES[0] and record.namespace == SAMPLE_NAMESPACE and self.sample is None:
            with self._sample_lock:
                if self.sample is None:
                    self.sample = (record, receipt)

    def _watch(self) -> None:
        """Restart a child that exited on its own (up to MAX_RESTARTS times)."""
        assert self.fed is not None
        fed = self.fed
        for what, proc in fed.children():
            if proc.poll() is None:
                continue
            self.restarts[what] += 1
            where = {"tsa": fed.tsa_dir / "tsa.log", "anvil": fed.anvil_dir / "anvil.log"}.get(
                what, fed.data / "nodes" / what / "node.log")  # fmt: skip
            if self.restarts[what] > MAX_RESTARTS:
                raise PeerError(f"{what} keeps exiting (code {proc.returncode}); see {shown(where)}",
                                code="demo_child_failed")  # fmt: skip
            self.event(f"{what} exited on its own (code {proc.returncode}; see {shown(where)});"
                       " starting it again")  # fmt: skip
            if what == "tsa":
                fed.start_tsa()
            elif what == "anvil":
                fed.start_anvil()
            else:
                node = next(n for n in fed.nodes if fed.name(n) == what)
                node.proc = None
                try:
                    node.start(timeout=90)
                except AssertionError as e:
                    raise PeerError(f"{what} did not start again: {str(e)[-800:]}",
                                    code="demo_child_failed") from e  # fmt: skip
            fed.record_children()

    # --- reading the nodes ----------------------------------------------------------------
    #
    # Each node is read by its own short-lived thread with a short per-request timeout,
    # and a reading waits for them only until a deadline: a node that does not answer
    # (stopped, frozen by SIGSTOP, overloaded) shows as "?" and never delays the figures
    # of the others or the next progress line.  At most one reader per node is in
    # flight, so a frozen node cannot pile up threads.

    def _read_node(self, name: str, node: NodeProcess) -> NodeReading:
        api = Api(timeout=READ_TIMEOUT)
        try:
            spaces = api.get(f"{node.url}/v1/namespaces")["namespaces"]
            entries = sum(int(s["size"]) for s in spaces)
            metrics = api.text(f"{node.url}/metrics")
            view = api.get(f"{node.url}/v1/explorer/anchors?limit=1")
            overview = api.get(f"{node.url}/v1/explorer/overview")
            notes = {}
            for ns in self.identities[name].vkeys if name in self.identities else ():
                with contextlib.suppress(RemembrancerError):
                    notes[ns] = api.text(f"{node.url}/logs/{ns}/checkpoint")
            return NodeReading(
                entries=entries,
                cosignatures=int(metric_sum(metrics, "remembrancer_witness_requests_total",
                                            'outcome="cosigned"')),
                delivered=int(metric_sum(metrics, "remembrancer_xns_delivered_total")),
                anchors=sum(int(r["statuses"].get("verified", 0))
                            for ns in view["namespaces"] for r in ns["rails"]),
                receipts=int(overview["totals"]["federation_receipts"]),
                checkpoints=notes,
            )  # fmt: skip
        finally:
            api.close()

    def read_nodes(self, deadline: float = READ_DEADLINE) -> dict[str, NodeReading | None]:
        """Every node's figures, read in parallel; None for a node that did not
        answer within ``deadline`` seconds (or is still busy with an earlier reading)."""
        results: dict[str, NodeReading | None] = {name: None for name in NAMES}
        threads: list[tuple[str, threading.Thread]] = []
        for name, n in zip(NAMES, self.nodes, strict=True):
            with self._reading_lock:
                if name in self._reading:
                    continue  # the previous reading of this node has not come back
                self._reading.add(name)

            def read(name: str = name, n: NodeProcess = n) -> None:
                try:
                    results[name] = self._read_node(name, n)
                except (RemembrancerError, KeyError, TypeError, ValueError):
                    pass
                finally:
                    with self._reading_lock:
                        self._reading.discard(name)

            t = threading.Thread(target=read, name=f"read-{name}", daemon=True)
            t.start()
            threads.append((name, t))
        until = time.monotonic() + deadline
        for _, t in threads:
            t.join(max(0.0, until - time.monotonic()))
        return {name: results[name] for name in NAMES}

    def _sizes(self) -> dict[str, int | None]:
        return {name: (r.entries if r else None) for name, r in self.read_nodes().items()}

    def snapshot(self, readings: dict[str, NodeReading | None] | None = None) -> Snapshot:
        """The progress figures, from the nodes' APIs (``readings``, or a fresh reading)."""
        readings = self.read_nodes() if readings is None else readings
        got = [r for r in readings.values() if r is not None]
        return Snapshot(
            {name: (r.entries if r else None) for name, r in readings.items()},
            cosignatures=sum(r.cosignatures for r in got),
            anchors_verified=sum(r.anchors for r in got),
            # every node holds every final receipt: the most any node reports
            receipts_final=max((r.receipts for r in got), default=0),
            messages_delivered=sum(r.delivered for r in got),
        )

    # --- state kept between runs ------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        path = self.data / STATE_FILE
        if not path.exists():
            return {"format": STATE_FORMAT, "federation_id": FEDERATION_ID,
                    "created_at": int(time.time())}  # fmt: skip
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable ({e}); move it away to start afresh",
                              code="demo_state_invalid") from e  # fmt: skip
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"{path}: not a demo state file of format {STATE_FORMAT}",
                              code="demo_state_invalid")  # fmt: skip
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        path = self.data / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
        tmp.replace(path)

    def _check_identities(self, state: dict[str, Any]) -> None:
        """The nodes' keys are the ones of the previous runs (the saved
        checkpoints are checked with the saved vkeys, not the nodes' word)."""
        saved = state.get("nodes") or {}
        for name, ident in self.identities.items():
            before = saved.get(name)
            if before is not None and before.get("vkeys") != ident.vkeys:
                raise ConfigError(
                    f"node {name}'s log keys changed since the last run ({shown(self.data / STATE_FILE)}"
                    " holds the old ones): restore its keys/node.key, or move the data directory"
                    " away to start afresh", code="demo_node_key_changed")  # fmt: skip
        state["nodes"] = {name: ident.to_dict() for name, ident in self.identities.items()}
        self._write_state(state)

    def _save_checkpoints(self, state: dict[str, Any],
                          readings: dict[str, NodeReading | None] | None = None) -> None:  # fmt: skip
        """Keep each log's latest signed checkpoint, checked with its key."""
        readings = self.read_nodes() if readings is None else readings
        saved = state.setdefault("checkpoints", {})
        for name, reading in readings.items():
            if reading is None:
                continue
            for ns, note in reading.checkpoints.items():
                vkey = self.identities[name].vkeys.get(ns)
                if vkey is None:
                    continue
                try:
                    size = open_checkpoint(note.encode(), parse_vkey(vkey)).checkpoint.size
                except RemembrancerError:
                    continue
                if size >= int((saved.get(f"{name}/{ns}") or {}).get("size", 0)):
                    saved[f"{name}/{ns}"] = {"size": size, "note": note,
                                             "saved_at": int(time.time())}  # fmt: skip
        self._write_state(state)

    def _check_previous(self, state: dict[str, Any]) -> None:
        """Each log's head against the checkpoint saved by the previous run."""
        saved = state.get("checkpoints") or {}
        if not saved:
            return
        api = Api()
        try:
            total = 0
            for name, n in zip(NAMES, self.nodes, strict=True):
                for ns, vkey in self.identities[name].vkeys.items():
                    entry = saved.get(f"{name}/{ns}")
                    if entry:
                        _, new = check_extends(api, n, ns, vkey, entry["note"].encode())
                        total += new
        finally:
            api.close()
        self.event(f"the {len(saved)} logs of the previous run are back ({total:,} entries): each"
                   " head is signed by its log's saved key and equals, or provably extends, the"
                   " checkpoint saved when the demo last ran")  # fmt: skip

    # --- messages -------------------------------------------------------------------------
    def _messenger(self) -> None:
        api = Api(timeout=30)
        try:
            if self._halt.wait(2.0):
                return
            turn = 0
            while not self._halt.is_set():
                route = ROUTES[turn % len(ROUTES)]
                turn += 1
                src, dst = self.nodes[route.src], self.nodes[route.dst]
                try:
                    record, view = send_message(api, src, dst, route, time.monotonic() + 20)
                except RemembrancerError as e:
                    self.event(f"message {route.source}@{NAMES[route.src]} -> {route.target}@"
                               f"{NAMES[route.dst]} not delivered: {e.explain()}")  # fmt: skip
                else:
                    self.messages_sent += 1
                    if self.messages_sent == 1:
                        assert self.proof_files is not None
                        self.proof_files.message(src, dst, route, record, view)
                if self._halt.wait(self.options.message_seconds):
                    return
        finally:
            api.close()

    # --- consistency and proof files ---------------------------------------------------------
    def _checks(self, state: dict[str, Any]) -> None:
        """Proof files once they exist, and the consistency of the grown logs
        with the previous run's checkpoints; prints the commands when done."""
        assert self.proof_files is not None
        files = self.proof_files
        api = Api(timeout=60)
        saved = dict(state.get("checkpoints") or {})
        pending_consistency = {k: v for k, v in saved.items() if v}
        have_record = have_anchor = False
        announced = False
        try:
            while not self._halt.wait(1.0):
                if pending_consistency:
                    self._check_grown(api, pending_consistency, saved)
                sample = self.sample
                if sample is not None and not have_record:
                    have_record = files.record(api, *sample)
                if sample is not None and have_record and not have_anchor:
                    have_anchor = files.anchor(api, *sample)
                if have_record and have_anchor and "message" in self.files and not announced:
                    announced = True
                    files.announce(self.started)
                if announced and not pending_consistency:
                    return
        finally:
            api.close()

    def _check_grown(self, api: Api, pending: dict[str, Any], saved: dict[str, Any]) -> None:
        for key in list(pending):
            name, ns = key.split("/", 1)
            node = self.nodes[NAMES.index(name)]
            try:
                old, new = check_extends(api, node, ns, self.identities[name].vkeys[ns],
                                         pending[key]["note"].encode())  # fmt: skip
            except VerificationError:
                raise
            except RemembrancerError:
                continue
            if new > old:
                del pending[key]
                self.consistent_logs += 1
        if not pending and saved:
            self.event(f"all {len(saved)} logs grew consistently: each new checkpoint is proven"
                       " (RFC 6962 consistency proof, verified here) to extend the one saved by the"
                       " previous run")  # fmt: skip

    def commands(self) -> list[str]:
        """The commands that check the proof files offline (as printed)."""
        assert self.proof_files is not None
        return self.proof_files.commands()

    # --- the end --------------------------------------------------------------------------
    def _summary(self, s: DemoSummary) -> None:
        admitted = sum(s.admitted.values())
        per = " · ".join(f"{n} {v:,}" for n, v in s.admitted.items())
        codes = {k: v for k, v in s.exit_codes.items() if k in NAMES}
        clean = all(v == 0 for v in codes.values())
        figures = ""
        if s.snapshot is not None:
            total = sum(v or 0 for v in s.snapshot.entries.values())
            figures = (f"; the logs hold {total:,} entries, {s.snapshot.anchors_verified:,} anchors"
                       f" verified, {s.snapshot.receipts_final:,} federation receipts final")  # fmt: skip
        again = "make run" if self.data == (Path.cwd() / "demo-data").resolve() else (
            f"{invocation()} demo --data {shown(self.data)}")  # fmt: skip
        self.echo(
            f"stopped after {clock(s.seconds)}"
            f" ({'every node exited cleanly' if clean else f'node exit codes {codes}'}):"
            f" {admitted:,} records admitted this run ({per}), {s.messages_sent}"
            f" message{'' if s.messages_sent == 1 else 's'} delivered{figures}. Data kept in"
            f" {shown(self.data)}; `{again}` starts the federation again and extends the same"
            " logs.")  # fmt: skip
