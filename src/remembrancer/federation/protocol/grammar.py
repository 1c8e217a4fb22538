"""The small strict checks every federation message field goes through.

Each check takes a decoded JSON value and the path of the field, and
returns the value or raises FormatError ``malformed`` naming that field:
exact types (``bool`` is not an integer), bounded strings and lists
(:data:`MAX_LIST_ITEMS`), the grammars of DIDs, namespaces, hashes, log
origins and signatures.  Pure.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, TypeAlias, get_args

from remembrancer.core.encoding import b64url_decode
from remembrancer.core.errors import FormatError
from remembrancer.core.identifiers import MAX_DID_CHARS, NAMESPACE_RE, is_did
from remembrancer.core.note import check_note_text, is_valid_key_name

__all__ = ["MAX_LIST_ITEMS", "MAX_SEQ", "MESSAGE_TYPES"]


MAX_SEQ: Final = 2**53 - 1
MAX_LIST_ITEMS: Final = 1024
MAX_ORIGIN_CHARS: Final = 255

MessageType: TypeAlias = Literal[
    "heartbeat",
    "checkpoint",
    "anchor",
    "countersign",
    "receipt",
    "evidence",
    "request",
    "bundle",
    "xns",
]
MESSAGE_TYPES: Final[tuple[MessageType, ...]] = get_args(MessageType)


_HASH_RE: Final = re.compile(r"sha256:[0-9a-f]{64}")
_SIG_RE: Final = re.compile(r"[A-Za-z0-9_-]{85}[AQgw]")  # 64 bytes: 4 zero padding bits
_RECEIPT_TYPE_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]{0,62}/v[0-9]{1,4}")


def malformed(where: str, message: str) -> FormatError:
    return FormatError(f"{where} {message}", code="malformed", details={"field": where})


def check_object(
    value: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    if type(value) is not dict:
        raise malformed(where, "must be a JSON object")
    for k in required:
        if k not in value:
            raise malformed(f"{where}.{k}", "is missing")
    if len(value) != len(required):
        extra = [k for k in value if k not in required and k not in optional]
        if extra:
            raise malformed(f"{where}.{sorted(extra)[0]}", "is not a known field")
    return value


def check_int(value: Any, where: str, low: int = 0, high: int = MAX_SEQ) -> int:
    if type(value) is not int or not low <= value <= high:
        raise malformed(where, f"must be an integer from {low} to {high}")
    return value


def check_match(value: Any, pattern: re.Pattern[str], where: str, what: str) -> str:
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise malformed(where, f"must be {what}")
    return value


def check_namespace(value: Any, where: str) -> str:
    return check_match(value, NAMESPACE_RE, where, "a namespace <org>:<name>")


def check_hash(value: Any, where: str) -> str:
    return check_match(value, _HASH_RE, where, "sha256:<64 lowercase hex>")


def check_did(value: Any, where: str) -> str:
    if type(value) is not str or not is_did(value):
        raise malformed(where, f"must be a DID of at most {MAX_DID_CHARS} characters")
    return value


def check_origin(value: Any, where: str) -> str:
    """A log origin: a signed-note key name (:func:`remembrancer.core.note.is_valid_key_name`)
    of at most :data:`MAX_ORIGIN_CHARS` characters."""
    if type(value) is not str or len(value) > MAX_ORIGIN_CHARS or not is_valid_key_name(value):
        raise malformed(where, "must be a log origin (a signed-note key name, <= 255 chars)")
    return value


def check_text(value: Any, where: str) -> str:
    if type(value) is not str or not value:
        raise malformed(where, "must be a non-empty string")
    return value


def check_note(value: Any, where: str) -> str:
    try:
        return check_note_text(value)
    except FormatError as e:
        raise malformed(where, f"must be signed-note text: {e.message}") from e


def check_list(value: Any, where: str, *, max_items: int = MAX_LIST_ITEMS) -> list[Any]:
    if type(value) is not list or len(value) > max_items:
        raise malformed(where, f"must be a list of at most {max_items} items")
    return value


def check_json_objects(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    items = check_list(value, where)
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise malformed(f"{where}[{i}]", "must be a JSON object")
    return tuple(items)


def check_typed_object(value: Any, where: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise malformed(where, "must be a JSON object")
    check_match(value.get("type"), _RECEIPT_TYPE_RE, f"{where}.type", "a type like name/v1")
    return value


def check_sig(value: Any, where: str) -> bytes:
    # The pattern admits exactly the canonical encodings of 64 bytes.
    check_match(value, _SIG_RE, where, "the unpadded base64url of a 64-byte Ed25519 signature")
    return b64url_decode(value, what=where, code="malformed")
