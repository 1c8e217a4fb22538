"""The receiver's acceptance checks: :class:`MessageVerifier` (docs/spec/federation.md, "Receiving").

:meth:`MessageVerifier.verify` makes the checks in the spec's order, each
failure one error with one code (the table is in the package docstring).
Replay state and rate limits sit behind two small interfaces
(:class:`ReplayState`, :class:`RateLimiter`) so the node can keep them in
its store.  No clock (``now`` is a parameter), no I/O.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol, TypeAlias

from remembrancer.core.errors import (
    ConflictError,
    FormatError,
    PolicyError,
    PushbackError,
    VerificationError,
)
from remembrancer.core.identifiers import DID_RE, FEDERATION_ID_RE
from remembrancer.core.keys import PublicKey
from remembrancer.federation.protocol.wire import MAX_MESSAGE_BYTES, Message

__all__ = [
    "ALLOWED_ROLES",
    "DEFAULT_BURST",
    "DEFAULT_RATE",
    "DEFAULT_SKEW",
    "PEER_STATUSES",
    "ROLES",
    "KnownPeer",
    "MemoryReplayState",
    "MessageVerifier",
    "PeerInfo",
    "RateLimiter",
    "ReplayState",
    "ReplayWindow",
]


DEFAULT_SKEW: Final = 120
"""Default timestamp window: a message is fresh if ``|timestamp - now| <= 120`` seconds."""


DEFAULT_RATE: Final = 20.0
"""Default per-sender rate limit: messages per second ..."""


DEFAULT_BURST: Final = 100
"""... and burst (for a :class:`RateLimiter` such as ``node.ratelimit.TokenBuckets``)."""


Role: TypeAlias = Literal["witness", "anchor", "countersign", "relay", "coordinator"]
ROLES: Final[frozenset[str]] = frozenset(
    {"witness", "anchor", "countersign", "relay", "coordinator"}
)
PeerStatus: TypeAlias = Literal["active", "probation", "suspended"]
PEER_STATUSES: Final[frozenset[str]] = frozenset({"active", "probation", "suspended"})

ALLOWED_ROLES: Final[Mapping[str, frozenset[str] | None]] = {
    "heartbeat": None,
    "checkpoint": None,
    "anchor": frozenset({"anchor", "coordinator"}),
    "countersign": frozenset({"countersign"}),
    "receipt": frozenset({"anchor", "coordinator"}),
    "evidence": None,
    "request": None,
    "bundle": None,
    "xns": frozenset({"relay"}),
}
"""Which peer roles may send each type; ``None``: every registered peer."""


class PeerInfo(Protocol):
    """What the receiver needs of a registry peer (:class:`remembrancer.federation.registry.model.Peer`
    fits): the DID senders write in ``sender``, the Ed25519 key, status and roles.
    Pass the peer's *effective* status (registry status and scoring combined)."""

    @property
    def did(self) -> str: ...

    @property
    def pubkey(self) -> PublicKey: ...

    @property
    def status(self) -> str: ...

    @property
    def roles(self) -> frozenset[str]: ...


@dataclass(frozen=True, slots=True)
class KnownPeer:
    """A minimal :class:`PeerInfo` (same field names as the registry's ``Peer``)."""

    did: str
    pubkey: PublicKey
    roles: frozenset[str] = frozenset()
    status: PeerStatus = "active"
    endpoint: str = ""

    def __post_init__(self) -> None:
        if type(self.did) is not str or DID_RE.fullmatch(self.did) is None:
            raise FormatError(f"{self.did!r} is not a DID", code="peer_invalid")
        unknown = set(self.roles) - ROLES
        if unknown:
            raise FormatError(
                f"unknown peer role {sorted(unknown)[0]!r}",
                code="peer_invalid",
                details={"roles": sorted(unknown)},
            )
        if self.status not in PEER_STATUSES:
            raise FormatError(f"unknown peer status {self.status!r}", code="peer_invalid")
        object.__setattr__(self, "roles", frozenset(self.roles))


