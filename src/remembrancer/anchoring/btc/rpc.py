"""A bounded JSON-RPC client for Bitcoin Core, and headers read through it.

Every call has a deadline and a size cap on the answer; every answer is
checked for shape (:func:`expect_int`, :func:`expect_hash`, ...) before it
is used.  HTTP statuses map to the rail's error classes (401/403 ``auth``;
5xx, 408, 429 ``transient``; others ``validation``).  :class:`RpcHeaders`
serves headers (``getblockhash`` + ``getblockheader``) and the tip.
"""

from __future__ import annotations

import base64
import itertools
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from remembrancer.anchoring.base import RailError
from remembrancer.anchoring.btc.headers import BlockHeader
from remembrancer.core.errors import ConfigError, FormatError, VerificationError
from remembrancer.core.jcs import loads_strict
from remembrancer.net.http import ErrorClass, HttpFailure, error_class, request, status_class

USER_AGENT = "remembrancer-btc-rail"


class RpcHeaders:
    """Headers from Bitcoin Core (``getblockhash``, ``getblockheader``,
    ``getblockcount``); the tip is read once per instance (one check)."""

    def __init__(self, rpc: BitcoinRpc, network: str) -> None:
        self.rpc = rpc
        self.network = network
        self._tip: int | None = None

    def tip(self) -> int:
        if self._tip is None:
            self._tip = expect_int(self.rpc.call("getblockcount"), "getblockcount")
        return self._tip

    def header_at(self, height: int) -> BlockHeader | None:
        if height < 0 or height > self.tip():
            return None
        block_hash = expect_hash(self.rpc.call("getblockhash", height), "getblockhash")
        text = expect_str(self.rpc.call("getblockheader", block_hash, False), "getblockheader")
        try:
            header = BlockHeader.from_hex(text)
            header.check_pow(self.network)
        except VerificationError as e:
            raise RailError(
                f"bitcoin_rpc returned a bad header at height {height}: {e.message}",
                code=e.code,
                error_class="validation",
            ) from e
        if header.hash_hex != block_hash:
            raise RailError(
                f"bitcoin_rpc: header at height {height} hashes to {header.hash_hex}, "
                f"not {block_hash}",
                code="btc_rpc_header_mismatch",
                error_class="validation",
            )
        return header

    def confirmations(self, height: int, header: BlockHeader) -> int:
        return max(0, self.tip() - height + 1)

    def describe(self) -> str:
        return "bitcoin_rpc"


def http_request(
    url: str,
    *,
    data: bytes | None,
    headers: Mapping[str, str],
    timeout: float,
    limit: int,
    what: str,
    direct: bool,
) -> tuple[int, bytes]:
    """One bounded HTTP exchange (:func:`remembrancer.net.http.request`): (status,
    body) for any HTTP answer; a transient RailError ``btc_unreachable`` when
    there is none, ``btc_response_too_large`` (validation) for an answer over
    ``limit`` (an error status's oversized body is read as empty).  ``direct``
    ignores the environment's proxies (for a local Bitcoin Core)."""
    try:
        answer = request("POST" if data is not None else "GET", url, content=data,
                         headers=headers, timeout=timeout, limit=limit, trust_env=not direct,
                         what=what)  # fmt: skip
    except HttpFailure as e:
        if e.kind == "too_large" and e.status is not None and e.status >= 400:
            return e.status, b""
        if e.kind == "too_large":
            raise RailError(f"{what}: response over {limit} bytes", code="btc_response_too_large",
                            error_class=error_class(e)) from e  # fmt: skip
        raise RailError(e.message, code="btc_unreachable", error_class=error_class(e)) from e
    return answer.status, answer.content


class BitcoinRpcError(RailError):
    """Bitcoin Core answered with a JSON-RPC error; ``rpc_code`` is its code."""

    def __init__(self, message: str, *, rpc_code: int, error_class: ErrorClass) -> None:
        super().__init__(
            message, code="btc_rpc_error", error_class=error_class, details={"rpc_code": rpc_code}
        )
        self.rpc_code = rpc_code


