"""The simulation's configuration and what it reports, as plain values.

:class:`SimulationConfig` is validated when it is built
(:class:`SimulationError` ``simulation_invalid``); the result types are
frozen and :meth:`SimulationReport.to_dict` is byte-for-byte the same for
the same seed (only ``cpu_seconds`` varies).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from remembrancer.core.errors import RemembrancerError

__all__ = [
    "EPOCH",
    "SIZES",
    "PartitionResult",
    "ReceiptResult",
    "SimulationConfig",
    "SimulationError",
    "SimulationReport",
    "WitnessingResult",
]


EPOCH: Final = 1_764_100_000
"""Virtual time 0, as POSIX seconds (every node's clock reads ``EPOCH + t + skew``)."""
SIZES: Final = (5, 10, 25, 50, 100)
"""The federation sizes the benchmark simulates."""


class SimulationError(RemembrancerError):
    """The simulation cannot run as asked (``simulation_invalid``) or deadlocked
    (``simulation_stuck``: every task waits and nothing is scheduled)."""

    default_code = "simulation_invalid"
    fault = "operator"


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
    antientropy_seconds: float = 5.0  # the replicator's rounds (node.yaml's default)
    fetch_deadline_s: float = 5.0  # replication.fetch_deadline_s (node.yaml's default: 15)
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
            (self.antientropy_seconds > 0, "antientropy_seconds must be > 0"),
            (self.fetch_deadline_s > 0, "fetch_deadline_s must be > 0"),
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


def ms(seconds: float) -> float:
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
