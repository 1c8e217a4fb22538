"""A deterministic, in-process simulation of a federation of many nodes.

Every simulated node runs the project's real federation code; only the
network, the clock and the logs' storage are simulated:

- **Real**: :class:`~remembrancer.federation.service.FederationService` (message
  handling, heartbeats, peer scoring with
  :class:`~remembrancer.federation.registry.scoring.PeerScores`, proposals,
  countersigning, final receipts), its :class:`~remembrancer.federation.protocol.verify.MessageVerifier`
  (replay, timestamp window against the node's virtual clock, roles,
  signatures), :class:`~remembrancer.federation.transport.FederationClient`
  (timeouts, retries with backoff and jitter), the witnessing client
  :class:`~remembrancer.federation.witnessing.CheckpointWitnessing`, the witness
  decision :func:`~remembrancer.core.witness.check_add_checkpoint` and
  ``cosignature/v1`` cosignatures, checkpoints signed and opened by
  :mod:`remembrancer.core.checkpoint`, RFC 6962 consistency proofs, federation
  receipts checked by :func:`~remembrancer.federation.receipts.verify_federation_receipt`,
  and RFC 3161 anchors made by a development TSA in the process and
  re-verified by every peer with the real :class:`~remembrancer.anchoring.rfc3161.rail.Rfc3161Rail`.
- **Simulated**: the network (an httpx transport that delivers each request to
  the receiving node's code after a latency drawn from a seeded random
  generator, loses messages with a given probability, and cuts links during a
  partition: a lost message is never delivered and the sender sees its own
  timeout expire), the clock (an asyncio event loop whose time only advances
  when every task waits, see :class:`VirtualClockLoop`; each node reads it
  with a fixed offset, its clock skew), each node's log (an in-memory RFC 6962
  tree, :class:`SimLog`) and the small HTTP glue of the node's routes (the
  witness endpoint and the read API for anti-entropy).  Processing takes no
  virtual time, and message size does not change latency.
- **Anti-entropy** is not in the node yet; :class:`AntiEntropy` models it as
  the design says (DESIGN.md 3.10): a heartbeat that shows a newer log state
  than the node holds makes it fetch the checkpoint and a consistency proof
  from the sender (two request/response round trips over the read API), and
  it accepts the new state only when the log's signature and the proof verify.

Determinism: there are no threads (``asyncio.to_thread`` runs inline, see
:class:`_InlineExecutor`), no sockets and no wall clock in the simulated
logic; every random draw comes from generators seeded with ``seed`` in the
order of events, which the virtual clock fixes.  The same seed gives the
same :meth:`SimulationReport.to_dict` byte for byte (it includes a digest of
every transmission: time, ends, kind, status, size).  Only ``cpu_seconds``
(real processor time, for context) varies.

Entry points: :func:`simulate` (one federation of ``n`` nodes, the three
scenarios) and ``python -m bench --only simulation``; see docs/simulation.md.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import base64
import concurrent.futures
import datetime as dt
import hashlib
import json
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import parse_qs

import httpx

from remembrancer.anchoring.base import RailRegistry
from remembrancer.anchoring.rfc3161.chain import load_trust_bundle
from remembrancer.anchoring.rfc3161.devtsa import DevTsa
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail
from remembrancer.core.anchor import checkpoint_digest
from remembrancer.core.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from remembrancer.core.cosignature import Cosignature, CosignatureVerifier, cosign
from remembrancer.core.errors import ConfigError, PeerError, RemembrancerError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import NoteVerifier, Verifier
from remembrancer.core.rfc6962 import (
    CompactRange,
    NodeId,
    consistency_proof,
    hash_leaf,
    verify_consistency,
)
from remembrancer.core.witness import (
    WITNESS_STATUS,
    AddCheckpointRequest,
    CosignedState,
    WitnessRefusal,
    check_add_checkpoint,
    checkpoint_origin,
)
from remembrancer.federation.protocol.contents import (
    AnchorContent,
    CountersignContent,
    HeartbeatContent,
)
from remembrancer.federation.protocol.grammar import MAX_SEQ
from remembrancer.federation.protocol.wire import Message
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    verify_countersignature,
    verify_federation_receipt,
)
from remembrancer.federation.registry.model import ROLES, Peer, Registry
from remembrancer.federation.service import FederationService
from remembrancer.federation.transport import FederationClient
from remembrancer.federation.witnessing import CheckpointWitnessing, WitnessPeer
from remembrancer.storage.base import LogState
from remembrancer.storage.memory import MemoryStore

__all__ = [
    "EPOCH",
    "SCENARIOS",
    "SIZES",
    "AntiEntropy",
    "Byzantine",
    "FederationSimulation",
    "PartitionResult",
    "ReceiptResult",
    "SimLog",
    "SimNetwork",
    "SimNode",
    "SimulationConfig",
    "SimulationError",
    "SimulationReport",
    "VirtualClockLoop",
    "WitnessingResult",
    "run_virtual",
    "simulate",
]

EPOCH: Final = 1_764_100_000
"""Virtual time 0, as POSIX seconds (every node's clock reads ``EPOCH + t + skew``)."""
SIZES: Final = (5, 10, 25, 50, 100)
"""The federation sizes the benchmark simulates."""
FEDERATION_ID: Final = "sim-federation"
TSA_TARGET: Final = "rfc3161:sim-tsa"
_LOST_WAIT: Final = 30.0  # seconds a sender without a timeout waits for a lost message
_WITNESS_TIMEOUT: Final = 5.0  # CheckpointWitnessing's default

P = ParamSpec("P")
T = TypeVar("T")


class SimulationError(RemembrancerError):
    """The simulation cannot run as asked (``simulation_invalid``) or deadlocked
    (``simulation_stuck``: every task waits and nothing is scheduled)."""

    default_code = "simulation_invalid"
    fault = "operator"


# --------------------------------------------------------------------------
# Virtual time
# --------------------------------------------------------------------------


class _VirtualSelector:
    """Stands in for the loop's selector: waiting ``timeout`` seconds advances
    the virtual clock by exactly that, at once (there is no I/O to wait for)."""

    def __init__(self, loop: VirtualClockLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise SimulationError(
                "every task waits and no timer is scheduled", code="simulation_stuck"
            )
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs each submitted call at once on the calling thread, so that
    ``asyncio.to_thread`` in the real code stays deterministic (no threads are
    ever started)."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as e:  # handed to the awaiting task, as a thread would
            future.set_exception(e)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


class VirtualClockLoop(asyncio.base_events.BaseEventLoop):
    """An asyncio event loop on virtual time.

    ``time()`` starts at 0 and moves only when every ready callback has run:
    the loop then jumps to the next timer (``asyncio.sleep``, ``wait_for`` and
    ``asyncio.timeout`` all become instants).  There is no I/O: a loop with
    nothing ready and no timer raises :class:`SimulationError`
    ``simulation_stuck`` instead of blocking.  Calls sent to the default
    executor run inline.
    """

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        self.set_default_executor(_InlineExecutor())

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # nothing to wake: the loop never blocks


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a fresh :class:`VirtualClockLoop`; cancel what is left after it."""
    loop = VirtualClockLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


# --------------------------------------------------------------------------
# Configuration and results
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """The network model and the scenarios' parameters (docs/simulation.md).

    Each link's one-way base latency is drawn once, uniformly in
    ``latency_ms``, from the seed and the pair of nodes; each message adds an
    exponential jitter of mean ``jitter_ms`` and is lost with probability
    ``loss`` (independently in each direction).  Each node's clock is off by
    a fixed amount uniform in ``[-clock_skew_s, clock_skew_s]``.  ``quorum``
    defaults to a majority, ``n // 2 + 1`` (the proposer's own signature
    counts toward a receipt's; a checkpoint needs ``min(quorum, n - 1)``
    peer cosignatures).
    """

    seed: int = 1
    latency_ms: tuple[float, float] = (5.0, 80.0)
    jitter_ms: float = 5.0
    loss: float = 0.01
    clock_skew_s: float = 1.0
    quorum: int | None = None
    heartbeat_seconds: float = 2.0
    checkpoints: int = 3
    receipts: int = 3
    batch: int = 16
    partition_fraction: float = 0.4
    partition_seconds: float = 10.0
    heal: bool = True
    converge_within_s: float = 60.0

    def __post_init__(self) -> None:
        lo, hi = self.latency_ms
        checks = [
            (0 <= lo <= hi, "latency_ms must be (low, high) with 0 <= low <= high"),
            (self.jitter_ms >= 0, "jitter_ms must be >= 0"),
            (0 <= self.loss < 1, "loss must be in [0, 1)"),
            (self.clock_skew_s >= 0, "clock_skew_s must be >= 0"),
            (self.quorum is None or self.quorum >= 1, "quorum must be >= 1"),
            (self.heartbeat_seconds > 0, "heartbeat_seconds must be > 0"),
            (self.checkpoints >= 0 and self.receipts >= 0, "counts must be >= 0"),
            (self.batch >= 1, "batch must be >= 1"),
            (0 < self.partition_fraction < 1, "partition_fraction must be in (0, 1)"),
            (self.partition_seconds >= 0, "partition_seconds must be >= 0"),
            (self.converge_within_s > 0, "converge_within_s must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise SimulationError(message)

    def quorum_for(self, n: int) -> int:
        q = n // 2 + 1 if self.quorum is None else self.quorum
        if q > n:
            raise SimulationError(f"quorum {q} is larger than the federation ({n} nodes)")
        return q


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclass(frozen=True, slots=True)
class WitnessingResult:
    """Scenario 1: checkpoints of one log witnessed by every other node."""

    checkpoints: int
    quorum: int  # peer cosignatures a checkpoint needs
    messages: int  # add-checkpoint requests and answers, all checkpoints
    bytes: int
    quorum_ms: tuple[float | None, ...]  # per checkpoint: until the quorum-th verified
    # cosignature arrived (None: no quorum)
    round_ms: tuple[float, ...]  # per checkpoint: until CheckpointWitnessing first attached some
    cosignatures: tuple[int, ...]  # verified cosignatures attached, per checkpoint
    ideal_ms: float  # the quorum-th shortest round trip without jitter or loss

    @property
    def messages_per_checkpoint(self) -> float:
        return self.messages / self.checkpoints if self.checkpoints else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoints": self.checkpoints,
            "quorum": self.quorum,
            "messages": self.messages,
            "messages_per_checkpoint": self.messages_per_checkpoint,
            "bytes": self.bytes,
            "quorum_ms": list(self.quorum_ms),
            "round_ms": list(self.round_ms),
            "cosignatures": list(self.cosignatures),
            "ideal_ms": self.ideal_ms,
        }


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """Scenario 2: anchor proposals to final federation receipts."""

    receipts: int
    quorum: int
    messages: int  # anchor, countersign and receipt messages and their answers
    bytes: int
    quorum_ms: tuple[float | None, ...]  # per proposal: until the countersignature that made
    # quorum arrived (None: the proposal timed out, quorum_not_reached)
    final_ms: tuple[float | None, ...]  # per proposal: until propagate() returned, after
    # sending the final receipt to every peer
    signers: tuple[int, ...]  # verified countersignatures of active peers in each final receipt
    invalid_kept: tuple[int, ...]  # countersignatures in each final receipt that do not verify
    holders: tuple[int, ...]  # other nodes that verified and stored each final receipt
    ideal_ms: float
    refused: Mapping[str, int]  # refusal codes answered during the scenario

    @property
    def messages_per_receipt(self) -> float:
        return self.messages / self.receipts if self.receipts else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "receipts": self.receipts,
            "quorum": self.quorum,
            "messages": self.messages,
            "messages_per_receipt": self.messages_per_receipt,
            "bytes": self.bytes,
            "quorum_ms": list(self.quorum_ms),
            "final_ms": list(self.final_ms),
            "signers": list(self.signers),
            "invalid_kept": list(self.invalid_kept),
            "holders": list(self.holders),
            "ideal_ms": self.ideal_ms,
            "refused": dict(sorted(self.refused.items())),
        }


@dataclass(frozen=True, slots=True)
class PartitionResult:
    """Scenario 3: heartbeats and anti-entropy across a partition."""

    side: tuple[int, ...]  # the nodes cut off from the rest
    partition_s: float
    healed: bool
    initial_convergence_s: float | None  # from the start, before the partition
    convergence_s: float | None  # from the heal (or the end of the partition) to convergence
    stale_pairs: int  # (node, log) pairs still behind at the end
    messages_after_heal: int  # until convergence (or the deadline)
    heartbeat_messages_per_node_s: float  # heartbeats and answers, per node and virtual second
    fetches: int  # anti-entropy round trips, whole scenario
    failed_fetches: int  # of which failed (lost, timed out) or did not verify
    status_changes: Mapping[str, int]  # "<old>-><new>" -> count, over every node's scores

    def to_dict(self) -> dict[str, Any]:
        return {
            "side": list(self.side),
            "partition_s": self.partition_s,
            "healed": self.healed,
            "initial_convergence_s": self.initial_convergence_s,
            "convergence_s": self.convergence_s,
            "stale_pairs": self.stale_pairs,
            "messages_after_heal": self.messages_after_heal,
            "heartbeat_messages_per_node_s": self.heartbeat_messages_per_node_s,
            "fetches": self.fetches,
            "failed_fetches": self.failed_fetches,
            "status_changes": dict(sorted(self.status_changes.items())),
        }


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """What :func:`simulate` measured; :meth:`to_dict` is deterministic in the seed."""

    n: int
    seed: int
    quorum: int
    witnessing: WitnessingResult | None
    receipts: ReceiptResult | None
    partition: PartitionResult | None
    virtual_seconds: float
    messages: Mapping[str, int]  # by kind, whole run
    lost: int
    internal_errors: tuple[str, ...]  # faults inside simulated nodes (should be empty)
    trace_sha256: str  # over every transmission, in order
    phase_seconds: Mapping[str, float]  # virtual seconds of setup and each scenario
    cpu_seconds: Mapping[str, float] = field(default_factory=dict, compare=False)
    # real CPU seconds of setup and each scenario (context only: not deterministic)

    def to_dict(self) -> dict[str, Any]:
        """Everything but ``cpu_seconds``."""
        return {
            "n": self.n,
            "seed": self.seed,
            "quorum": self.quorum,
            "witnessing": self.witnessing.to_dict() if self.witnessing else None,
            "receipts": self.receipts.to_dict() if self.receipts else None,
            "partition": self.partition.to_dict() if self.partition else None,
            "virtual_seconds": self.virtual_seconds,
            "phase_seconds": dict(self.phase_seconds),
            "messages": dict(sorted(self.messages.items())),
            "lost": self.lost,
            "internal_errors": list(self.internal_errors),
            "trace_sha256": self.trace_sha256,
        }


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Served:
    status: int
    content_type: str
    body: bytes
    code: str | None = None  # the refusal code, for answers >= 400


@dataclass(frozen=True, slots=True)
class _Arrival:
    """A watched delivery: a countersign request, or an add-checkpoint answer."""

    at: float
    kind: str
    src: int  # who sent this (the request's sender, or the answering witness)
    dst: int
    status: int | None  # the answer's status (None for a request)


def _kind(method: str, path: str, body: bytes) -> str:
    if path == "/federation/v1/messages":
        # The wire form is canonical JSON: "type" is the envelope's last member.
        cut = body.rfind(b'"type":"')
        return body[cut + 8 : -2].decode("ascii", "replace") if cut >= 0 else "malformed"
    if path.endswith("/add-checkpoint"):
        return "add-checkpoint"
    if path.endswith("/checkpoint") and method == "GET":
        return "fetch-checkpoint"
    if "/proofs/consistency" in path:
        return "fetch-proof"
    return "other"


class SimNetwork:
    """Delivers simulated HTTP between the nodes, with latency, loss and partitions.

    Every transmission (a request or an answer) is counted by kind under the
    current :attr:`phase`, and hashed into the trace digest.
    """

    def __init__(self, config: SimulationConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self._rng = random.Random(f"remembrancer-sim/{config.seed}/network")
        self.nodes: dict[str, SimNode] = {}  # by host
        self._side: dict[int, int] = {}  # node index -> side of the partition; empty: none
        self.phase = "setup"
        self.messages: Counter[tuple[str, str]] = Counter()  # (phase, kind) -> transmissions
        self.bytes: Counter[str] = Counter()  # phase -> bytes
        self.lost = 0
        self.refused: Counter[tuple[str, str]] = Counter()  # (phase, code)
        self.arrivals: list[_Arrival] = []
        self.errors: list[str] = []
        self._trace = hashlib.sha256()

    # -- the model ---------------------------------------------------------------

    def base_latency(self, a: int, b: int) -> float:
        """The fixed one-way latency of the link between ``a`` and ``b``, in seconds."""
        lo, hi = self.config.latency_ms
        pair = f"{self.config.seed}/{min(a, b)}/{max(a, b)}".encode()
        u = int.from_bytes(hashlib.sha256(pair).digest()[:8], "big") / 2**64
        return (lo + (hi - lo) * u) / 1000.0

    def _delay(self, a: int, b: int) -> float:
        jitter = self.config.jitter_ms
        extra = self._rng.expovariate(1000.0 / jitter) if jitter > 0 else 0.0
        return self.base_latency(a, b) + extra

    def cut(self, a: int, b: int) -> bool:
        return bool(self._side) and self._side[a] != self._side[b]

    def _dropped(self, a: int, b: int) -> bool:
        lost = self._rng.random() < self.config.loss  # drawn even on a cut link: same sequence
        return lost or self.cut(a, b)

    def partition(self, side: Sequence[int], n: int) -> None:
        cut_off = set(side)
        self._side = {i: (1 if i in cut_off else 0) for i in range(n)}

    def heal(self) -> None:
        self._side = {}

    # -- bookkeeping -------------------------------------------------------------

    def _record(self, src: int, dst: int, kind: str, status: int | None, size: int) -> None:
        self.messages[(self.phase, kind if status is None else f"{kind} answer")] += 1
        self.bytes[self.phase] += size
        line = f"{self.loop.time():.9f} {src} {dst} {kind} {status} {size}\n"
        self._trace.update(line.encode())

    def count(self, phase: str, kinds: frozenset[str] | None = None) -> int:
        """Transmissions in ``phase`` (of request kinds ``kinds``, answers included)."""
        return sum(
            v
            for (p, k), v in self.messages.items()
            if p == phase and (kinds is None or k.removesuffix(" answer") in kinds)
        )

    def refusals(self, phase: str) -> dict[str, int]:
        return {code: v for (p, code), v in sorted(self.refused.items()) if p == phase}

    @property
    def trace_sha256(self) -> str:
        return self._trace.hexdigest()

    # -- delivery ----------------------------------------------------------------

    async def deliver(self, src: SimNode, request: httpx.Request) -> httpx.Response:
        dst = self.nodes.get(request.url.host)
        if dst is None:
            raise httpx.ConnectError(f"no simulated host {request.url.host}", request=request)
        body = await request.aread()
        kind = _kind(request.method, request.url.path, body)
        timeouts = request.extensions.get("timeout") or {}
        start = self.loop.time()
        self._record(src.index, dst.index, kind, None, len(body))
        if self._dropped(src.index, dst.index):
            self.lost += 1
            await asyncio.sleep(timeouts.get("connect") or _LOST_WAIT)
            raise httpx.ConnectTimeout(
                f"simulated: {kind} {src.name} -> {dst.name} lost", request=request
            )
        await asyncio.sleep(self._delay(src.index, dst.index))
        if kind == "countersign":
            self.arrivals.append(_Arrival(self.loop.time(), kind, src.index, dst.index, None))
        served = await dst.serve(request, body)
        if served.code is not None:
            self.refused[(self.phase, served.code)] += 1
        self._record(dst.index, src.index, kind, served.status, len(served.body))
        if self._dropped(dst.index, src.index):
            self.lost += 1
            waited = self.loop.time() - start
            await asyncio.sleep(max(0.0, (timeouts.get("read") or _LOST_WAIT) - waited))
            raise httpx.ReadTimeout(
                f"simulated: answer to {kind} {dst.name} -> {src.name} lost", request=request
            )
        await asyncio.sleep(self._delay(dst.index, src.index))
        if kind == "add-checkpoint":
            self.arrivals.append(
                _Arrival(self.loop.time(), kind, dst.index, src.index, served.status)
            )
        return httpx.Response(
            served.status,
            headers={"content-type": served.content_type},
            content=served.body,
            request=request,
        )


class _SimTransport(httpx.AsyncBaseTransport):
    """One node's way out: every request goes through the simulated network."""

    def __init__(self, network: SimNetwork, node: SimNode) -> None:
        self._network = network
        self._node = node

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._network.deliver(self._node, request)


# --------------------------------------------------------------------------
# Logs, witness glue, anti-entropy
# --------------------------------------------------------------------------


class _Namespaces:
    def __init__(self, names: Mapping[str, Any]) -> None:
        self._names = dict(names)

    def current(self) -> Mapping[str, Any]:
        return self._names


class SimLog:
    """One node's log of one namespace, in memory: an RFC 6962 tree whose
    checkpoints are signed with the node key under the origin.

    It offers what the federation service and the witnessing client read of
    the real sequencer: ``namespaces.current()``, ``head``, ``origin``,
    ``proof_consistency`` and ``attach_cosignatures``.
    """

    def __init__(self, namespace: str, origin: str, key: SigningKey) -> None:
        self.namespace = namespace
        self._origin = origin
        self._key = key
        self.namespaces = _Namespaces({namespace: None})
        self._range = CompactRange()
        self._nodes: dict[NodeId, bytes] = {}
        self._head: LogState | None = None
        self.cosigned: dict[int, bytes] = {}  # size -> checkpoint with the attached cosignatures
        self.first_attached: dict[int, float] = {}  # size -> virtual time of the first attach

    def append(self, count: int) -> LogState:
        """Append ``count`` entries and sign a checkpoint of the new size."""
        for _ in range(count):
            entry = f"{self._origin} entry {self._range.size}".encode()
            for level, index, h in self._range.append(hash_leaf(entry)):
                self._nodes[(level, index)] = h
        cp = Checkpoint(self._origin, self._range.size, self._range.root())
        self._head = LogState(self.namespace, cp.size, cp.root_hash, sign_checkpoint(cp, self._key))
        return self._head

    def read_nodes(self, ids: Sequence[NodeId]) -> list[bytes]:
        return [self._nodes[i] for i in ids]

    def head(self, namespace: str) -> LogState | None:
        return self._head if namespace == self.namespace else None

    def origin(self, namespace: str) -> str:
        return self._origin

    def proof_consistency(self, namespace: str, old: int, new: int) -> list[bytes]:
        return consistency_proof(old, new, self)

    def attach_cosignatures(self, namespace: str, size: int, note: bytes) -> bool:
        if self._head is None or size != self._head.size:
            return False
        self.cosigned[size] = note
        self.first_attached.setdefault(size, asyncio.get_running_loop().time())
        return True


class _Witness:
    """The witness side of ``POST /witness/add-checkpoint``: the real decision
    (:func:`check_add_checkpoint`) and cosignature, the node route's small glue
    (state per origin, the spec's status codes, ``text/x.tlog.size`` on 409)."""

    def __init__(
        self, name: str, key: SigningKey, clock: Callable[[], float],
        logs: Mapping[str, Sequence[NoteVerifier]],
    ) -> None:  # fmt: skip
        self.name = name
        self._key = key
        self._clock = clock
        self._logs = logs
        self.state: dict[str, CosignedState] = {}

    def add_checkpoint(self, body: bytes) -> _Served:
        try:
            req = AddCheckpointRequest.parse(body)
            origin = checkpoint_origin(req.note)
            state = self.state.get(origin)
            signed = check_add_checkpoint(req, self._logs.get(origin), state)
        except WitnessRefusal as e:
            if e.code == "witness_old_size_mismatch":
                size = f"{e.details['size']}\n".encode()
                return _Served(409, "text/x.tlog.size", size, e.code)
            status = WITNESS_STATUS.get(e.code, 400)
            return _Served(status, "application/json", _error(e), e.code)
        line = cosign(signed.body, self._key, self.name, int(self._clock())).to_line()
        cp = signed.checkpoint
        self.state[origin] = CosignedState(cp.size, cp.root_hash, req.note)
        return _Served(200, "text/plain; charset=utf-8", line.encode())


def _error(e: RemembrancerError) -> bytes:
    return json.dumps({"error": e.to_dict()}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Held:
    size: int
    root: bytes


class AntiEntropy:
    """Heartbeat-driven anti-entropy for one node (DESIGN.md 3.10).

    Registered with :meth:`FederationService.add_handler` for heartbeats: for
    each ``{origin, size, root}`` a peer reports that is newer than what this
    node holds, it fetches the log's checkpoint (``GET /logs/<ns>/checkpoint``)
    and, if it held an older state, a consistency proof
    (``GET /v1/namespaces/<ns>/proofs/consistency``) from that peer; it keeps
    the new state only if the log's signature and the proof verify.  One fetch
    per origin at a time; a failed fetch is retried at the next heartbeat.
    """

    def __init__(self, node: SimNode, on_update: Callable[[SimNode, str], None]) -> None:
        self.node = node
        self.held: dict[str, _Held] = {}
        self.fetches = 0  # round trips
        self.failed = 0  # fetches that failed (transport) or did not verify
        self._busy: set[str] = set()
        self._on_update = on_update

    def hold(self, origin: str, size: int, root: bytes) -> None:
        self.held[origin] = _Held(size, root)
        self._on_update(self.node, origin)

    async def on_heartbeat(self, sender: str, content: Any, raw: bytes) -> None:
        if not isinstance(content, HeartbeatContent):
            return
        peer = self.node.sim.by_did.get(sender)
        if peer is None:
            return
        for summary in content.logs:
            held = self.held.get(summary.origin)
            if summary.origin in self._busy or (held is not None and held.size >= summary.size):
                continue
            if summary.origin != peer.origin or summary.origin not in self.node.log_verifiers:
                continue  # fetched from its host only; a node that follows no log fetches nothing
            self._busy.add(summary.origin)
            self.node.loop.create_task(self._fetch(peer, summary.origin))

    async def _fetch(self, peer: SimNode, origin: str) -> None:
        try:
            self.fetches += 1
            base = f"{peer.endpoint}/logs/{peer.namespace}/checkpoint"
            answer = await self.node.http.get(base)
            if answer.status_code != 200:
                return
            verifier = self.node.log_verifiers[origin][0]
            cp = open_checkpoint(answer.content, verifier).checkpoint
            held = self.held.get(origin)
            if held is not None and cp.size <= held.size:
                return
            if held is not None and held.size > 0:
                self.fetches += 1
                answer = await self.node.http.get(
                    f"{peer.endpoint}/v1/namespaces/{peer.namespace}/proofs/consistency",
                    params={"old": held.size, "new": cp.size},
                )
                if answer.status_code != 200:
                    return
                proof = [base64.b64decode(h) for h in answer.json()["proof"]]
                verify_consistency(held.size, cp.size, held.root, cp.root_hash, proof)
                if self.held.get(origin) != held:  # another fetch got there first
                    return
            self.hold(origin, cp.size, cp.root_hash)
        except (httpx.HTTPError, RemembrancerError, ValueError, KeyError):
            self.failed += 1
        finally:
            self._busy.discard(origin)


@dataclass(frozen=True, slots=True)
class Byzantine:
    """What a byzantine node does with an anchor proposal it receives.

    It follows no log, so its (real) service never countersigns honestly;
    instead it sends, through its real federation client:

    - ``impersonate``: a countersign message in the name of another peer,
      signed with its own key, with the highest ``seq`` (the receiver must
      refuse it ``signature_invalid`` and keep the victim's replay state);
    - ``bad_countersignature``: a countersign message in its own name whose
      countersignature does not verify (accepted as a message; it must not
      count toward the quorum);
    - ``replay``: a second later, the proposal it received, re-sent unchanged
      to every other peer (each must refuse ``replayed``).
    """

    impersonate: bool = True
    bad_countersignature: bool = True
    replay: bool = True


class _ByzantineActor:
    def __init__(self, node: SimNode, behaviour: Byzantine) -> None:
        self.node = node
        self.behaviour = behaviour

    async def on_anchor(self, sender: str, content: Any, raw: bytes) -> None:
        if isinstance(content, AnchorContent):
            self.node.loop.create_task(self._attack(sender, content, raw))

    async def _attack(self, sender: str, content: AnchorContent, raw: bytes) -> None:
        node, sim = self.node, self.node.sim
        proposer = sim.by_did[sender]
        receipt = content.federation_receipt()
        now = int(node.clock())
        client = node.service.client
        if self.behaviour.impersonate:
            victim = next(p for p in sim.nodes if p is not node and p is not proposer)
            forged = Countersignature(victim.did, "witness", now,
                                      node.key.sign(receipt.signing_input(victim.did, "witness", now)))  # fmt: skip
            # The highest seq: if it were accepted, the victim could never send again.
            await client.send(proposer.endpoint, node.sign(
                CountersignContent(content.namespace, receipt.id, forged), sender=victim.did,
                seq=MAX_SEQ))  # fmt: skip
        if self.behaviour.bad_countersignature:
            bad = Countersignature(node.did, "witness", now, bytes(64))
            await client.send(
                proposer.endpoint, node.sign(CountersignContent(content.namespace, receipt.id, bad))
            )
        if self.behaviour.replay:
            await asyncio.sleep(1.0)
            others = [p for p in sim.nodes if p is not node and p is not proposer]
            await client.broadcast(others, raw)


# --------------------------------------------------------------------------
# Nodes and the federation
# --------------------------------------------------------------------------


class SimNode:
    """One simulated node: the real federation service and witnessing client
    around a :class:`SimLog`, reached through the simulated network."""

    def __init__(self, sim: FederationSimulation, index: int, key: SigningKey) -> None:
        self.sim = sim
        self.index = index
        self.loop = sim.loop
        self.name = f"n{index:03d}"
        self.host = f"{self.name}.sim"
        self.endpoint = f"http://{self.host}"
        self.did = f"did:vm:node:{self.name}"
        self.key = key
        self.namespace = f"sim:{self.name}"
        self.origin = f"{self.host}/{self.namespace}"
        self.witness_name = f"{self.host}/witness"
        self.skew = sim.rng.uniform(-sim.config.clock_skew_s, sim.config.clock_skew_s)
        self.log = SimLog(self.namespace, self.origin, key)
        self.log_verifiers: dict[str, list[NoteVerifier]] = {}
        self.follows = True  # a byzantine node follows no log (so never countersigns honestly)
        # Set by FederationSimulation.build():
        self.service: FederationService
        self.witnessing: CheckpointWitnessing
        self.witness: _Witness
        self.anti_entropy: AntiEntropy
        self.http: httpx.AsyncClient

    def clock(self) -> float:
        return EPOCH + self.loop.time() + self.skew

    def sign(self, content: Any, *, sender: str | None = None, seq: int | None = None) -> Message:
        """A message signed with this node's key: from this node, or (byzantine)
        claiming another ``sender`` and any ``seq``."""
        now = self.clock()
        seq = self.service.seq.next(now) if seq is None else seq
        return Message.sign(self.key, content, federation_id=FEDERATION_ID, seq=seq,
                            timestamp=int(now), sender=self.did if sender is None else sender)  # fmt: skip

    def client(
        self, like: FederationClient, transport: httpx.AsyncBaseTransport
    ) -> FederationClient:
        """A FederationClient with ``like``'s timeouts and retry policy, on the
        simulated network, with virtual time and a seeded jitter source."""
        rng = random.Random(
            f"remembrancer-sim/{self.sim.config.seed}/{self.index}/{len(self.sim.clients)}"
        )
        timeout = like._client.timeout
        made = FederationClient(
            timeout=like.timeout,
            connect_timeout=timeout.connect if timeout.connect is not None else like.timeout,
            retry=like.retry,
            transport=transport,
            clock=self.loop.time,
            rand=rng.random,
        )
        self.sim.clients.append(made)
        return made

    async def serve(self, request: httpx.Request, body: bytes) -> _Served:
        """The node's HTTP routes that the simulation uses."""
        path = request.url.path
        try:
            if request.method == "POST" and path == "/federation/v1/messages":
                reply = await self.service.handle(body, request.headers.get("content-type"))
                code = None
                if reply.status >= 400:
                    code = json.loads(reply.body)["error"]["code"]
                return _Served(
                    reply.status, reply.headers.get("Content-Type", ""), reply.body, code
                )
            if request.method == "POST" and path == "/witness/add-checkpoint":
                return self.witness.add_checkpoint(body)
            if request.method == "GET" and path == f"/logs/{self.namespace}/checkpoint":
                head = self.log.head(self.namespace)
                if head is not None:
                    return _Served(200, "text/plain; charset=utf-8", head.checkpoint)
            elif path == f"/v1/namespaces/{self.namespace}/proofs/consistency":
                query = parse_qs(request.url.query.decode("ascii"))
                old, new = int(query["old"][0]), int(query["new"][0])
                proof = self.log.proof_consistency(self.namespace, old, new)
                doc = {
                    "old": old,
                    "new": new,
                    "proof": [base64.b64encode(h).decode() for h in proof],
                }
                return _Served(200, "application/json", json.dumps(doc).encode())
            return _Served(404, "application/json", b'{"error":{"code":"not_found"}}', "not_found")
        except Exception as e:  # a fault in the simulated node: recorded, answered 500
            self.sim.network.errors.append(f"{self.name} {request.method} {path}: {e!r}")
            return _Served(500, "application/json", b'{"error":{"code":"internal"}}', "internal")


class _InProcessTsaRail(Rfc3161Rail):
    """The real RFC 3161 rail whose HTTP POST is a call to a TSA in the process."""

    tsa: DevTsa

    def _post(self, body: bytes) -> bytes:
        return self.tsa.respond(body)


class FederationSimulation:
    """A federation of ``n`` simulated nodes on one :class:`VirtualClockLoop`.

    Make it, :meth:`build` it and run scenarios inside :func:`run_virtual` (as
    :func:`simulate` does).
    ``tsa_dir`` holds the development TSA's CA and keys (made on first use);
    ``byzantine`` maps node indices (not 0, the first proposer) to behaviours.
    """

    def __init__(
        self,
        n: int,
        config: SimulationConfig,
        tsa_dir: Path,
        *,
        byzantine: Mapping[int, Byzantine] | None = None,
    ) -> None:
        if n < 2:
            raise SimulationError("a federation needs at least 2 nodes")
        self.n = n
        self.config = config
        self.quorum = config.quorum_for(n)
        self.tsa_dir = tsa_dir
        self.byzantine = dict(byzantine or {})
        if any(not 0 < i < n for i in self.byzantine):
            raise SimulationError("byzantine nodes are indices 1 .. n-1")
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(f"remembrancer-sim/{config.seed}/setup")
        self.network = SimNetwork(config, self.loop)
        self.clients: list[FederationClient] = []
        self.nodes: list[SimNode] = []
        self.by_did: dict[str, SimNode] = {}
        self._heads: dict[str, _Held] = {}  # origin -> the log's latest state
        self._stale: set[tuple[int, str]] | None = None  # tracked (node, origin) pairs behind
        self._converged: asyncio.Event | None = None
        self._converged_at: float | None = None
        self._phase_mark: tuple[str, int] = ("", 0)

    # -- building ------------------------------------------------------------------

    async def build(self) -> None:
        keys = [SigningKey(hashlib.sha256(f"remembrancer-sim node {i}".encode()).digest())
                for i in range(self.n)]  # fmt: skip
        self.nodes = [SimNode(self, i, keys[i]) for i in range(self.n)]
        self.by_did = {node.did: node for node in self.nodes}
        self.network.nodes = {node.host: node for node in self.nodes}
        peers = tuple(Peer(node.did, node.endpoint, node.key.public, "active", frozenset(ROLES))
                      for node in self.nodes)  # fmt: skip
        registry = Registry(FEDERATION_ID, self.quorum, "independent", peers)
        verifiers: dict[str, list[NoteVerifier]] = {
            node.origin: [Verifier(node.origin, node.key.public)] for node in self.nodes
        }
        tsa_clock = self._tsa_clock
        self.tsa = DevTsa(self.tsa_dir, key_type="rsa", clock=tsa_clock)
        trust = load_trust_bundle(self.tsa.ca_cert_path)
        for node in self.nodes:
            node.follows = node.index not in self.byzantine
            node.log_verifiers = dict(verifiers) if node.follows else {}
            rails = RailRegistry()
            rails.register(Rfc3161Rail(TSA_TARGET, None, trust))
            service = FederationService(
                registry, node.did, node.key, MemoryStore(), node.log, rails,
                node.log_verifiers, clock=node.clock,
                heartbeat_seconds=self.config.heartbeat_seconds,
            )  # fmt: skip
            transport = _SimTransport(self.network, node)
            real = (service.client, service.beats)
            service.client = node.client(real[0], transport)
            service.beats = node.client(real[1], transport)
            for unused in real:
                await unused.aclose()
            node.service = service
            node.http = httpx.AsyncClient(transport=transport, timeout=_WITNESS_TIMEOUT)
            node.witness = _Witness(node.witness_name, node.key, node.clock, node.log_verifiers)
            witnesses = [
                WitnessPeer(p.witness_name, f"{p.endpoint}/witness",
                            CosignatureVerifier(p.witness_name, p.key.public))
                for p in self.nodes if p is not node
            ]  # fmt: skip
            node.witnessing = CheckpointWitnessing(
                node.log, witnesses, quorum=self.witness_quorum, timeout=_WITNESS_TIMEOUT
            )
            node.witnessing._client = httpx.AsyncClient(
                transport=transport, timeout=_WITNESS_TIMEOUT
            )
            node.witnessing._loop = self.loop
            node.anti_entropy = AntiEntropy(node, self._on_update)
            service.add_handler(HeartbeatContent, node.anti_entropy.on_heartbeat)
            if node.index in self.byzantine:
                actor = _ByzantineActor(node, self.byzantine[node.index])
                service.add_handler(AnchorContent, actor.on_anchor)
            self.append(node)

    def append(self, node: SimNode) -> LogState:
        """Append a batch to ``node``'s log; it holds the new state at once."""
        head = node.log.append(self.config.batch)
        self._heads[node.origin] = _Held(head.size, head.root_hash)
        node.anti_entropy.hold(node.origin, head.size, head.root_hash)
        return head

    def _tsa_clock(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(EPOCH + self.loop.time(), dt.UTC)

    @property
    def witness_quorum(self) -> int:
        return min(self.quorum, self.n - 1)

    async def close(self) -> None:
        for node in self.nodes:
            await node.service.stop()  # closes its two clients
            await node.witnessing.stop()
            await node.http.aclose()

    # -- phases and measurements -------------------------------------------------------

    def _begin(self, phase: str) -> None:
        self.network.phase = phase
        self.network.arrivals.clear()

    def _ideal(self, proposer: int, rank: int) -> float:
        """The ``rank``-th shortest round trip from ``proposer`` (ms, base latencies)."""
        trips = sorted(2 * self.network.base_latency(proposer, p.index)
                       for p in self.nodes if p.index != proposer)  # fmt: skip
        return _ms(trips[rank - 1]) if rank >= 1 else 0.0

    async def _quiet(self, limit: float = 60.0) -> None:
        """Let every other task finish (deliveries, retries), up to ``limit`` seconds."""
        end = self.loop.time() + limit
        me = asyncio.current_task()
        while self.loop.time() < end:
            busy = [t for t in asyncio.all_tasks(self.loop) if t is not me and not t.done()]
            if not busy:
                return
            await asyncio.sleep(0.05)

    # -- scenario 1: witnessing ----------------------------------------------------------

    async def run_witnessing(self) -> WitnessingResult:
        """Checkpoints of node 0's log, each witnessed by every other node."""
        self._begin("witnessing")
        node = self.nodes[0]
        others = [p for p in self.nodes if p is not node]
        cosigners = [CosignatureVerifier(p.witness_name, p.key.public) for p in others]
        names = {p.witness_name: p.index for p in others}
        quorum_ms: list[float | None] = []
        round_ms: list[float] = []
        counted: list[int] = []
        for _ in range(self.config.checkpoints):
            head = self.append(node)
            self.network.arrivals.clear()
            start = self.loop.time()
            await node.witnessing.witness_latest(node.namespace)
            round_ms.append(_ms(node.log.first_attached.get(head.size, self.loop.time()) - start))
            note = node.log.cosigned.get(head.size)
            verified: tuple[Cosignature, ...] = ()
            if note is not None:
                opened = open_checkpoint(note, node.log_verifiers[node.origin][0], cosigners)
                verified = opened.cosignatures
            signers = {names[c.name] for c in verified}
            counted.append(len(signers))
            times = sorted(a.at for a in self.network.arrivals
                           if a.kind == "add-checkpoint" and a.status == 200 and a.src in signers)  # fmt: skip
            q = self.witness_quorum
            quorum_ms.append(_ms(times[q - 1] - start) if len(times) >= q else None)
            await asyncio.sleep(1.0)
        await self._quiet()
        return WitnessingResult(
            checkpoints=self.config.checkpoints,
            quorum=self.witness_quorum,
            messages=self.network.count("witnessing"),
            bytes=self.network.bytes["witnessing"],
            quorum_ms=tuple(quorum_ms),
            round_ms=tuple(round_ms),
            cosignatures=tuple(counted),
            ideal_ms=self._ideal(0, self.witness_quorum),
        )

    # -- scenario 2: federation receipts ---------------------------------------------------

    async def run_receipts(self) -> ReceiptResult:
        """Anchor proposals by honest nodes in turn, each to a final federation receipt."""
        self._begin("receipts")
        proposers = [p for p in self.nodes if p.index not in self.byzantine]
        keys = {p.did: p.key.public for p in self.nodes}
        quorum_ms: list[float | None] = []
        final_ms: list[float | None] = []
        signers: list[int] = []
        holders: list[int] = []
        invalid: list[int] = []
        ideal: list[float] = []
        nonces = random.Random(f"remembrancer-sim/{self.config.seed}/tsa-nonce")
        rail = _InProcessTsaRail(TSA_TARGET, None, [self.tsa.ca_cert],
                                 nonce_source=lambda: nonces.getrandbits(63) | (1 << 63))  # fmt: skip
        rail.tsa = self.tsa
        for k in range(self.config.receipts):
            node = proposers[k % len(proposers)]
            head = self.append(node)
            body = Checkpoint(node.origin, head.size, head.root_hash).to_body().encode()
            anchor = rail.submit(checkpoint_digest(body), now=int(node.clock()))
            self.network.arrivals.clear()
            start = self.loop.time()
            need = self.quorum - 1
            ideal.append(self._ideal(node.index, need))
            try:
                final = await node.service.propagate(node.namespace, anchor, head.checkpoint)
            except PeerError as e:
                if e.code != "quorum_not_reached":
                    raise
                quorum_ms.append(None)
                final_ms.append(None)
                signers.append(0)
                invalid.append(0)
                holders.append(0)
                await self._quiet()
                continue
            final_ms.append(_ms(self.loop.time() - start))
            # The real verifier, with the registry's keys, on the receipt the proposer kept:
            report = verify_federation_receipt(final, keys, self.quorum)
            invalid.append(sum(1 for cs in final.signatures
                               if not verify_countersignature(final, cs, keys[cs.node])))  # fmt: skip
            counted = {self.by_did[d].index for d in report.signers if d != node.did}
            signers.append(len(report.signers))
            times = sorted(a.at for a in self.network.arrivals
                           if a.kind == "countersign" and a.dst == node.index and a.src in counted)  # fmt: skip
            quorum_ms.append(_ms(times[need - 1] - start) if need else 0.0)
            await self._quiet()
            holders.append(sum(1 for p in self.nodes if p is not node
                               and _holds(p, node.namespace, final)))  # fmt: skip
        return ReceiptResult(
            receipts=self.config.receipts,
            quorum=self.quorum,
            messages=self.network.count("receipts"),
            bytes=self.network.bytes["receipts"],
            quorum_ms=tuple(quorum_ms),
            final_ms=tuple(final_ms),
            signers=tuple(signers),
            invalid_kept=tuple(invalid),
            holders=tuple(holders),
            ideal_ms=round(sum(ideal) / len(ideal), 3) if ideal else 0.0,
            refused=self.network.refusals("receipts"),
        )

    # -- scenario 3: heartbeats, anti-entropy, partition ------------------------------------

    def _on_update(self, node: SimNode, origin: str) -> None:
        stale = self._stale
        if stale is None or (node.index, origin) not in stale:
            return
        if node.anti_entropy.held.get(origin) == self._heads.get(origin):
            stale.discard((node.index, origin))
            if not stale and self._converged is not None:
                self._converged_at = self.loop.time()
                self._phase_mark = (self.network.phase, self.network.count(self.network.phase))
                self._converged.set()

    def _track(self) -> int:
        """Start tracking which (node, log) pairs are behind; returns how many."""
        self._stale = {(p.index, origin) for p in self.nodes for origin, head in self._heads.items()
                       if p.anti_entropy.held.get(origin) != head}  # fmt: skip
        self._converged = asyncio.Event()
        self._converged_at = None
        if not self._stale:
            self._converged_at = self.loop.time()
            self._phase_mark = (self.network.phase, self.network.count(self.network.phase))
            self._converged.set()
        return len(self._stale)

    async def _wait_converged(self, within: float) -> float | None:
        assert self._converged is not None
        start = self.loop.time()
        try:
            await asyncio.wait_for(self._converged.wait(), within)
        except TimeoutError:
            return None
        assert self._converged_at is not None
        return round(self._converged_at - start, 6)

    async def _appender(self, node: SimNode) -> None:
        """Append a batch every heartbeat interval, from a random phase, until cancelled."""
        hb = self.config.heartbeat_seconds
        await asyncio.sleep(self.rng.uniform(0, hb))
        while True:
            self.append(node)
            await asyncio.sleep(hb)

    async def _start(self, node: SimNode, delay: float) -> None:
        await asyncio.sleep(delay)
        node.service.start()

    async def run_partition(self) -> PartitionResult:
        """Start heartbeats; converge; cut ``partition_fraction`` of the nodes off while
        every log advances; heal; measure the time until every node holds every
        log's latest state."""
        cfg = self.config
        hb = cfg.heartbeat_seconds
        self._begin("partition-start")
        history_before = Counter(_changes(self.nodes))
        self._track()
        for node in self.nodes:  # staggered starts, as real nodes would be
            self.loop.create_task(self._start(node, self.rng.uniform(0, hb)))
        initial = await self._wait_converged(cfg.converge_within_s)
        order = list(range(self.n))
        self.rng.shuffle(order)
        side = tuple(sorted(order[: max(1, round(self.n * cfg.partition_fraction))]))
        self._begin("partition")
        self.network.partition(side, self.n)
        appenders = [self.loop.create_task(self._appender(p)) for p in self.nodes]
        await asyncio.sleep(cfg.partition_seconds)
        for task in appenders:
            task.cancel()
        await asyncio.gather(*appenders, return_exceptions=True)
        during = self.network.count("partition", frozenset({"heartbeat"}))
        self._begin("after")
        if cfg.heal:
            self.network.heal()
        stale = self._track()
        converged = await self._wait_converged(cfg.converge_within_s)
        if converged is not None and self._phase_mark[0] == "after":
            after = self._phase_mark[1]
        else:
            after = self.network.count("after")
        stale = len(self._stale or ())
        history = Counter(_changes(self.nodes)) - history_before
        self._stale = None
        return PartitionResult(
            side=side,
            partition_s=cfg.partition_seconds,
            healed=cfg.heal,
            initial_convergence_s=initial,
            convergence_s=converged,
            stale_pairs=stale,
            messages_after_heal=after,
            heartbeat_messages_per_node_s=round(during / self.n / cfg.partition_seconds, 3)
            if cfg.partition_seconds
            else 0.0,
            fetches=sum(p.anti_entropy.fetches for p in self.nodes),
            failed_fetches=sum(p.anti_entropy.failed for p in self.nodes),
            status_changes=dict(history),
        )


def _holds(node: SimNode, namespace: str, final: FederationReceipt) -> bool:
    return any(r.get("anchor", {}).get("tx_hash") == final.anchor.tx_ref
               for r in node.service.receipts(namespace))  # fmt: skip


def _changes(nodes: Sequence[SimNode]) -> list[str]:
    return [f"{c.old}->{c.new}" for node in nodes for c in node.service.scores.history()]


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------

SCENARIOS: Final = ("witnessing", "receipts", "partition")


def simulate(
    n: int,
    config: SimulationConfig | None = None,
    *,
    scenarios: Sequence[str] = SCENARIOS,
    tsa_dir: Path | None = None,
    byzantine: Mapping[int, Byzantine] | None = None,
) -> SimulationReport:
    """Simulate a federation of ``n`` nodes through ``scenarios`` (in this order:
    witnessing, receipts, partition) and report what was measured.

    ``tsa_dir`` keeps the development TSA between runs (a temporary one is
    made and removed otherwise); ``byzantine`` is for tests.
    """
    config = config or SimulationConfig()
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise SimulationError(f"unknown scenario {unknown[0]!r}; known: {', '.join(SCENARIOS)}")
    if tsa_dir is None:
        with tempfile.TemporaryDirectory(prefix="remembrancer-sim-") as d:
            return simulate(n, config, scenarios=scenarios, tsa_dir=Path(d) / "tsa",
                            byzantine=byzantine)  # fmt: skip
    cpu: dict[str, float] = {}
    spent: dict[str, float] = {}

    async def phase(name: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        loop = asyncio.get_running_loop()
        start, virtual = time.process_time(), loop.time()
        try:
            return await work()
        finally:
            cpu[name] = time.process_time() - start
            spent[name] = round(loop.time() - virtual, 6)

    async def main() -> SimulationReport:
        sim = FederationSimulation(n, config, tsa_dir, byzantine=byzantine)
        await phase("setup", sim.build)
        try:
            witnessing = receipts = partition = None
            if "witnessing" in scenarios:
                witnessing = await phase("witnessing", sim.run_witnessing)
            if "receipts" in scenarios:
                receipts = await phase("receipts", sim.run_receipts)
            if "partition" in scenarios:
                partition = await phase("partition", sim.run_partition)
        finally:
            await sim.close()
        net = sim.network
        kinds: Counter[str] = Counter()
        for (_, kind), v in net.messages.items():
            kinds[kind] += v
        return SimulationReport(
            n=n,
            seed=config.seed,
            quorum=sim.quorum,
            witnessing=witnessing,
            receipts=receipts,
            partition=partition,
            virtual_seconds=round(sim.loop.time(), 6),
            phase_seconds=dict(spent),
            messages=dict(kinds),
            lost=net.lost,
            internal_errors=tuple(net.errors),
            trace_sha256=net.trace_sha256,
        )

    try:
        report = run_virtual(main())
    except ConfigError as e:
        raise SimulationError(f"the simulated federation cannot be set up: {e.message}") from e
    return replace(report, cpu_seconds=cpu)
