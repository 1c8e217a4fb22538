"""The simulated network: an httpx transport that delivers each request to the receiving node.

Latency is drawn from a seeded generator, a message is lost with a given
probability, and a partition cuts links; a lost message is never delivered
and its sender sees its own timeout expire.  Every transmission (time, ends,
kind, status, size) goes into a digest, so two runs with one seed can be
compared byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import httpx

from remembrancer.testing.simulation.config import SimulationConfig

if TYPE_CHECKING:
    from remembrancer.testing.simulation.federation import SimNode

__all__ = ["SimNetwork"]


_LOST_WAIT: Final = 30.0  # seconds a sender without a timeout waits for a lost message


@dataclass(frozen=True, slots=True)
class Served:
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
    if "/tile/" in path:
        return "fetch-tile"
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


class SimTransport(httpx.AsyncBaseTransport):
    """One node's way out: every request goes through the simulated network."""

    def __init__(self, network: SimNetwork, node: SimNode) -> None:
        self._network = network
        self._node = node

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._network.deliver(self._node, request)
