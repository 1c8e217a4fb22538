"""What a log monitor remembers, and its rollback evidence (pure).

A monitor (``remembrancer monitor``) follows one log: it keeps the latest
checkpoint it verified, and checks that every new one is signed and extends
it.  This module holds the two formats it writes besides the federation's
equivocation files (:mod:`remembrancer.federation.evidence`, used as they are
for split views and forks).

State file (JSON, rewritten atomically after each new checkpoint)::

    {"format": "remembrancer.monitor-state/v1",
     "origin": "log.example.org/log42",
     "vkey": "log.example.org/log42+7a2d3c1f+AR2y...",
     "size": 1234, "root": "<base64 root hash>",
     "checkpoint": "<the checkpoint note, verbatim>",
     "observed_at": 1764100000, "checkpoints_seen": 17}

Exactly these keys; ``size`` and ``root`` must be the note's, and the note
must verify under ``vkey`` (:func:`open_state`).  At most
:data:`MAX_STATE_BYTES`.

Rollback file (``.rollback``): the log's key signed a tree of ``seen``'s size,
and later a host served the smaller ``served`` as the latest::

    remembrancer.rollback/v1
    origin log.example.org/log42
    vkey log.example.org/log42+7a2d3c1f+AR2y...
    seen <base64 of the larger checkpoint note, verbatim>
    served <base64 of the smaller checkpoint note, verbatim>

Lines end with ``\\n``, nothing follows the last one, base64 is canonical
standard base64.  :func:`verify_rollback` checks it offline: both notes are
checkpoints of ``origin`` signed by ``vkey`` (named ``origin``), and
``served`` is smaller.  It proves that a client shown ``served`` as the
latest is shown a stale view (the log signed a larger tree); it does not by
itself prove a fork: when the monitor can show that ``served`` is not a
prefix of ``seen`` it writes an equivocation file instead.  At most
:data:`MAX_ROLLBACK_BYTES`, notes of at most :data:`MAX_ROLLBACK_NOTE_BYTES`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

from remembrancer.core.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint
from remembrancer.core.encoding import decode_base64, encode_base64
from remembrancer.core.errors import FormatError, VerificationError
from remembrancer.core.jcs import loads_strict, sha256_hex
from remembrancer.core.note import Note, check_key_name, parse_vkey

__all__ = [
    "MAX_ROLLBACK_BYTES",
    "MAX_ROLLBACK_NOTE_BYTES",
    "MAX_STATE_BYTES",
    "ROLLBACK_HEADER",
    "STATE_FORMAT",
    "MonitorState",
    "RollbackEvidence",
    "RollbackReport",
    "open_state",
    "verify_rollback",
]

STATE_FORMAT: Final = "remembrancer.monitor-state/v1"
MAX_STATE_BYTES: Final = 2 << 20
ROLLBACK_HEADER: Final = "remembrancer.rollback/v1"
MAX_ROLLBACK_BYTES: Final = 512 * 1024
MAX_ROLLBACK_NOTE_BYTES: Final = 128 * 1024
_STATE_KEYS: Final = frozenset(
    {"format", "origin", "vkey", "size", "root", "checkpoint", "observed_at", "checkpoints_seen"}
)
_LINE_CONTROL: Final = re.compile("[\x00-\x09\x0b-\x1f]")


def _note_checkpoint(note: bytes, what: str, code: str) -> Checkpoint:
    try:
        return Checkpoint.parse(Note.from_bytes(note).text)
    except FormatError as e:
        raise FormatError(f"{what} is not a checkpoint note: {e.message}", code=code,
                          details={"cause": e.code}) from e  # fmt: skip


@dataclass(frozen=True, slots=True)
class MonitorState:
    """The latest checkpoint a monitor verified for one log (see the module docstring)."""

    origin: str
    vkey: str
    note: bytes
    observed_at: int
    checkpoints_seen: int = 1
    checkpoint: Checkpoint = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cp = _note_checkpoint(self.note, "the state's checkpoint", "monitor_state_invalid")
        if cp.origin != self.origin:
            raise FormatError("the state's checkpoint is of another origin",
                              code="monitor_state_invalid")  # fmt: skip
        for name in ("observed_at", "checkpoints_seen"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise FormatError(f"the state's {name} is a non-negative integer",
                                  code="monitor_state_invalid")  # fmt: skip
        object.__setattr__(self, "checkpoint", cp)

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "format": STATE_FORMAT,
            "origin": self.origin,
            "vkey": self.vkey,
            "size": str(self.size),  # a decimal string: any tree size, up to 2^64 - 1
            "root": encode_base64(self.root_hash),
            "checkpoint": self.note.decode("utf-8"),
            "observed_at": self.observed_at,
            "checkpoints_seen": self.checkpoints_seen,
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> MonitorState:
        """Parse a state file strictly (signatures are checked by :func:`open_state`).

        FormatError ``monitor_state_invalid`` for anything else than the format.
        """
        if len(data) > MAX_STATE_BYTES:
            raise FormatError(f"a state file is at most {MAX_STATE_BYTES} bytes",
                              code="monitor_state_invalid")  # fmt: skip
        try:
            doc = loads_strict(data, max_bytes=MAX_STATE_BYTES)
        except FormatError as e:
            raise FormatError(f"the state file is not JSON: {e.message}",
                              code="monitor_state_invalid") from e  # fmt: skip
        if not isinstance(doc, dict) or set(doc) != _STATE_KEYS or doc["format"] != STATE_FORMAT:
            raise FormatError(f"a state file is a {STATE_FORMAT} object with exactly "
                              f"{', '.join(sorted(_STATE_KEYS))}", code="monitor_state_invalid")  # fmt: skip
        if not all(isinstance(doc[k], str) for k in ("origin", "vkey", "root", "checkpoint")):
            raise FormatError("origin, vkey, root and checkpoint are strings",
                              code="monitor_state_invalid")  # fmt: skip
        state = cls(doc["origin"], doc["vkey"], doc["checkpoint"].encode("utf-8"),
                    doc["observed_at"], doc["checkpoints_seen"])  # fmt: skip
        if doc["size"] != str(state.size) or doc["root"] != encode_base64(state.root_hash):
            raise FormatError("the state's size and root are not its checkpoint's",
                              code="monitor_state_invalid")  # fmt: skip
        return state


def open_state(data: bytes, vkey: str) -> tuple[MonitorState, SignedCheckpoint]:
    """Parse a state file and check it belongs to the log of ``vkey`` and that its
    checkpoint verifies under it.

    FormatError ``monitor_state_invalid``; ConfigError-like mismatches are
    FormatError ``monitor_state_mismatch`` (the file is another log's);
    VerificationError from :func:`~remembrancer.core.checkpoint.open_checkpoint`.
    """
    state = MonitorState.from_bytes(data)
    if state.vkey != vkey:
        raise FormatError(
            f"the state file follows {state.vkey.split('+')[0]!r} with another key; "
            "use another --state file for another log",
            code="monitor_state_mismatch",
        )
    return state, open_checkpoint(state.note, parse_vkey(vkey))


@dataclass(frozen=True, slots=True)
class RollbackEvidence:
    """Two checkpoints of ``origin`` signed by ``log_vkey``; ``served`` is smaller
    than ``seen`` (checked by :func:`verify_rollback`, not on construction)."""

    origin: str
    log_vkey: str
    seen: bytes
    served: bytes

    def __post_init__(self) -> None:
        check_key_name(self.origin, code="rollback_malformed")
        try:
            parse_vkey(self.log_vkey)
        except FormatError as e:
            raise FormatError(f"the vkey is not an Ed25519 note vkey: {e.message}",
                              code="rollback_malformed") from e  # fmt: skip
        for what, note in (("seen", self.seen), ("served", self.served)):
            if not isinstance(note, bytes) or len(note) > MAX_ROLLBACK_NOTE_BYTES:
                raise FormatError(f"the {what} note is bytes, at most {MAX_ROLLBACK_NOTE_BYTES}",
                                  code="rollback_malformed")  # fmt: skip
            _note_checkpoint(note, f"the {what} note", "rollback_malformed")

    def to_bytes(self) -> bytes:
        lines = [ROLLBACK_HEADER, f"origin {self.origin}", f"vkey {self.log_vkey}",
                 f"seen {encode_base64(self.seen)}", f"served {encode_base64(self.served)}"]  # fmt: skip
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes) -> RollbackEvidence:
        """Parse a rollback file strictly; FormatError ``rollback_malformed``."""
        if len(data) > MAX_ROLLBACK_BYTES:
            raise FormatError(f"a rollback file is at most {MAX_ROLLBACK_BYTES} bytes",
                              code="rollback_malformed")  # fmt: skip
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise FormatError("a rollback file is UTF-8", code="rollback_malformed") from e
        if not text.endswith("\n") or _LINE_CONTROL.search(text):
            raise FormatError("a rollback file is newline-terminated lines",
                              code="rollback_malformed")  # fmt: skip
        lines = text[:-1].split("\n")
        keys = ("origin", "vkey", "seen", "served")
        if len(lines) != 5 or lines[0] != ROLLBACK_HEADER:
            raise FormatError(f"a rollback file is {ROLLBACK_HEADER} then {', '.join(keys)} lines",
                              code="rollback_malformed")  # fmt: skip
        values = []
        for key, line in zip(keys, lines[1:], strict=True):
            name, sep, value = line.partition(" ")
            if name != key or not sep or not value:
                raise FormatError(f"expected a {key!r} line", code="rollback_malformed")
            values.append(value)
        seen = decode_base64(values[2], what="the seen note", code="rollback_malformed")
        served = decode_base64(values[3], what="the served note", code="rollback_malformed")
        evidence = cls(values[0], values[1], seen, served)
        if evidence.to_bytes() != bytes(data):
            raise FormatError("the rollback file is not in canonical form",
                              code="rollback_malformed")  # fmt: skip
        return evidence

    @property
    def evidence_ref(self) -> str:
        return sha256_hex(self.to_bytes())


@dataclass(frozen=True, slots=True)
class RollbackReport:
    origin: str
    seen: Checkpoint
    served: Checkpoint
    evidence_ref: str

    def to_dict(self) -> dict[str, Any]:
        def cp(c: Checkpoint) -> dict[str, Any]:
            return {"size": c.size, "root": encode_base64(c.root_hash)}

        return {"kind": "rollback", "origin": self.origin, "seen": cp(self.seen),
                "served": cp(self.served), "evidence_ref": self.evidence_ref}  # fmt: skip


def verify_rollback(evidence: RollbackEvidence) -> RollbackReport:
    """Check a rollback file offline.

    VerificationError codes: ``rollback_vkey_mismatch`` (the vkey is not named
    after the origin), ``rollback_note_unsigned`` (details ``note``, ``cause``),
    ``rollback_origin_mismatch``, ``rollback_not_smaller``.
    """
    verifier = parse_vkey(evidence.log_vkey)
    if verifier.name != evidence.origin:
        raise VerificationError(
            f"the vkey is named {verifier.name!r}, not after the origin {evidence.origin!r}",
            code="rollback_vkey_mismatch",
        )
    opened = {}
    for what, note in (("seen", evidence.seen), ("served", evidence.served)):
        try:
            opened[what] = open_checkpoint(note, verifier).checkpoint
        except VerificationError as e:
            code = "rollback_origin_mismatch" if e.code == "checkpoint_origin_mismatch" else None
            raise VerificationError(
                f"the {what} note is not a checkpoint of {evidence.origin!r} signed by the log "
                f"key: {e.message}",
                code=code or "rollback_note_unsigned",
                details={"note": what, "cause": e.code},
            ) from e
    seen, served = opened["seen"], opened["served"]
    if served.size >= seen.size:
        raise VerificationError(
            f"the served checkpoint (size {served.size}) is not smaller than the one seen "
            f"(size {seen.size})",
            code="rollback_not_smaller",
        )
    return RollbackReport(evidence.origin, seen, served, evidence.evidence_ref)
