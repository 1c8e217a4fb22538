"""The witness server: C2SP tlog-witness ``add-checkpoint`` on a typed store.

One witness, one small table: per log origin, the latest checkpoint this
witness cosigned (:class:`~remembrancer.storage.base.CosignedRow`: size,
root hash, the note as offered, the cosignature line, the time).  The
decision is the pure :func:`~remembrancer.core.witness.check_add_checkpoint`;
this module adds the state around it:

- :meth:`WitnessServer.get_cosigned` reads an origin's row;
  :meth:`WitnessServer.put_cosigned` stores a newer one with a
  compare-and-swap on the stored *size* (``expect_size``; ``None`` for the
  first checkpoint of an origin).  The size is what the spec's ``old`` line
  is checked against, so two racing requests for one origin cannot both
  cosign from the same old size: the loser re-reads and is judged against
  the winner's checkpoint (a 409 ``witness_old_size_mismatch`` naming the new
  size, as the spec wants), whichever process or thread it runs in.
- Every refusal is a :class:`~remembrancer.core.witness.WitnessRefusal`
  whose ``code`` is the spec's case; the node maps codes to statuses (the
  server never speaks HTTP).  A ``witness_root_mismatch`` refusal carries
  both notes in its details (``cosigned``, ``offered``): evidence of a split
  view for the caller to keep.

The node (``POST /witness/add-checkpoint``) and the federation simulation
both run this class, on the node's store and on a memory store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol

from remembrancer.core.cosignature import cosign
from remembrancer.core.errors import NotFoundError
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import NoteVerifier
from remembrancer.core.witness import (
    AddCheckpointRequest,
    CosignedState,
    WitnessRefusal,
    check_add_checkpoint,
    checkpoint_origin,
)
from remembrancer.storage.base import CosignedRow

__all__ = ["CAS_ATTEMPTS", "WitnessServer", "WitnessStore"]

CAS_ATTEMPTS: Final = 5  # compare-and-swap attempts before a racing request is refused


class WitnessStore(Protocol):
    """The part of a :class:`~remembrancer.storage.base.Store` a witness uses."""

    def get_cosigned(self, origin: str) -> CosignedRow | None: ...

    def put_cosigned(self, row: CosignedRow, *, expect_size: int | None) -> bool: ...


class WitnessServer:
    """Cosigns checkpoints of the logs it follows, never two roots at one size.

    ``logs`` maps each followed origin to the keys its checkpoints must be
    signed with (looked up on every request, so a caller may update it).
    Blocking (store I/O): call it from a worker thread in async code.
    """

    def __init__(
        self,
        store: WitnessStore,
        name: str,
        key: SigningKey,
        logs: Mapping[str, Sequence[NoteVerifier]],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.name = name
        self._key = key
        self.logs = logs
        self._clock = clock

    def get_cosigned(self, origin: str) -> CosignedRow | None:
        """What this witness last cosigned for ``origin`` (None: nothing yet)."""
        return self.store.get_cosigned(origin)

    def put_cosigned(self, origin: str, row: CosignedRow, expect_size: int | None) -> bool:
        """Store ``row`` as ``origin``'s latest if the stored size is still
        ``expect_size`` (None: no row yet); whether it was stored."""
        if row.origin != origin:
            raise ValueError(f"a row of {row.origin!r} stored under {origin!r}")
        return self.store.put_cosigned(row, expect_size=expect_size)

    def add_checkpoint(self, body: bytes) -> bytes:
        """Decide one ``add-checkpoint`` request body; the cosignature line (UTF-8,
        newline-terminated) or :class:`WitnessRefusal` with the spec's code."""
        req = AddCheckpointRequest.parse(body)
        origin = checkpoint_origin(req.note)
        held: CosignedRow | None = None
        for _ in range(CAS_ATTEMPTS):
            held = self.get_cosigned(origin)
            state = None if held is None else CosignedState(held.size, held.root_hash, held.note)
            signed = check_add_checkpoint(req, self.logs.get(origin), state)
            now = int(self._clock())
            line = cosign(signed.body, self._key, self.name, now).to_line()
            cp = signed.checkpoint
            row = CosignedRow(origin, cp.size, cp.root_hash, req.note, line, now)
            if self.put_cosigned(origin, row, None if held is None else held.size):
                return line.encode()
        size = held.size if held is not None else 0
        raise WitnessRefusal("concurrent updates; retry", code="witness_old_size_mismatch",
                             details={"size": size})  # fmt: skip

    def witnessed_checkpoint(self, origin: str) -> bytes:
        """The latest cosigned checkpoint of ``origin`` with this witness's
        cosignature appended (NotFoundError ``origin_unknown`` if none)."""
        row = self.get_cosigned(origin)
        if row is None:
            raise NotFoundError(
                f"this witness has cosigned nothing for {origin!r}", code="origin_unknown"
            )
        return row.note + row.cosignature.encode()
