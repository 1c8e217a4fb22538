"""The signed envelope: :class:`Message` and its one wire form.

A message is one JSON object with exactly the members ``type``,
``federation_id``, ``sender``, ``seq``, ``timestamp``, ``content`` and
``signature``.  Its wire form is the RFC 8785 canonical form of that object
(nothing else is accepted), and ``signature`` is the unpadded base64url
Ed25519 signature, by the sender's registered key, of the canonical form of
the object without ``signature`` (the *signing input*).  The canonical-form
check has a fast path on msgspec's JSON codec (see
:func:`decode_canonical`) and falls back to :mod:`remembrancer.core.jcs`.
Pure.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from remembrancer.core.encoding import b64url_encode
from remembrancer.core.errors import FormatError
from remembrancer.core.identifiers import FEDERATION_ID_RE
from remembrancer.core.jcs import canonicalize, loads_strict, parse_canonical
from remembrancer.core.keys import PublicKey
from remembrancer.federation.protocol.contents import CONTENT_PARSERS, Content
from remembrancer.federation.protocol.grammar import (
    MAX_SEQ,
    MESSAGE_TYPES,
    MessageType,
    check_did,
    check_int,
    check_match,
    check_sig,
    malformed,
)

__all__ = ["MAX_MESSAGE_BYTES", "Message", "MessageSigner", "SeqCounter"]


MAX_MESSAGE_BYTES: Final = 256 * 1024
"""Largest accepted message body, in bytes (262,144)."""


_ENVELOPE: Final = frozenset(
    {"type", "federation_id", "sender", "seq", "timestamp", "content", "signature"}
)
_SIG_MEMBER: Final = b',"signature":"'


def decode_canonical(data: bytes, max_bytes: int) -> dict[str, Any]:
    """Parse ``data`` and require it to be the RFC 8785 form of what it holds.

    Fast path: :func:`remembrancer.core.jcs.parse_canonical` (byte equality
    with a sorted re-encoding, for text where that is RFC
    8785).  Anything else takes the strict parser and :func:`canonicalize`;
    both refuse what RFC 8785 cannot represent (``NaN``, ``Infinity``,
    inexact integers, lone surrogates, duplicate keys).
    """
    value = parse_canonical(data)
    if value is not None:
        if type(value) is not dict:
            raise FormatError("a message is a JSON object", code="malformed")
        return cast(dict[str, Any], value)
    value = loads_strict(data, max_bytes=max_bytes)
    if type(value) is not dict:
        raise FormatError("a message is a JSON object", code="malformed")
    if canonicalize(value) != data:
        raise FormatError(
            "the body is not the RFC 8785 canonical form of the message", code="malformed"
        )
    return cast(dict[str, Any], value)


class MessageSigner(Protocol):
    """What signing needs: a ``did`` and ``sign(bytes) -> 64 bytes`` (e.g. core.keys.SigningKey)."""

    @property
    def did(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed, well-formed federation message (signature not yet checked).

    ``raw`` is the exact wire form (RFC 8785 canonical JSON) and
    ``signing_input`` the canonical form without ``signature``.
    """

    type: MessageType
    federation_id: str
    sender: str
    seq: int
    timestamp: int
    content: Content
    signature: bytes
    raw: bytes = field(repr=False)
    signing_input: bytes = field(repr=False)

    # -- making -------------------------------------------------------------------

    @classmethod
    def sign(
        cls,
        key: MessageSigner,
        content: Content,
        *,
        federation_id: str,
        seq: int,
        timestamp: int,
        sender: str | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> Message:
        """Sign ``content`` as ``sender`` (default ``key.did``; use the DID the
        registry lists for this key).  The result is re-parsed, so a message
        that receivers would refuse as malformed or oversize is never made."""
        body: dict[str, Any] = {
            "type": content.TYPE,
            "federation_id": federation_id,
            "sender": key.did if sender is None else sender,
            "seq": seq,
            "timestamp": timestamp,
            "content": content.to_json(),
        }
        signing_input = canonicalize(body)
        body["signature"] = b64url_encode(key.sign(signing_input))
        raw = canonicalize(body)
        if len(raw) > max_bytes:
            raise FormatError(
                f"the message is {len(raw)} bytes, over the {max_bytes}-byte limit",
                code="oversize",
                details={"size": len(raw), "limit": max_bytes},
            )
        return cls.parse(raw, max_bytes=max_bytes)

    # -- codec ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The wire form: RFC 8785 canonical JSON."""
        return self.raw

    @classmethod
    def parse(cls, data: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
        """Parse the wire form strictly.

        Raises FormatError ``oversize`` (more than ``max_bytes``) or
        ``malformed`` (anything else: not canonical JSON, wrong or extra
        members, types, ranges, unknown ``type``, bad ``content``).
        """
        if type(data) is not bytes:
            if not isinstance(data, bytearray | memoryview):
                raise FormatError("a message is bytes", code="malformed")
            data = bytes(data)
        if len(data) > max_bytes:
            raise FormatError(
                f"the message is {len(data)} bytes, over the {max_bytes}-byte limit",
                code="oversize",
                details={"size": len(data), "limit": max_bytes},
            )
        try:
            value = decode_canonical(data, max_bytes)
        except FormatError as e:
            if e.code == "malformed":
                raise
            raise FormatError(e.message, code="malformed", details={"reason": e.code}) from e
        if value.keys() != _ENVELOPE:
            missing = sorted(_ENVELOPE - value.keys())
            if missing:
                raise malformed(missing[0], "is missing")
            raise malformed(sorted(value.keys() - _ENVELOPE)[0], "is not a message field")
        kind = value["type"]
        parse_content = CONTENT_PARSERS.get(kind) if type(kind) is str else None
        if parse_content is None:
            raise malformed("type", "must be one of " + ", ".join(MESSAGE_TYPES))
        federation_id = check_match(
            value["federation_id"], FEDERATION_ID_RE, "federation_id", "a federation id"
        )
        sender = check_did(value["sender"], "sender")
        seq = check_int(value["seq"], "seq", 1)
        timestamp = check_int(value["timestamp"], "timestamp")
        signature = check_sig(value["signature"], "signature")
        content = parse_content(value["content"])
        # ``data`` is canonical, so the top-level signature member sits between
        # "seq" and "timestamp", and is the last ',"signature":"' in the text
        # (only an integer and the type name follow it).  Cutting it out leaves
        # the canonical form of the object without it.
        cut = data.rfind(_SIG_MEMBER)
        end = cut + len(_SIG_MEMBER) + 87
        signing_input = data[:cut] + data[end:]
        return cls(
            kind, federation_id, sender, seq, timestamp, content, signature, data, signing_input
        )

    # -- helpers -------------------------------------------------------------------

    @property
    def message_id(self) -> str:
        """``sha256:`` + hex SHA-256 of the wire form: names this exact message."""
        return "sha256:" + hashlib.sha256(self.raw).hexdigest()

    def verify_signature(self, public_key: PublicKey) -> bool:
        """True if ``signature`` verifies over ``signing_input`` with ``public_key``."""
        return public_key.verify(self.signing_input, self.signature)


class SeqCounter:
    """A sender's ``seq``: strictly increasing, from the clock where possible.

    ``next(now)`` returns ``max(last + 1, floor(now * 1e6))``: the time in
    microseconds, so a sender that restarts without its counter still sends
    increasing numbers (as long as its clock does not go back).  Thread-safe.
    """

    def __init__(self, last: int = 0) -> None:
        self._last = last
        self._lock = threading.Lock()

    @property
    def last(self) -> int:
        return self._last

    def next(self, now: float) -> int:
        with self._lock:
            seq = max(self._last + 1, int(now * 1_000_000))
            if seq > MAX_SEQ:
                raise FormatError("the seq counter is exhausted", code="seq_exhausted")
            self._last = seq
            return seq
