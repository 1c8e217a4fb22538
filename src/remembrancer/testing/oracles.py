"""Soundness oracles for the fuzzers (:mod:`remembrancer.testing.fuzz`).

An oracle looks at an input that the code under test *accepted* and checks,
without that code, that it still verifies under the keys that made the
original samples: PyNaCl's Ed25519 directly, on the bytes as the
specifications define them (C2SP signed-note and tlog-cosignature, the record
and federation-message signing inputs of docs/spec).  Each function returns
quietly or raises :class:`Unsound` (an AssertionError) saying what does not
hold.  A verifier that accepts what these refuse is broken.

The parsing here is deliberately plain (it assumes the input was accepted,
so well formed); only the canonical JSON encoder is shared with the code
under test, as the signing inputs are defined by it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from remembrancer.core.jcs import canonicalize, loads_strict
from remembrancer.core.keys import PublicKey

_SIG_PREFIX = "\u2014 "


class Unsound(AssertionError):
    """An accepted input does not verify under the original keys."""


def ed25519(public: PublicKey, message: bytes, signature: bytes) -> bool:
    """PyNaCl's verdict on one Ed25519 signature (never raises)."""
    try:
        VerifyKey(public.raw).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def note_parts(note: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A signed note's text (everything before its last blank line, with its
    final newline) and its signature lines as (key name, key ID || signature)."""
    text, sep, lines = note.rpartition(b"\n\n")
    if not sep or not lines.endswith(b"\n"):
        raise Unsound("not a signed note")
    sigs = []
    for line in lines[:-1].split(b"\n"):
        name, _, blob = line.decode().removeprefix(_SIG_PREFIX).rpartition(" ")
        sigs.append((name, base64.b64decode(blob, validate=True)))
    return text + b"\n", sigs


def key_id(name: str, sig_type: int, public: PublicKey) -> bytes:
    """A note key's ID: SHA-256(name || 0x0A || type || key)[:4] (signed-note)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public.raw).digest()[:4]


def check_note_signed(note: bytes, name: str, public: PublicKey) -> bytes:
    """The note's text, if an Ed25519 note signature (type 0x01) of ``name``
    by ``public`` verifies over it."""
    text, sigs = note_parts(note)
    kid = key_id(name, 1, public)
    if not any(n == name and b[:4] == kid and ed25519(public, text, b[4:]) for n, b in sigs):
        raise Unsound(f"no signature of {name} verifies under the original key")
    return text


def check_cosigned(note: bytes, name: str, public: PublicKey) -> None:
    """A ``cosignature/v1`` (type 0x04) of ``name`` by ``public`` verifies over the note's text."""
    text, sigs = note_parts(note)
    kid = key_id(name, 4, public)

    def ok(blob: bytes) -> bool:
        message = b"cosignature/v1\ntime %d\n" % int.from_bytes(blob[4:12], "big") + text
        return len(blob) == 76 and blob[:4] == kid and ed25519(public, message, blob[12:])

    if not any(ok(b) for _, b in sigs):
        raise Unsound(f"no cosignature of {name} verifies under the original witness key")


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_record_signed(
    data: bytes, actor: PublicKey, witnesses: Mapping[str, PublicKey], quorum: int
) -> dict[str, Any]:
    """An accepted record: one actor signature by ``actor`` and signatures of at
    least ``quorum`` distinct keys of ``witnesses`` (did -> key, the actor's
    own key never counting) verify over its signing input (the canonical
    envelope without ``signatures``).  Returns the envelope."""
    value: dict[str, Any] = loads_strict(data)
    body = canonicalize({k: v for k, v in value.items() if k != "signatures"})
    if value["actor"] != actor.did:
        raise Unsound(f"the record's actor {value['actor']} is not the original actor")
    sigs = [(s["kid"], s["role"], _b64url(s["sig"])) for s in value["signatures"]]
    by_actor = [sig for kid, role, sig in sigs if role == "actor"]
    if len(by_actor) != 1 or not ed25519(actor, body, by_actor[0]):
        raise Unsound("the actor signature does not verify under the original actor key")
    good = {
        kid
        for kid, role, sig in sigs
        if role == "witness" and kid in witnesses and kid != actor.did
        and ed25519(witnesses[kid], body, sig)
    }  # fmt: skip
    if len(good) < quorum:
        raise Unsound(f"{len(good)} signatures of the original witnesses verify, {quorum} needed")
    return value


def check_message_signed(data: bytes, peers: Mapping[str, PublicKey]) -> dict[str, Any]:
    """An accepted federation message: its sender is one of ``peers`` (did ->
    key) and its signature verifies over the canonical message without
    ``signature``.  Returns the message."""
    value: dict[str, Any] = loads_strict(data)
    key = peers.get(value["sender"])
    if key is None:
        raise Unsound(f"the sender {value['sender']} is not one of the original peers")
    body = canonicalize({k: v for k, v in value.items() if k != "signature"})
    if not ed25519(key, body, _b64url(value["signature"])):
        raise Unsound("the message signature does not verify under the sender's original key")
    return value
