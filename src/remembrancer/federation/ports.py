"""The narrow interfaces a federation extension is given, instead of the whole service.

An extension (collaborative anchoring, anti-entropy, cross-namespace relay)
receives exactly the collaborators it uses, each typed by one of these
protocols, so what it may do is visible in its constructor and checked by
the type checker:

- :class:`Inbox`: register handlers for accepted messages of a content
  type, and be started and stopped with the service;
- :class:`PeerView`: the registry in force, this node's DID, the peers'
  announced heads and effective statuses, and scoring observations;
- :class:`Outbox`: sign and deliver messages as this node;
- :class:`ClaimReports`, :class:`EquivocationReports`: hand proven
  misbehaviour over (verified again, kept, acted on, gossiped);
- :class:`ReceiptKeeper`: the relay filter for federation receipts and the
  store of final ones.

The service's parts (:class:`~remembrancer.federation.peers.PeerDirectory`,
:class:`~remembrancer.federation.outbox.Outbox`,
:class:`~remembrancer.federation.misbehaviour.Misbehaviour`,
:class:`~remembrancer.federation.countersigning.Countersigning`) and the
service itself (the inbox) satisfy them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from remembrancer.federation.evidence.claims import ClaimEvidence
from remembrancer.federation.evidence.equivocation import EquivocationEvidence
from remembrancer.federation.receipts import FederationReceipt
from remembrancer.federation.registry.model import Peer, Registry
from remembrancer.federation.transport import Delivery, FederationClient

__all__ = [
    "ClaimReports",
    "EquivocationReports",
    "Extension",
    "Handler",
    "Inbox",
    "Outbox",
    "PeerView",
    "ReceiptKeeper",
]

Handler = Callable[[str, Any, bytes], Awaitable[None]]
"""``handler(sender DID, content, raw wire bytes)``, awaited after acceptance."""


class Extension(Protocol):
    """Something started and stopped with the federation service."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Inbox(Protocol):
    def add_handler(self, content_type: type, handler: Handler) -> None:
        """Call ``handler`` for every accepted message of that content type, in
        registration order; a RemembrancerError it raises counts against the sender."""
        ...

    def add_extension(self, extension: Extension) -> None:
        """Start and stop ``extension`` with the service."""
        ...


class PeerView(Protocol):
    @property
    def registry(self) -> Registry:
        """The registry in force (it changes when a registry change is applied)."""
        ...

    @property
    def self_did(self) -> str: ...

    @property
    def heads(self) -> Mapping[str, Mapping[str, Any]]:
        """Per peer DID, its latest heartbeat: ``{"at", "at_precise", "logs": {origin: (size, root)}}``."""
        ...

    def effective(self) -> tuple[Peer, ...]:
        """Every registry peer with its effective status (registry status and this node's scores)."""
        ...

    def listed(self) -> tuple[Peer, ...]:
        """The effective peers as last handed to the message verifier."""
        ...

    async def score(self, peer: str, event: str, reason: str = "") -> None:
        """An observation of ``peer``: ``valid``, ``invalid`` (reason: a code) or ``missed``."""
        ...

    def coordinates(self, did: str, target: str, epoch: int) -> bool:
        """Whether ``did`` is in the coordinator rotation of ``target`` in ``epoch``
        (a peer that joined through a registry change: once its rail is announced ready)."""
        ...


class Outbox(Protocol):
    async def deliver(
        self,
        peers: Sequence[Any],
        content: Any,
        *,
        attempts: int = 3,
        client: FederationClient | None = None,
    ) -> list[Delivery]:
        """Sign ``content`` as this node and send it to each peer (objects with ``endpoint``)."""
        ...


class ClaimReports(Protocol):
    async def report_claim(
        self, evidence: ClaimEvidence, *, gossip: bool = True
    ) -> dict[str, Any]: ...


class EquivocationReports(Protocol):
    async def report_equivocation(
        self, evidence: EquivocationEvidence, *, gossip: bool = True
    ) -> dict[str, Any]: ...


class ReceiptKeeper(Protocol):
    def checked_receipt(self, receipt: FederationReceipt) -> FederationReceipt:
        """Only the countersignatures that verify against the registry; checked final."""
        ...

    def keep_receipt(self, receipt: FederationReceipt) -> bool:
        """Store a checked final receipt (blocking); whether anything changed."""
        ...
