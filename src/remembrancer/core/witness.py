"""The C2SP tlog-witness ``add-checkpoint`` decision, as a pure function.

A witness keeps, per log origin, the latest checkpoint it cosigned.  Given a
request (old size, consistency proof, checkpoint note), the log's trusted
keys and that stored state, :func:`check_add_checkpoint` returns the
checkpoint to cosign or raises :class:`WitnessRefusal` whose ``code`` names
the spec's case (the spec's HTTP status of each is the node's business:
``remembrancer.node.statuses.WITNESS_STATUS``):

==============================  ============================================
code                            when
==============================  ============================================
``witness_request_malformed``   the body is not old line, proof lines, blank
                                line, note (or more than 63 proof lines)
``witness_origin_unknown``      the checkpoint's origin is not a witnessed log
``witness_signature_invalid``   no signature verifies against a trusted key
``witness_old_size_too_large``  old size > checkpoint size
``witness_old_size_mismatch``   old size != latest cosigned size (details:
                                ``size``, served as ``text/x.tlog.size``)
``witness_root_mismatch``       same size as the latest cosigned, other root
``witness_proof_invalid``       the consistency proof does not verify
==============================  ============================================

The caller performs the atomic check-and-update: read the state, call this,
then compare-and-swap the new state, retrying on a lost race.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from remembrancer.core.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint
from remembrancer.core.encoding import decode_base64
from remembrancer.core.errors import FormatError, RemembrancerError, VerificationError
from remembrancer.core.note import NoteVerifier
from remembrancer.core.rfc6962 import verify_consistency

MAX_PROOF_LINES = 63
MAX_REQUEST_BYTES = 1 << 20
_OLD_RE = re.compile(r"old (0|[1-9][0-9]{0,19})")


class WitnessRefusal(RemembrancerError):
    """A refused add-checkpoint request; ``code`` names the spec's case."""

    fault = "input"


@dataclass(frozen=True, slots=True)
class AddCheckpointRequest:
    old_size: int
    proof: tuple[bytes, ...]
    note: bytes

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpointRequest:
        if len(body) > MAX_REQUEST_BYTES:
            raise WitnessRefusal("request body too large", code="witness_request_malformed")
        split = body.find(b"\n\n")
        if split < 0:
            raise WitnessRefusal(
                "the body must be an old size line, proof lines, an empty line and a checkpoint",
                code="witness_request_malformed",
            )
        try:
            head = body[:split].decode("ascii").split("\n")
        except UnicodeDecodeError as e:
            raise WitnessRefusal(
                "the header lines must be ASCII", code="witness_request_malformed"
            ) from e
        m = _OLD_RE.fullmatch(head[0])
        if m is None:
            raise WitnessRefusal(
                "the first line must be 'old <size>' in decimal without leading zeroes",
                code="witness_request_malformed",
            )
        old = int(m.group(1))
        if old >= 2**64:
            raise WitnessRefusal("old size out of range", code="witness_request_malformed")
        lines = head[1:]
        if len(lines) > MAX_PROOF_LINES:
            raise WitnessRefusal(
                f"at most {MAX_PROOF_LINES} consistency proof lines",
                code="witness_request_malformed",
            )
        proof = []
        for line in lines:
            try:
                h = decode_base64(line, what="a proof hash", code="witness_request_malformed")
            except FormatError as e:
                raise WitnessRefusal(e.message, code="witness_request_malformed") from e
            if len(h) != 32:
                raise WitnessRefusal("a proof hash is 32 bytes", code="witness_request_malformed")
            proof.append(h)
        return cls(old, tuple(proof), body[split + 2 :])

    def to_bytes(self) -> bytes:
        import base64

        lines = [f"old {self.old_size}"] + [base64.b64encode(h).decode() for h in self.proof]
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.note


@dataclass(frozen=True, slots=True)
class CosignedState:
    """What a witness remembers of one log: the latest checkpoint it cosigned."""

    size: int
    root_hash: bytes
    note: bytes


def checkpoint_origin(note: bytes) -> str:
    """The origin line of a checkpoint note, without verifying anything."""
    text = note.split(b"\n", 1)[0]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WitnessRefusal(
            "the checkpoint origin is not UTF-8", code="witness_request_malformed"
        ) from e


def check_add_checkpoint(
    req: AddCheckpointRequest,
    log_verifiers: Sequence[NoteVerifier] | None,
    state: CosignedState | None,
) -> SignedCheckpoint:
    """Decide an add-checkpoint request; see the module docstring for the codes."""
    if log_verifiers is None:
        raise WitnessRefusal(
            f"origin {checkpoint_origin(req.note)!r} is not a log this witness follows",
            code="witness_origin_unknown",
        )
    signed = None
    last_error: RemembrancerError | None = None
    for verifier in log_verifiers:
        try:
            signed = open_checkpoint(req.note, verifier)
            break
        except VerificationError as e:
            last_error = e
        except FormatError as e:
            raise WitnessRefusal(
                f"malformed checkpoint: {e.message}", code="witness_request_malformed"
            ) from e
    if signed is None:
        raise WitnessRefusal(
            "no signature on the checkpoint verifies against a trusted key of its log",
            code="witness_signature_invalid",
            details={"reason": last_error.code if last_error else "no keys"},
        )
    cp: Checkpoint = signed.checkpoint
    if req.old_size > cp.size:
        raise WitnessRefusal(
            f"old size {req.old_size} is larger than the checkpoint size {cp.size}",
            code="witness_old_size_too_large",
        )
    latest = state.size if state is not None else 0
    if req.old_size != latest:
        raise WitnessRefusal(
            f"old size {req.old_size} is not the latest cosigned size {latest}",
            code="witness_old_size_mismatch",
            details={"size": latest},
        )
    if state is not None and cp.size == state.size:
        if cp.root_hash != state.root_hash:
            raise WitnessRefusal(
                "same size as the latest cosigned checkpoint but a different root hash",
                code="witness_root_mismatch",
                details={"size": latest, "cosigned": state.note.decode("utf-8", "replace"),
                         "offered": req.note.decode("utf-8", "replace")},
            )  # fmt: skip
        if req.proof:
            raise WitnessRefusal(
                "a proof between equal sizes must be empty", code="witness_proof_invalid"
            )
        return signed
    if state is None or state.size == 0:
        if req.proof:
            raise WitnessRefusal(
                "the proof must be empty when old size is 0", code="witness_proof_invalid"
            )
        return signed
    try:
        verify_consistency(state.size, cp.size, state.root_hash, cp.root_hash, list(req.proof))
    except VerificationError as e:
        raise WitnessRefusal(
            f"the consistency proof from {state.size} to {cp.size} does not verify: {e.message}",
            code="witness_proof_invalid",
            details={"cosigned": state.note.decode("utf-8", "replace"),
                     "offered": req.note.decode("utf-8", "replace"),
                     "proof_error": e.code},
        ) from e  # fmt: skip
    return signed
