"""Reading the demo's nodes: a small JSON-over-HTTP client and what it reads.

:class:`Api` wraps one ``httpx`` client (one per thread) with a deadline on
every request; a node that answers with an error becomes a
:class:`DemoApiError` carrying the node's own error code.  :class:`Snapshot`
is one progress line's figures, :class:`NodeReading` one node's.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from remembrancer.core.errors import PeerError, RemembrancerError


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One progress reading, from the nodes' APIs."""

    entries: dict[str, int | None]  # per node, all its logs; None: did not answer
    cosignatures: int  # cosignatures the nodes' witnesses made (since they started)
    anchors_verified: int  # verified anchors of the nodes' own logs
    receipts_final: int  # final federation receipts (as many as any node holds)
    messages_delivered: int  # cross-namespace deliveries (since the nodes started)

    def line(self) -> str:
        per = " · ".join(
            f"{n} {'? (not answering)' if v is None else f'{v:,}'}" for n, v in self.entries.items()
        )
        return (f"records {per} | anchors verified {self.anchors_verified:,} | federation"
                f" receipts final {self.receipts_final:,} | since start: cosignatures"
                f" {self.cosignatures:,}, messages delivered {self.messages_delivered:,}")  # fmt: skip


@dataclass(frozen=True, slots=True)
class NodeReading:
    """What one node's API said at one reading."""

    entries: int
    cosignatures: int
    delivered: int
    anchors: int
    receipts: int
    checkpoints: dict[str, str]  # namespace -> signed checkpoint note


class DemoApiError(RemembrancerError):
    """A node answered with an error (its code is kept)."""


class Api:
    """JSON over HTTP for one thread (an httpx client is not shared)."""

    def __init__(self, timeout: float = 15.0) -> None:
        self.client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, url: str, body: bytes | None = None) -> httpx.Response:
        try:
            return self.client.request(method, url, content=body,
                                       headers={"Content-Type": "application/json"})  # fmt: skip
        except httpx.HTTPError as e:
            raise PeerError(f"cannot reach {url}: {e}", code="node_unreachable") from e

    def text(self, url: str) -> str:
        r = self.request("GET", url)
        _raise_for(r, url)
        return r.text

    def get(self, url: str) -> Any:
        r = self.request("GET", url)
        _raise_for(r, url)
        return r.json()

    def post(self, url: str, body: bytes) -> Any:
        r = self.request("POST", url, body)
        _raise_for(r, url)
        return r.json()


def _raise_for(r: httpx.Response, url: str) -> None:
    if r.status_code < 400:
        return
    try:
        err = r.json().get("error", {})
    except ValueError:
        err = {}
    raise DemoApiError(f"{err.get('message') or r.text[:200]} (HTTP {r.status_code}, {url})",
                       code=err.get("code") or f"http_{r.status_code}")  # fmt: skip


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """The sum of a Prometheus metric's samples whose labels contain ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            if labels in series:
                with contextlib.suppress(ValueError):
                    total += float(value)
    return total


def clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def shown(path: Path) -> str:
    """A path as a user would type it here: relative below the working
    directory, absolute elsewhere, quoted for a shell."""
    try:
        text = str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(path.resolve())
    return shlex.quote(text)
