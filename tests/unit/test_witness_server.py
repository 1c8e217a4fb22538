"""The witness server on a typed store: cosigning, compare-and-swap on size, refusals.

(The HTTP side, with real node processes, is tests/integration/test_witness_rules.py.)
"""

from __future__ import annotations

import pytest

from remembrancer.core.checkpoint import Checkpoint, sign_checkpoint
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import Verifier
from remembrancer.core.witness import AddCheckpointRequest, WitnessRefusal
from remembrancer.federation.witness_server import CAS_ATTEMPTS, WitnessServer
from remembrancer.storage.base import CosignedRow
from remembrancer.storage.memory import MemoryStore
from remembrancer.testing.simulation.logs import SimLog

NS = "dao:vaultmesh"
ORIGIN = f"log.example/{NS}"


@pytest.fixture
def log() -> SimLog:
    return SimLog(NS, ORIGIN, SigningKey.generate())


def server(store: object, log: SimLog) -> WitnessServer:
    verifiers = {ORIGIN: [Verifier(ORIGIN, log._key.public)]}
    return WitnessServer(store, "w.example/witness", SigningKey.generate(), verifiers,  # type: ignore[arg-type]
                         lambda: 1_764_000_000.0)  # fmt: skip


def request(log: SimLog, old: int, grow: int) -> bytes:
    head = log.append(grow)
    proof = log.proof_consistency(NS, old, head.size) if old else []
    return AddCheckpointRequest(old, tuple(proof), head.checkpoint).to_bytes()


def test_cosigns_and_keeps_the_latest_checkpoint(log: SimLog) -> None:
    store = MemoryStore()
    w = server(store, log)
    line = w.add_checkpoint(request(log, 0, 3))
    assert line.startswith("— w.example/witness ".encode()) and line.endswith(b"\n")
    held = w.get_cosigned(ORIGIN)
    assert held is not None and held.size == 3 and held.cosignature.encode() == line
    w.add_checkpoint(request(log, 3, 5))
    assert store.get_cosigned(ORIGIN).size == 8  # type: ignore[union-attr]
    assert w.witnessed_checkpoint(ORIGIN).endswith(store.get_cosigned(ORIGIN).cosignature.encode())  # type: ignore[union-attr]
    with pytest.raises(WitnessRefusal) as info:
        w.add_checkpoint(request(log, 3, 1))  # old size is not the latest cosigned
    assert info.value.code == "witness_old_size_mismatch" and info.value.details["size"] == 8


class _Racing(MemoryStore):
    """A store where another writer (a second process on the same database)
    cosigns a newer checkpoint right after this server's first read."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False
        self.puts = 0

    def get_cosigned(self, origin: str) -> CosignedRow | None:
        held = super().get_cosigned(origin)
        if not self.raced:
            self.raced = True
            other = CosignedRow(origin, 100, bytes(32), b"x\n", "— other\n", 1)
            assert super().put_cosigned(other, expect_size=held.size if held else None)
        return held

    def put_cosigned(self, row: CosignedRow, *, expect_size: int | None) -> bool:
        self.puts += 1
        return super().put_cosigned(row, expect_size=expect_size)


def test_a_lost_compare_and_swap_is_retried_and_judged_against_the_winner(log: SimLog) -> None:
    store = _Racing()
    w = server(store, log)
    with pytest.raises(WitnessRefusal) as info:
        w.add_checkpoint(request(log, 0, 3))
    # The write judged against "nothing cosigned" lost; the retry re-reads and
    # judges the request against the winner: old 0 is no longer the latest size.
    assert info.value.code == "witness_old_size_mismatch"
    assert info.value.details["size"] == 100
    held = store.get_cosigned(ORIGIN)
    assert held is not None and held.cosignature == "— other\n"  # ours was never stored
    assert store.puts == 1 < CAS_ATTEMPTS


def test_a_second_root_at_a_cosigned_size_is_refused_with_both_notes(log: SimLog) -> None:
    store = MemoryStore()
    w = server(store, log)
    w.add_checkpoint(request(log, 0, 4))
    forked = sign_checkpoint(Checkpoint(ORIGIN, 4, b"\x07" * 32), log._key)  # a split view
    with pytest.raises(WitnessRefusal) as info:
        w.add_checkpoint(AddCheckpointRequest(4, (), forked).to_bytes())
    assert info.value.code == "witness_root_mismatch"
    assert info.value.details["offered"].encode() == forked
    assert info.value.details["cosigned"].encode() == store.get_cosigned(ORIGIN).note  # type: ignore[union-attr]
    assert store.get_cosigned(ORIGIN).size == 4  # type: ignore[union-attr]


def test_an_unknown_origin_and_nothing_cosigned(log: SimLog) -> None:
    w = WitnessServer(MemoryStore(), "w.example/witness", SigningKey.generate(), {}, lambda: 1.0)
    with pytest.raises(WitnessRefusal) as info:
        w.add_checkpoint(request(log, 0, 1))
    assert info.value.code == "witness_origin_unknown"
    with pytest.raises(Exception) as nf:
        w.witnessed_checkpoint(ORIGIN)
    assert getattr(nf.value, "code", None) == "origin_unknown"
