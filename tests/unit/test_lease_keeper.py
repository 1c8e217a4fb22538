"""The lease keeper's bookkeeping (node/ha.py), with a scripted lease and clock:
when a process counts itself the leader, and when it steps down."""

from __future__ import annotations

from dataclasses import dataclass, field

from remembrancer.core.errors import StorageError
from remembrancer.node.ha import LeaseKeeper
from remembrancer.storage.lease import LeaseHolder


@dataclass
class ScriptedLease:
    name: str = "sequencer"
    holder: str = "me"
    url: str = "http://me:1"
    acquire_gives: int | None = None
    renew_gives: bool | StorageError = True
    other: LeaseHolder | None = None
    calls: list[str] = field(default_factory=list)

    def acquire(self) -> int | None:
        self.calls.append("acquire")
        return self.acquire_gives

    def renew(self, epoch: int) -> bool:
        self.calls.append(f"renew {epoch}")
        if isinstance(self.renew_gives, StorageError):
            raise self.renew_gives
        return self.renew_gives

    def release(self, epoch: int) -> None:
        self.calls.append(f"release {epoch}")

    def current(self) -> LeaseHolder | None:
        return self.other

    def close(self) -> None:
        pass


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _keeper(lease: ScriptedLease, clock: Clock, changes: list[bool]) -> LeaseKeeper:
    keeper = LeaseKeeper(lease, lease_seconds=3, renew_seconds=0.75, clock=clock)  # type: ignore[arg-type]
    keeper.on_change = lambda: changes.append(keeper.leading())
    return keeper


def test_a_follower_takes_the_lease_and_resets_before_it_leads() -> None:
    lease, clock, changes = ScriptedLease(other=LeaseHolder("x", "http://x:1", 4, 2.0)), Clock(), []
    keeper = _keeper(lease, clock, changes)
    keeper.round()
    assert not keeper.leading() and keeper.leader_url == "http://x:1"
    assert keeper.fence().epoch == 0  # a follower's appends carry no valid epoch
    lease.acquire_gives = 5
    keeper.round()
    assert keeper.leading() and keeper.fence().epoch == 5
    assert changes == [False]  # the sequencer was reset before the new epoch was published
    assert keeper.view()["role"] == "leader" and keeper.view()["leader"] == "http://me:1"


def test_a_leader_steps_down_when_its_lease_is_taken() -> None:
    lease, clock, changes = ScriptedLease(acquire_gives=1), Clock(), []
    keeper = _keeper(lease, clock, changes)
    keeper.round()
    assert keeper.leading()
    lease.renew_gives = False
    keeper.round()
    assert not keeper.leading() and keeper.fence().epoch == 0
    assert changes == [False, False]


def test_a_leader_that_cannot_renew_steps_down_once_its_lease_time_is_over() -> None:
    lease, clock, changes = ScriptedLease(acquire_gives=1), Clock(), []
    keeper = _keeper(lease, clock, changes)
    keeper.round()  # valid until 103
    lease.renew_gives = StorageError("down", code="unavailable")
    clock.now = 101.0
    keeper.round()
    assert keeper.leading()  # still within the lease it holds
    clock.now = 103.0
    assert not keeper.leading()  # its own reckoning ends with the lease, before any round
    keeper.round()
    assert keeper.fence().epoch == 0 and changes == [False, False]


def test_a_fenced_append_demotes_and_a_stop_releases() -> None:
    lease, clock, changes = ScriptedLease(acquire_gives=7), Clock(), []
    keeper = _keeper(lease, clock, changes)
    keeper.round()
    keeper.fenced_append()
    assert not keeper.leading() and keeper.view()["fenced_appends"] == 1
    lease.calls.clear()
    keeper.round()  # takes it again (the scripted lease is free): a new promotion
    keeper.stop()
    assert lease.calls == ["acquire", "release 7"]
