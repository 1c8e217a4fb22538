"""What the explorer reads from a node (the node's :class:`Node` satisfies it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from remembrancer.anchoring.scheduler import Scheduler
from remembrancer.federation.service import FederationService
from remembrancer.federation.witnessing import CheckpointWitnessing
from remembrancer.log.sequencer import NamespaceProvider, Sequencer
from remembrancer.storage.base import Store


class ExplorerSource(Protocol):
    """Read access to one node: its logs, anchoring, witnessing and federation."""

    @property
    def store(self) -> Store: ...

    @property
    def sequencer(self) -> Sequencer: ...

    @property
    def scheduler(self) -> Scheduler: ...

    @property
    def witnessing(self) -> CheckpointWitnessing: ...

    @property
    def federation(self) -> FederationService | None: ...

    @property
    def namespaces(self) -> NamespaceProvider: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    def info(self) -> dict[str, Any]:
        """The node's DID, origin prefix, log vkeys, witness vkey and version."""
        ...