REPLAY_WINDOW: Final = 64


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """One sender's replay state: the last :data:`REPLAY_WINDOW` seqs accepted
    (``recent``, ascending) and ``floor``, the greatest seq that fell out of
    the window.  A seq is fresh when it is above ``floor`` and not in
    ``recent``.  The window lets a sender's messages overtake each other on
    the way (concurrent sends share one counter) without opening replays: each
    seq is accepted at most once, and nothing at or below ``floor`` ever."""

    floor: int = 0
    recent: tuple[int, ...] = ()

    @property
    def last(self) -> int:
        return self.recent[-1] if self.recent else self.floor

    def seen(self, seq: int) -> bool:
        recent = self.recent
        if recent and seq > recent[-1]:  # newer than every seq accepted: the usual case
            return False
        return seq <= self.floor or seq in recent

    def accepted(self, seq: int) -> ReplayWindow:
        recent = self.recent
        if not recent or seq > recent[-1]:  # in order: append, and the oldest may fall out
            if len(recent) < REPLAY_WINDOW:
                return ReplayWindow(self.floor, (*recent, seq))
            if len(recent) == REPLAY_WINDOW:
                return ReplayWindow(recent[0], (*recent[1:], seq))
        window = sorted((*recent, seq))
        floor = self.floor
        while len(window) > REPLAY_WINDOW:
            floor = window.pop(0)
        return ReplayWindow(floor, tuple(window))

    def to_bytes(self) -> bytes:
        return json.dumps({"floor": self.floor, "recent": list(self.recent)},
                          separators=(",", ":")).encode()  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> ReplayWindow:
        """Parse a stored window; a bare integer (the format before the window)
        is a floor: everything up to it was accepted or is refused."""
        if not raw:
            return cls()
        text = raw.decode("ascii")
        if text.isdigit():
            return cls(int(text))
        doc = json.loads(text)
        return cls(int(doc["floor"]), tuple(sorted(int(x) for x in doc["recent"])))


class ReplayState(Protocol):
    """Per-sender :class:`ReplayWindow`; the node keeps it durable in its store.

    ``advance`` is an atomic compare-and-set: it records ``seq`` and returns
    True only if ``seq`` was fresh for the sender.  A receiver must not answer
    202 before the new value is durable.
    """

    def last_seq(self, sender: str) -> int: ...

    def seen(self, sender: str, seq: int) -> bool: ...

    def advance(self, sender: str, seq: int) -> bool: ...


class MemoryReplayState:
    """:class:`ReplayState` in memory (tests, or a node that snapshots it)."""

    def __init__(self, initial: Mapping[str, int] | None = None) -> None:
        self._windows = {k: ReplayWindow(0, (v,)) for k, v in (initial or {}).items()}
        self._lock = threading.Lock()

    def last_seq(self, sender: str) -> int:
        return self._windows.get(sender, ReplayWindow()).last

    def seen(self, sender: str, seq: int) -> bool:
        return self._windows.get(sender, ReplayWindow()).seen(seq)

    def advance(self, sender: str, seq: int) -> bool:
        with self._lock:
            window = self._windows.get(sender, ReplayWindow())
            if window.seen(seq):
                return False
            self._windows[sender] = window.accepted(seq)
            return True

    def snapshot(self) -> dict[str, int]:
        """The greatest seq accepted per sender."""
        with self._lock:
            return {k: w.last for k, w in self._windows.items()}


class RateLimiter(Protocol):
    """``take(key, cost, now)``: 0 if allowed, else seconds to wait
    (:class:`remembrancer.node.ratelimit.TokenBuckets` fits)."""

    def take(self, key: str, cost: float = ..., now: float | None = ...) -> float: ...


