"""Several processes of one node over one PostgreSQL store (``ha.enabled``).

Every process serves reads from the shared store.  One of them, the holder
of the sequencer lease (:mod:`remembrancer.storage.lease`), sequences: it
appends, signs checkpoints, anchors.  The others forward every write they
receive to it (:func:`forward`), so clients may reach any process behind one
load balancer.

:class:`LeaseKeeper` runs on a thread of its own with a connection of its
own: every ``renew_seconds`` the leader renews its lease, a follower tries to
take it (which succeeds only once it has expired).  Gaining the lease resets
the sequencer, so its first batch resumes from the store; losing it (a
failed renewal, a renewal that could not happen within the lease time, or an
append the store refused as ``fenced``) resets it too, and the process
follows.  Safety does not rest on this bookkeeping: every append carries the
epoch and the store refuses it once the lease has moved on.

One lease, ``sequencer``, covers every namespace of the node: exactly one
process sequences them all at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from remembrancer.core.errors import PushbackError, StorageError
from remembrancer.storage.base import Fence
from remembrancer.storage.lease import PgLease

log = logging.getLogger("remembrancer.ha")
LEASE_NAME = "sequencer"
FORWARDED_HEADER = "x-remembrancer-forwarded"
# Headers of an answer passed back from the leader to the client.
_PASSED_BACK = ("content-type", "location", "retry-after")


class LeaseKeeper:
    """Holds, renews or waits for the sequencer lease (see the module docstring)."""

    def __init__(
        self, lease: PgLease, *, lease_seconds: float, renew_seconds: float,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.lease = lease
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._valid_until = 0.0
        self.leader_url: str | None = None
        self.leader_epoch: int | None = None
        self.takeovers = 0
        self.fenced = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def holder(self) -> str:
        return self.lease.holder

    @property
    def url(self) -> str:
        return self.lease.url

    # --- what the rest of the node asks -------------------------------------------------
    def leading(self) -> bool:
        """Whether this process holds the lease, by its own conservative reckoning."""
        return self._epoch is not None and self._clock() < self._valid_until

    def fence(self) -> Fence:
        """The token every append carries; epoch 0 (never valid) while following."""
        return Fence(self.lease.name, self._epoch or 0)

    def fenced_append(self) -> None:
        """The store refused an append of ours: the lease has moved on."""
        self.fenced += 1
        self._demote("an append was fenced off")

    def view(self) -> dict[str, Any]:
        leading = self.leading()
        return {"role": "leader" if leading else "follower", "holder": self.holder,
                "epoch": self._epoch if leading else self.leader_epoch,
                "leader": self.url if leading else self.leader_url,
                "lease_seconds": self.lease_seconds, "takeovers": self.takeovers,
                "fenced_appends": self.fenced}  # fmt: skip

    # --- the loop ------------------------------------------------------------------------
    def start(self) -> None:
        self.round()  # the first round now: a process that can take the lease leads at once
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing; release the lease if held, so a follower need not wait it out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.lease_seconds + 5)
        with self._lock:
            epoch, self._epoch = self._epoch, None
        if epoch is not None:
            try:
                self.lease.release(epoch)
            except StorageError as e:
                log.warning("could not release the sequencer lease: %s", e.message)
        self.lease.close()

    def _run(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            self.round()

    def round(self) -> None:
        """One renewal (leader) or takeover attempt (follower)."""
        started = self._clock()
        try:
            epoch = self._epoch
            if epoch is not None:
                if self.lease.renew(epoch):
                    with self._lock:
                        if self._epoch == epoch:
                            self._valid_until = started + self.lease_seconds
                else:
                    self._demote("the lease was taken over")
            else:
                new = self.lease.acquire()
                if new is not None:
                    self._promote(new, started)
            if self._epoch is None:
                current = self.lease.current()
                self.leader_url = current.url if current and current.expires_in > 0 else None
                self.leader_epoch = current.epoch if current else None
        except StorageError as e:
            log.warning("sequencer lease: %s", e.message)
            if self._epoch is not None and self._clock() >= self._valid_until:
                self._demote("the lease could not be renewed in time")
        except Exception:  # never let the keeper die: a dead keeper means no failover
            log.exception("sequencer lease round failed")

    def _promote(self, epoch: int, started: float) -> None:
        self.on_change()  # the sequencer forgets its heads: it resumes from the store
        with self._lock:
            self._epoch = epoch
            self._valid_until = started + self.lease_seconds
            self.leader_url, self.leader_epoch = self.url, epoch
        self.takeovers += 1
        log.warning("this process now sequences (lease %s, epoch %d)", self.lease.name, epoch)

    def _demote(self, why: str) -> None:
        with self._lock:
            epoch, self._epoch = self._epoch, None
            self.leader_url = None
        if epoch is not None:
            log.warning("this process no longer sequences (epoch %d): %s", epoch, why)
            self.on_change()


def holder_id() -> str:
    """A name for this process in the lease row: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


async def forward(keeper: LeaseKeeper, method: str, path_qs: str, body: bytes,
                  headers: Mapping[str, str], timeout: float, limit: int) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """Pass a write on to the leader; (status, headers, body) of its answer.

    Raises PushbackError (``no_leader``, 503 with Retry-After) when no leader
    is known or it cannot be reached, and for a request that was already
    forwarded once (a second hop means two processes each think the other
    leads: the client retries once the lease has settled)."""
    from remembrancer.net.http import HttpFailure, request

    if headers.get(FORWARDED_HEADER):
        raise PushbackError(
            "this process does not sequence and the request was already forwarded once",
            code="no_leader", retry_after=1, details={"process": keeper.url},
        )  # fmt: skip
    leader = keeper.leader_url
    if leader is None or leader == keeper.url:
        raise PushbackError("no process holds the sequencer lease right now",
                            code="no_leader", retry_after=1)  # fmt: skip
    passed = {k: v for k, v in headers.items() if k in ("content-type", "authorization")}
    passed[FORWARDED_HEADER] = keeper.url
    try:
        answer = await asyncio.to_thread(
            request, method, leader + path_qs, content=body, headers=passed, timeout=timeout,
            limit=limit, trust_env=False, what="the sequencing process",
        )  # fmt: skip
    except HttpFailure as e:
        raise PushbackError(
            f"the sequencing process at {leader} did not answer: {e.message}",
            code="no_leader", retry_after=1, details={"leader": leader},
        ) from e  # fmt: skip
    out = {k: v for k, v in answer.headers.items() if k.lower() in _PASSED_BACK}
    out["x-remembrancer-sequenced-by"] = leader
    return answer.status, out, answer.content