# RPC_IN_WARMUP, RPC_CLIENT_NOT_CONNECTED, RPC_CLIENT_IN_INITIAL_DOWNLOAD
_TRANSIENT_RPC_CODES = frozenset({-28, -9, -10})
# RPC_WALLET_UNLOCK_NEEDED, RPC_WALLET_PASSPHRASE_INCORRECT
_AUTH_RPC_CODES = frozenset({-13, -14})
RPC_INVALID_ADDRESS_OR_KEY = -5  # "No such mempool or blockchain transaction"


class BitcoinRpc:
    """A minimal Bitcoin Core JSON-RPC client (credentials from the URL's
    user info, sent as HTTP Basic; never echoed in errors)."""

    def __init__(self, url: str, *, timeout: float, max_response: int) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("bitcoin_rpc must be an http(s) URL", code="btc_config_invalid")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None:
            netloc += f":{parts.port}"
        self.endpoint = urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path or "/", parts.query, "")
        )
        self._auth: str | None = None
        if parts.username is not None or parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._auth = f"Basic {token}"
        self.timeout = timeout
        self.max_response = max_response
        self._ids = itertools.count(1)

    def call(self, method: str, *params: Any) -> Any:
        request_id = next(self._ids)
        body = json.dumps(
            {"jsonrpc": "1.0", "id": request_id, "method": method, "params": list(params)}
        ).encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self._auth:
            headers["Authorization"] = self._auth
        what = f"bitcoin_rpc {self.endpoint} ({method})"
        status, raw = http_request(
            self.endpoint,
            data=body,
            headers=headers,
            timeout=self.timeout,
            limit=self.max_response,
            what=what,
            direct=True,
        )
        if status in (401, 403):
            raise RailError(
                f"{what}: HTTP {status}, check the RPC credentials",
                code="btc_rpc_auth",
                error_class="auth",
            )
        try:
            doc = loads_strict(raw, max_bytes=len(raw) + 1)  # read with a bound above
        except FormatError:
            doc = None
        if not isinstance(doc, dict):
            raise RailError(
                f"{what}: HTTP {status}, not a JSON-RPC answer",
                code="btc_rpc_bad_response",
                error_class=status_class(status),
            )
        error = doc.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(error)
            rpc_code = code if isinstance(code, int) else 0
            if rpc_code in _TRANSIENT_RPC_CODES:
                cls: ErrorClass = "transient"
            elif rpc_code in _AUTH_RPC_CODES:
                cls = "auth"
            else:
                cls = "validation"
            raise BitcoinRpcError(
                f"{what}: error {rpc_code}: {str(message)[:300]}",
                rpc_code=rpc_code,
                error_class=cls,
            )
        if status != 200:
            raise RailError(
                f"{what}: HTTP {status}",
                code="btc_rpc_bad_response",
                error_class=status_class(status),
            )
        if doc.get("id") != request_id:
            raise RailError(
                f"{what}: answer to another request", code="btc_rpc_bad_response",
                error_class="validation",
            )  # fmt: skip
        return doc.get("result")


def _bad_rpc(method: str, what: str) -> RailError:
    return RailError(
        f"bitcoin_rpc {method}: {what}", code="btc_rpc_bad_response", error_class="validation"
    )


def expect_int(value: Any, method: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad_rpc(method, "expected an integer")
    return value


def expect_str(value: Any, method: str) -> str:
    if not isinstance(value, str):
        raise _bad_rpc(method, "expected a string")
    return value


def expect_dict(value: Any, method: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad_rpc(method, "expected an object")
    return value


def is_hash_hex(value: Any) -> bool:
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return value == value.lower()


def expect_hash(value: Any, method: str) -> str:
    if not is_hash_hex(value):
        raise _bad_rpc(method, "expected a 64-hex-digit hash")
    return str(value)
