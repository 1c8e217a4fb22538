"""Witnessing between peers: every new checkpoint of this node's logs goes to
its peers' C2SP ``/witness/add-checkpoint``; their cosignatures are verified
and attached to the checkpoint, so later receipts and tlog-proofs carry them.

Per peer and log, the client remembers the size the witness last cosigned
(starting from 0 and following the spec's 409 ``text/x.tlog.size`` answer)
and sends a consistency proof from there.  Submissions are coalesced: while a
round is running, newer checkpoints replace older ones and only the latest is
sent next.  A peer that answers 422 (the proof did not verify) or 409 with a
different root has seen a different log under our origin: that is logged as
a possible split view with both checkpoints (the evidence is the peer's to
keep; ours is the checkpoint we signed).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from pydantic import ValidationError

from remembrancer.configfile import config_error
from remembrancer.core.cosignature import CosignatureVerifier, parse_cosigner_vkey
from remembrancer.core.errors import RemembrancerError
from remembrancer.core.histogram import LatencyHistogram
from remembrancer.core.note import Note, NoteSignature, open_note
from remembrancer.core.witness import AddCheckpointRequest
from remembrancer.federation.settings import WitnessPeerSettings
from remembrancer.storage.base import LogState

MAX_SPLIT_VIEWS = 100  # split views kept for the explorer (all are counted)

log = logging.getLogger("remembrancer.witnessing")


@dataclass(frozen=True, slots=True)
class WitnessPeer:
    name: str  # the witness's key name
    url: str  # its submission prefix, e.g. http://beta:8080/witness
    verifier: CosignatureVerifier

    @classmethod
    def from_config(cls, entry: WitnessPeerSettings | Any, where: str) -> WitnessPeer:
        """From ``witnessing.peers[i]`` (validated, or a mapping validated here)."""
        if not isinstance(entry, WitnessPeerSettings):
            try:
                entry = WitnessPeerSettings.model_validate(entry)
            except ValidationError as e:
                raise config_error(e, WitnessPeerSettings, prefix=(where,)) from None
        verifier = parse_cosigner_vkey(entry.vkey)
        return cls(verifier.name, entry.url.rstrip("/"), verifier)


class LogSource(Protocol):
    def head(self, namespace: str) -> LogState | None: ...

    def origin(self, namespace: str) -> str: ...

    def proof_consistency(self, namespace: str, old: int, new: int) -> list[bytes]: ...

    def attach_cosignatures(self, namespace: str, size: int, note: bytes) -> bool: ...


@dataclass
class _Round:
    event: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    created: dict[int, float] = field(
        default_factory=dict
    )  # size -> when the checkpoint was signed


class CheckpointWitnessing:
    """Collects peers' cosignatures on this node's checkpoints."""

    def __init__(self, logs: LogSource, peers: Sequence[WitnessPeer], *, quorum: int | None = None,
                 timeout: float = 5.0) -> None:  # fmt: skip
        self.logs = logs
        self.peers = list(peers)
        self.quorum = len(self.peers) if quorum is None else quorum
        self.timeout = timeout
        self._known: dict[tuple[str, str], int] = {}  # (peer, origin) -> size it cosigned
        self._rounds: dict[str, _Round] = {}
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Seconds from signing to a quorum of cosignatures (bounded: a histogram).
        self.latencies = LatencyHistogram()
        # Called with each latency as it is measured (the node's histogram).
        self.on_cosigned: Callable[[float], None] = lambda seconds: None
        # The newest split views seen (bounded), and how many there were in all.
        self.split_views: deque[dict[str, Any]] = deque(maxlen=MAX_SPLIT_VIEWS)
        self.split_view_count = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=self.timeout)

    async def stop(self) -> None:
        for r in self._rounds.values():
            if r.task is not None:
                r.task.cancel()
        await asyncio.gather(
            *(r.task for r in self._rounds.values() if r.task), return_exceptions=True
        )
        if self._client is not None:
            await self._client.aclose()

    def on_batch(self, namespace: str, start: int, end: int, note: bytes) -> None:
        """Sequencer hook (runs on its writer thread): a new checkpoint exists."""
        if not self.peers or self._loop is None:
            return
        created = time.perf_counter()
        self._loop.call_soon_threadsafe(self._wake, namespace, end, created)

    def _wake(self, namespace: str, size: int, created: float) -> None:
        r = self._rounds.get(namespace)
        if r is None:
            r = self._rounds[namespace] = _Round()
        r.created.setdefault(size, created)
        r.event.set()
        if r.task is None or r.task.done():
            r.task = asyncio.get_running_loop().create_task(
                self._run(namespace, r), name=f"witnessing:{namespace}"
            )

    async def _run(self, namespace: str, r: _Round) -> None:
        while True:
            await r.event.wait()
            r.event.clear()
            try:
                await self.witness_latest(namespace, r)
            except Exception:
                log.exception("witnessing %s failed", namespace)

    async def witness_latest(self, namespace: str, r: _Round | None = None) -> int:
        """Send the latest checkpoint to every peer; attach what comes back.
        Returns the number of verified cosignatures attached."""
        head = self.logs.head(namespace)
        if head is None or not self.peers:
            return 0
        origin = self.logs.origin(namespace)
        note = Note.from_bytes(head.checkpoint)
        # Attach as soon as a quorum has answered, then again with the
        # stragglers: one slow or lost witness must not hold back the
        # cosigned checkpoint that clients wait for.
        pending = {asyncio.ensure_future(self._ask(p, namespace, origin, head)) for p in self.peers}
        sigs: list[NoteSignature] = []
        attached_count = 0
        need = min(self.quorum, len(self.peers))
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            sigs += [s for s in (t.result() for t in done) if s is not None]
            if len(sigs) > attached_count and (len(sigs) >= need or not pending):
                cosigned = note.with_signatures(sigs).to_bytes()
                if not await asyncio.to_thread(
                    self.logs.attach_cosignatures, namespace, head.size, cosigned
                ):
                    break  # the log moved on; the next round cosigns the new head
                if attached_count < need <= len(sigs) and r is not None:
                    created = r.created.pop(head.size, None)
                    if created is not None:
                        seconds = time.perf_counter() - created
                        self.latencies.observe(seconds)
                        self.on_cosigned(seconds)
                    for size in [s for s in r.created if s < head.size]:
                        r.created.pop(size, None)
                attached_count = len(sigs)
        for t in pending:
            t.cancel()
        return attached_count

    async def _ask(
        self, peer: WitnessPeer, namespace: str, origin: str, head: LogState
    ) -> NoteSignature | None:
        assert self._client is not None
        key = (peer.name, origin)
        old = self._known.get(key, 0)
        for _ in range(3):
            proof: list[bytes] = []
            if 0 < old < head.size:
                proof = await asyncio.to_thread(
                    self.logs.proof_consistency, namespace, old, head.size
                )
            body = AddCheckpointRequest(old, tuple(proof), head.checkpoint).to_bytes()
            try:
                resp = await self._client.post(f"{peer.url}/add-checkpoint", content=body,
                                               headers={"Content-Type": "text/plain"})  # fmt: skip
            except httpx.HTTPError as e:
                log.info("witness %s unreachable: %s", peer.name, e)
                return None
            if resp.status_code == 200:
                self._known[key] = head.size
                return self._check(peer, head.checkpoint, resp.content)
            if resp.status_code == 409 and resp.headers.get("content-type", "").startswith(
                "text/x.tlog.size"
            ):
                try:
                    old = int(resp.text.strip())
                except ValueError:
                    return None
                if old > head.size:
                    self._split_view(
                        peer,
                        origin,
                        head,
                        f"the witness has cosigned size {old} > ours {head.size}",
                    )
                    return None
                continue
            if resp.status_code in (409, 422):
                self._split_view(peer, origin, head, resp.text[:500])
            else:
                log.info("witness %s answered %d for %s", peer.name, resp.status_code, origin)
            return None
        return None

    def _check(self, peer: WitnessPeer, note: bytes, lines: bytes) -> NoteSignature | None:
        try:
            opened = open_note(note + lines, [peer.verifier])
        except RemembrancerError as e:
            log.warning("witness %s returned a bad cosignature: %s", peer.name, e.message)
            return None
        for sig in opened.verified:
            if sig.name == peer.name and sig.key_id == peer.verifier.key_id:
                return sig
        return None

    def _split_view(self, peer: WitnessPeer, origin: str, head: LogState, detail: str) -> None:
        record = {"peer": peer.name, "origin": origin, "size": head.size,
                  "checkpoint": base64.b64encode(head.checkpoint).decode(), "detail": detail}  # fmt: skip
        self.split_views.append(record)
        self.split_view_count += 1
        log.error(
            "witness %s refused %s at size %d as inconsistent: %s",
            peer.name,
            origin,
            head.size,
            detail,
        )

    def stats(self) -> dict[str, Any]:
        median = self.latencies.quantile(0.5)
        return {
            "peers": [p.name for p in self.peers],
            "quorum": self.quorum,
            "rounds": self.latencies.count,
            "median_ms": round(median * 1000, 1) if median is not None else None,
            "split_views": self.split_view_count,
        }
