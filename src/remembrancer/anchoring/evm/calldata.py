"""The EVM commitment: calldata ``b"RV" + digest`` and ``eip155:<chain id>`` targets.

The calldata of an anchor transaction is exactly 34 bytes, ASCII ``RV``
then the 32-byte digest (the same layout as the Bitcoin OP_RETURN rail);
:func:`parse_calldata` accepts nothing else.  Pure.
"""

from __future__ import annotations

import re

from remembrancer.core.errors import ConfigError, FormatError

PREFIX = b"RV"


_CHAIN_ID = re.compile(r"^[1-9][0-9]{0,31}$")


def anchor_calldata(digest: bytes) -> bytes:
    """The calldata committing ``digest``: ``b"RV" + digest`` (34 bytes)."""
    if not isinstance(digest, bytes | bytearray) or len(digest) != 32:
        raise FormatError("an anchored digest is 32 bytes", code="anchor_root_invalid")
    return PREFIX + bytes(digest)


def parse_calldata(data: bytes) -> bytes | None:
    """The digest in anchor calldata, or None when ``data`` is not ``RV || 32 bytes``."""
    if len(data) != 34 or not data.startswith(PREFIX):
        return None
    return bytes(data[2:])


def chain_id_of(target: str) -> int:
    """The chain id of an ``eip155:<decimal chain id>`` target (CAIP-2)."""
    scheme, _, name = target.partition(":")
    if scheme != "eip155" or not _CHAIN_ID.match(name):
        raise ConfigError(
            f"EVM target {target!r} is not eip155:<decimal chain id>",
            code="evm_target_invalid",
        )
    return int(name)
