"""The federation simulation (the package remembrancer.testing.simulation, docs/simulation.md).

Small federations in virtual time: each test takes about a second.  The
benchmark (``python -m bench --only simulation``) runs up to 100 nodes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.cosignature import CosignatureVerifier
from remembrancer.core.errors import VerificationError
from remembrancer.core.note import Verifier
from remembrancer.federation.protocol.grammar import MAX_SEQ
from remembrancer.federation.receipts import (
    Countersignature,
    FederationReceipt,
    verify_federation_receipt,
)
from remembrancer.testing.simulation.clock import run_virtual
from remembrancer.testing.simulation.config import SimulationConfig, SimulationError
from remembrancer.testing.simulation.federation import Byzantine, FederationSimulation, simulate

T = TypeVar("T")

# Small but complete: every scenario, message loss, clock skew.
QUICK = SimulationConfig(checkpoints=2, receipts=2, partition_seconds=6.0, converge_within_s=30.0)


@pytest.fixture(scope="module")
def tsa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "tsa"


def _with_sim(
    n: int,
    config: SimulationConfig,
    tsa_dir: Path,
    body: Callable[[FederationSimulation], Coroutine[Any, Any, T]],
    **kwargs: Any,
) -> T:
    async def main() -> T:
        sim = FederationSimulation(n, config, tsa_dir, **kwargs)
        await sim.build()
        try:
            return await body(sim)
        finally:
            await sim.close()

    return run_virtual(main())


# --- virtual time -------------------------------------------------------------------


def test_virtual_time_jumps_to_timers_and_to_thread_runs_inline() -> None:
    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3600)
        ident = await asyncio.to_thread(threading.get_ident)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.sleep(60)
        return loop.time(), ident

    threads = threading.active_count()
    now, ident = run_virtual(main())
    assert now == pytest.approx(3605)
    assert ident == threading.get_ident()
    assert threading.active_count() == threads


def test_a_loop_with_nothing_to_wait_for_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationError) as e:
        run_virtual(main())
    assert e.value.code == "simulation_stuck"


@pytest.mark.parametrize(
    "changes",
    [{"loss": 1.0}, {"latency_ms": (50.0, 5.0)}, {"partition_fraction": 0.0}, {"batch": 0}],
)
def test_config_refuses_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(SimulationError) as e:
        SimulationConfig(**changes)
    assert e.value.code == "simulation_invalid"


def test_quorum_larger_than_the_federation_is_refused(tsa_dir: Path) -> None:
    with pytest.raises(SimulationError):
        simulate(3, SimulationConfig(quorum=4), tsa_dir=tsa_dir)


# --- determinism --------------------------------------------------------------------


def test_same_seed_same_report_byte_for_byte_and_another_seed_differs(tsa_dir: Path) -> None:
    threads = set(threading.enumerate())
    first = simulate(5, QUICK, tsa_dir=tsa_dir)
    second = simulate(5, QUICK, tsa_dir=tsa_dir)
    other = simulate(5, SimulationConfig(**{**_fields(QUICK), "seed": 2}), tsa_dir=tsa_dir)
    assert set(threading.enumerate()) == threads  # no thread was ever started

    a, b, c = (json.dumps(r.to_dict(), sort_keys=True) for r in (first, second, other))
    assert a == b
    assert first.trace_sha256 != other.trace_sha256
    assert a != c
    assert first.internal_errors == ()
    # Something was measured, in every scenario:
    assert first.witnessing is not None and first.witnessing.messages > 0
    assert first.receipts is not None and first.receipts.messages > 0
    assert first.partition is not None and first.partition.fetches > 0
    assert first.lost > 0  # the 1% loss did drop messages (and the protocol coped)


def test_the_trace_does_not_depend_on_the_process_or_its_hash_seed(tsa_dir: Path) -> None:
    # Set and dict orders that depend on PYTHONHASHSEED must not reach the event order.
    kwargs = {"checkpoints": 2, "partition_seconds": 6.0, "converge_within_s": 30.0}
    code = (
        "from remembrancer.testing.simulation.config import SimulationConfig\n"
        "from remembrancer.testing.simulation.federation import simulate\n"
        f"config = SimulationConfig(**{kwargs!r})\n"
        "print(simulate(5, config, scenarios=('witnessing', 'partition')).trace_sha256)\n"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        for seed in ("1", "2")
    }  # fmt: skip
    here = simulate(5, SimulationConfig(**kwargs), scenarios=("witnessing", "partition"),
                    tsa_dir=tsa_dir)  # fmt: skip
    assert digests == {here.trace_sha256}


def _fields(config: SimulationConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


# --- quorum, checked with the real verifiers ---------------------------------------------


def test_checkpoints_and_receipts_reach_quorum_with_verified_signatures(tsa_dir: Path) -> None:
    async def body(sim: FederationSimulation) -> None:
        witnessing = await sim.run_witnessing()
        assert all(count >= sim.witness_quorum for count in witnessing.cosignatures)
        assert all(ms is not None and ms > 0 for ms in witnessing.quorum_ms)
        # Independently: node 0's latest cosigned checkpoint, opened with the log's
        # key and the witnesses' keys (a cosignature that fails raises).
        node = sim.nodes[0]
        size, note = max(node.log.cosigned.items())
        witnesses = [CosignatureVerifier(p.witness_name, p.key.public) for p in sim.nodes[1:]]
        opened = open_checkpoint(note, Verifier(node.origin, node.key.public), witnesses)
        assert opened.checkpoint.size == size
        assert len({c.name for c in opened.cosignatures}) >= sim.witness_quorum

        receipts = await sim.run_receipts()
        assert receipts.quorum_ms and all(ms is not None for ms in receipts.quorum_ms)
        assert all(s >= sim.quorum for s in receipts.signers)
        assert receipts.invalid_kept == (0, 0)
        # Every other node verified the final receipts it stored; check them again here.
        keys = {p.did: p.key.public for p in sim.nodes}
        stored = [FederationReceipt.from_dict(r) for p in sim.nodes for r in p.service.receipts()]
        assert receipts.holders == (sim.n - 1, sim.n - 1)
        assert len(stored) == 2 * sim.n  # the proposer keeps its own too
        for receipt in stored:
            assert len(verify_federation_receipt(receipt, keys, sim.quorum).signers) >= sim.quorum
        # And the check can fail: spoil one counted countersignature.
        counted = verify_federation_receipt(stored[0], keys, sim.quorum).signers
        cs = next(cs for cs in stored[0].signatures if cs.node in counted)
        spoiled = stored[0].with_signature(Countersignature(cs.node, cs.role, cs.timestamp,
                                                            bytes(64)))  # fmt: skip
        with pytest.raises(VerificationError) as e:
            verify_federation_receipt(spoiled, keys, len(counted))
        assert e.value.code == "receipt_quorum_not_met"

    _with_sim(5, QUICK, tsa_dir, body)


# --- byzantine nodes ------------------------------------------------------------------


def test_byzantine_messages_are_refused_by_the_real_message_verifier(tsa_dir: Path) -> None:
    config = SimulationConfig(loss=0.0, receipts=2)

    async def body(sim: FederationSimulation) -> None:
        result = await sim.run_receipts()
        # Forged in another peer's name: refused at the signature check, once per proposal.
        assert result.refused.get("signature_invalid") == 2
        # The proposal re-sent to the 3 other peers a second later: replays, refused.
        assert result.refused.get("replayed") == 2 * 3
        assert all(ms is not None for ms in result.quorum_ms)
        keys = {p.did: p.key.public for p in sim.nodes}
        byzantine = sim.nodes[2].did
        for p in sim.nodes:
            for stored in p.service.receipts():
                report = verify_federation_receipt(FederationReceipt.from_dict(stored), keys,
                                                   sim.quorum)  # fmt: skip
                assert byzantine not in report.signers
        # Proposals by node 0 then node 1; the byzantine node impersonated the other one.
        for proposer, victim in ((sim.nodes[0], sim.nodes[1]), (sim.nodes[1], sim.nodes[0])):
            # The forged seq (the highest possible) was not recorded for the victim,
            # and what receive checks 1 to 7 refuse never counts against anyone's score.
            assert 0 < proposer.service.verifier.replay.last_seq(victim.did) < MAX_SEQ
            assert proposer.service.scores.score(victim.did) == 100

    _with_sim(5, config, tsa_dir, body, byzantine={2: Byzantine()})


def test_a_countersignature_that_does_not_verify_is_not_kept(tsa_dir: Path) -> None:
    config = SimulationConfig(loss=0.0, receipts=2)
    only_bad = Byzantine(impersonate=False, bad_countersignature=True, replay=False)
    report = simulate(5, config, scenarios=("receipts",), tsa_dir=tsa_dir,
                      byzantine={2: only_bad})  # fmt: skip
    assert report.receipts is not None
    assert report.receipts.invalid_kept == (0, 0)


# --- partitions -----------------------------------------------------------------------


def test_logs_converge_after_a_partition_heals_and_not_while_it_lasts(tsa_dir: Path) -> None:
    base = {"loss": 0.0, "partition_seconds": 6.0, "converge_within_s": 20.0}
    healed = simulate(6, SimulationConfig(**base), scenarios=("partition",), tsa_dir=tsa_dir)
    kept = simulate(6, SimulationConfig(**base, heal=False), scenarios=("partition",),
                    tsa_dir=tsa_dir)  # fmt: skip
    for report in (healed, kept):
        assert report.partition is not None
        assert report.partition.initial_convergence_s is not None
        assert len(report.partition.side) == 2  # 40% of 6
    assert healed.partition is not None and kept.partition is not None
    assert healed.partition.convergence_s is not None
    assert healed.partition.convergence_s < 20.0
    assert healed.partition.stale_pairs == 0
    # Still cut: every log advanced during the partition, so each node misses
    # every log of the other side: 2 * 4 nodes, both ways.
    assert kept.partition.convergence_s is None
    assert kept.partition.stale_pairs == 2 * 2 * 4


def test_logs_converge_after_a_long_partition_heals(tsa_dir: Path) -> None:
    config = SimulationConfig(loss=0.0, partition_seconds=30.0, converge_within_s=30.0)
    report = simulate(6, config, scenarios=("partition",), tsa_dir=tsa_dir)
    assert report.partition is not None
    assert report.partition.convergence_s is not None
