"""A minimal, bounded JSON-RPC 2.0 client for EVM nodes, and the value checks on its answers.

Every call has a deadline and a size cap (:data:`MAX_RPC_ANSWER`).  Error
mapping (all :class:`~remembrancer.anchoring.base.RailError`): connection
failures, timeouts, HTTP 429/5xx and malformed answers are ``transient``;
HTTP 401/403 are ``auth``; a JSON-RPC error is ``validation`` for the
submission methods (:data:`SUBMISSION_METHODS`) and for "method not
found"/"invalid params".  RPC URLs are shown redacted (:func:`redact_url`):
they often carry API keys.
"""

from __future__ import annotations

import base64
import itertools
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from remembrancer.anchoring.base import RailError, http_status_error
from remembrancer.core.errors import FormatError
from remembrancer.core.jcs import loads_strict
from remembrancer.net.http import ErrorClass, HttpFailure, error_class, request, status_class

# fmt: on
# JSON-RPC methods whose errors mean "the node refused this transaction".
SUBMISSION_METHODS = frozenset({"eth_sendRawTransaction", "eth_estimateGas"})


MAX_RPC_ANSWER = 16 << 20  # bytes of one JSON-RPC answer
_STATUS_CODES: Mapping[ErrorClass, str] = {
    "auth": "evm_rpc_auth", "transient": "evm_rpc_unavailable", "validation": "evm_rpc_refused",
}  # fmt: skip


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` only: RPC URLs often carry API keys in the path or userinfo."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def rpc_quantity(value: Any, what: str) -> int:
    """A JSON-RPC QUANTITY (``0x``-hex) as int; a malformed one is a transient node fault."""
    if isinstance(value, str) and value.startswith(("0x", "0X")):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise RailError(
        f"the node returned a malformed {what}: {str(value)[:80]!r}",
        code="evm_rpc_malformed",
        error_class="transient",
    )


def rpc_data(value: Any, what: str) -> bytes:
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise RailError(
        f"the node returned malformed {what}", code="evm_rpc_malformed", error_class="transient"
    )


class JsonRpcClient:
    """A minimal synchronous JSON-RPC 2.0 client over HTTP(S) (:mod:`remembrancer.net.http`).

    Error mapping (all :class:`RailError`): connection failures, timeouts,
    HTTP 429/5xx and malformed answers are ``transient``; HTTP 401/403 are
    ``auth``; a JSON-RPC error object is ``validation`` for the submission
    methods (:data:`SUBMISSION_METHODS`) and for "method not found"/"invalid
    params", ``transient`` otherwise.  Messages name the node by
    ``scheme://host:port`` only.
    """

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urllib.parse.urlsplit(url)
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "remembrancer-evm-rail",
        }
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
            netloc = parts.hostname or ""
            if ":" in netloc:
                netloc = f"[{netloc}]"
            if parts.port:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        self.url = urllib.parse.urlunsplit(parts)
        self.display = redact_url(url)
        self.timeout = timeout
        self._ids = itertools.count(1)

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        request_id = next(self._ids)
        body = json.dumps(
            {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or []}
        ).encode()
        where = f"{method} at {self.display}"
        try:
            reply = request("POST", self.url, content=body, headers=self._headers,
                            timeout=self.timeout, limit=MAX_RPC_ANSWER, what=where)  # fmt: skip
        except HttpFailure as e:
            if e.kind == "too_large":
                raise RailError(f"{where}: the answer is over {MAX_RPC_ANSWER} bytes",
                                code="evm_rpc_malformed", error_class=error_class(e)) from e  # fmt: skip
            raise RailError(
                # the cause's type only: its text could carry the URL, and its secrets
                f"{where}: node unreachable ({e.kind}: {type(e.__cause__).__name__})",
                code="evm_rpc_unreachable",
                error_class=error_class(e),
            ) from e
        raw = reply.content
        if reply.status >= 300:
            # Some providers answer JSON-RPC errors with HTTP 400: use the body if it is one.
            error = _jsonrpc_error(raw) if status_class(reply.status) == "validation" else None
            if error is not None:
                raise _error_for(method, error, where)
            raise http_status_error(reply.status, where, _STATUS_CODES)
        try:
            answer = loads_strict(raw, max_bytes=MAX_RPC_ANSWER)
        except FormatError as e:
            raise RailError(
                f"{where}: the answer is not strict JSON ({e.code})",
                code="evm_rpc_malformed",
                error_class="transient",
            ) from e
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise RailError(
                f"{where}: the answer is not a JSON-RPC response to this request",
                code="evm_rpc_malformed",
                error_class="transient",
            )
        if "error" in answer and answer["error"] is not None:
            error = answer["error"] if isinstance(answer["error"], dict) else {}
            raise _error_for(method, error, where)
        if "result" not in answer:
            raise RailError(
                f"{where}: the answer has neither result nor error",
                code="evm_rpc_malformed",
                error_class="transient",
            )
        return answer["result"]


def _jsonrpc_error(raw: bytes) -> dict[str, Any] | None:
    try:
        answer = loads_strict(raw, max_bytes=MAX_RPC_ANSWER)
    except FormatError:
        return None
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error: dict[str, Any] = answer["error"]
        return error
    return None


def _error_for(method: str, error: Mapping[str, Any], where: str) -> RailError:
    code = error.get("code")
    message = str(error.get("message") or "error")[:300]
    error_class: ErrorClass
    if method in SUBMISSION_METHODS or code in (-32601, -32602):
        error_class = "validation"
    else:
        error_class = "transient"
    return RailError(
        f"{where}: the node answered error {code}: {message}",
        code="evm_rpc_rejected" if method in SUBMISSION_METHODS else "evm_rpc_error",
        error_class=error_class,
        details={"rpc_code": code, "rpc_message": message},
    )