class MessageVerifier:
    """The receiver's acceptance checks, in the spec's order (module docstring).

    ``verify(data, now)`` returns the accepted :class:`Message` and records its
    seq, or raises.  ``now`` is the receiver's clock in seconds since the
    epoch.  Thread-safe provided the replay state and limiter are; the peer
    table is swapped whole by :meth:`set_peers`.
    """

    def __init__(
        self,
        federation_id: str,
        peers: Iterable[PeerInfo],
        *,
        replay: ReplayState | None = None,
        limiter: RateLimiter | None = None,
        skew: int = DEFAULT_SKEW,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if FEDERATION_ID_RE.fullmatch(federation_id) is None:
            raise FormatError(f"{federation_id!r} is not a federation id", code="peer_invalid")
        self.federation_id = federation_id
        self.replay: ReplayState = replay if replay is not None else MemoryReplayState()
        self.limiter = limiter
        self.skew = skew
        self.max_bytes = max_bytes
        # Called with an authentic message refused at check 8 (suspended sender),
        # e.g. to count a suspended peer's heartbeat toward its recovery.
        self.on_suspended: Callable[[Message], None] | None = None
        self._peers: dict[str, PeerInfo] = {}
        self.set_peers(peers)

    def set_peers(self, peers: Iterable[PeerInfo]) -> None:
        """Replace the peer table (after a registry change)."""
        table: dict[str, PeerInfo] = {}
        for p in peers:
            if p.did in table:
                raise FormatError(f"peer {p.did} is listed twice", code="peer_invalid")
            table[p.did] = p
        self._peers = table

    def peer(self, did: str) -> PeerInfo | None:
        return self._peers.get(did)

    @property
    def peers(self) -> tuple[PeerInfo, ...]:
        return tuple(self._peers.values())

    def verify(self, data: bytes, now: float) -> Message:
        """Check a received body; see the module docstring for the codes."""
        msg = Message.parse(data, max_bytes=self.max_bytes)  # oversize, malformed
        sender = msg.sender
        if msg.federation_id != self.federation_id:
            raise PolicyError(
                f"the message is for federation {msg.federation_id!r}, not {self.federation_id!r}",
                code="federation_mismatch",
                details={"expected": self.federation_id},
            )
        peer = self._peers.get(sender)
        if peer is None:
            raise PolicyError(
                f"{sender} is not a peer of this federation",
                code="unknown_sender",
                details={"sender": sender},
            )
        if abs(msg.timestamp - now) > self.skew:
            raise PolicyError(
                f"the timestamp is {msg.timestamp - now:+.0f} s from this node's clock,"
                f" outside the +-{self.skew} s window",
                code="stale",
                details={"timestamp": msg.timestamp, "now": int(now), "window": self.skew},
            )
        if self.replay.seen(sender, msg.seq):
            raise _replayed(sender, msg.seq, self.replay.last_seq(sender))
        if not peer.pubkey.verify(msg.signing_input, msg.signature):
            raise VerificationError(
                f"the signature does not verify with the registered key of {sender}",
                code="signature_invalid",
                details={"sender": sender},
            )
        # From here on the message is authentic: refusals may count against the sender.
        if peer.status == "suspended":
            if self.on_suspended is not None:
                self.on_suspended(msg)
            raise PolicyError(f"{sender} is suspended", code="peer_suspended")
        allowed = ALLOWED_ROLES[msg.type]
        if allowed is not None and allowed.isdisjoint(peer.roles):
            raise PolicyError(
                f"{sender} may not send {msg.type} messages (roles: "
                f"{', '.join(sorted(peer.roles)) or 'none'}; needs one of "
                f"{', '.join(sorted(allowed))})",
                code="role_not_allowed",
                details={"type": msg.type, "roles": sorted(peer.roles)},
            )
        if self.limiter is not None:
            wait = self.limiter.take(sender, 1.0, now)
            if wait > 0:
                raise PushbackError(
                    f"{sender} is over its message rate; retry in {wait:.1f} s",
                    code="rate_limited",
                    retry_after=wait,
                )
        if not self.replay.advance(sender, msg.seq):
            raise _replayed(sender, msg.seq, self.replay.last_seq(sender))
        return msg


def _replayed(sender: str, seq: int, last: int) -> ConflictError:
    return ConflictError(
        f"seq {seq} from {sender} was accepted before or is below the replay window"
        f" (greatest accepted: {last})",
        code="replayed",
        details={"seq": seq, "last_seq": last},
    )
