"""The HTTP binding of the federation protocol (docs/spec/federation.md, "HTTP").

A message is delivered with ``POST <endpoint>/federation/v1/messages``,
``Content-Type: application/json``, the message's exact wire bytes as the
body.  The receiver answers ``202`` or one status per refusal code
(:data:`REFUSAL_CODES`; the status table is the node's,
``remembrancer.node.statuses.FEDERATION_STATUS``), with a JSON
``{"error": {code, message, details}}`` body and, for 429 and 503, a
``Retry-After`` header.

Sending (:class:`FederationClient`, on ``httpx.AsyncClient``):

* every attempt has a total timeout (connect, write, wait, read);
* an attempt is retried only after a transport error (connection refused or
  reset, timeout), a 429, or a 5xx; the delay before retry ``k`` (1, 2, ...)
  is ``min(cap, base * factor**(k-1))`` times a random factor in
  ``[1 - jitter, 1]``, and at least the ``Retry-After`` the receiver gave;
* retries stop after ``max_attempts`` attempts or when the next one could not
  start before ``deadline`` seconds after the first (a message retried for
  longer would arrive stale: the receivers' window is +-120 s);
* messages to one endpoint go one at a time, in the order ``send`` was
  called, so a receiver sees each sender's ``seq`` increase.  Hence a 409
  ``replayed`` answer to a retry whose earlier attempt may have reached the
  receiver means that attempt was accepted: it is reported as delivered, with
  ``duplicate=True``.

Receiving: :func:`receive` runs a body through a
:class:`~remembrancer.federation.protocol.verify.MessageVerifier` and returns the
outcome (:class:`Received`: the accepted message, or the refusal); the node
turns it into status, headers and body.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import httpx

from remembrancer.core.errors import (
    FormatError,
    PeerError,
    PushbackError,
    RemembrancerError,
)
from remembrancer.core.jcs import loads_strict
from remembrancer.federation.protocol.verify import MessageVerifier
from remembrancer.federation.protocol.wire import Message

__all__ = [
    "CONTENT_TYPE",
    "PATH",
    "REFUSAL_CODES",
    "Delivery",
    "FederationClient",
    "HasEndpoint",
    "Received",
    "RetryPolicy",
    "message_url",
    "receive",
]

PATH: Final = "/federation/v1/messages"
CONTENT_TYPE: Final = "application/json"
MAX_RESPONSE_BYTES: Final = 64 * 1024

REFUSAL_CODES: Final = frozenset({
    "malformed", "signature_invalid", "role_not_allowed", "unknown_sender", "replayed",
    "peer_suspended", "oversize", "unsupported_media_type", "federation_mismatch", "stale",
    "rate_limited", "unavailable",
})  # fmt: skip
"""The refusal codes of the spec's status table (each has one status there)."""


def message_url(endpoint: str) -> str:
    """``<endpoint>/federation/v1/messages`` (``endpoint`` is the registry's base URL)."""
    return endpoint.rstrip("/") + PATH


# --------------------------------------------------------------------------
# Receiving
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """The outcome of one POSTed body: the accepted ``message``, or the refusal ``error``."""

    message: Message | None = None
    error: RemembrancerError | None = None


def receive(
    verifier: MessageVerifier, body: bytes, content_type: str | None, now: float
) -> Received:
    """Check one POSTed body: the accepted message, or the refusal (a code of
    :data:`REFUSAL_CODES`, or pushback).

    The route should refuse a ``Content-Length`` over the limit (413) before
    reading the body, and must not read more than the limit plus one byte.
    """
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != CONTENT_TYPE:
        return Received(
            error=FormatError(f"Content-Type must be {CONTENT_TYPE}", code="unsupported_media_type")
        )
    try:
        return Received(message=verifier.verify(body, now))
    except RemembrancerError as e:
        return Received(error=e)


# --------------------------------------------------------------------------
# Sending
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Geometric backoff with jitter, bounded in attempts and in total time."""

    base: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2
    max_attempts: int = 6
    deadline: float = 60.0

    def __post_init__(self) -> None:
        if not (
            self.base >= 0
            and self.factor >= 1
            and self.cap >= 0
            and 0 <= self.jitter <= 1
            and self.max_attempts >= 1
            and self.deadline >= 0
        ):
            raise ValueError(f"invalid retry policy {self!r}")

    def delay(self, retry: int, rand: float) -> float:
        """Seconds before retry number ``retry`` (1, 2, ...); ``rand`` in [0, 1)."""
        exponent = min(retry - 1, 64)
        return min(self.cap, self.base * self.factor**exponent) * (1 - self.jitter * rand)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of sending one message to one endpoint.

    ``code`` is the receiver's error code, or ``timeout`` / ``unreachable`` /
    ``bad_endpoint`` / ``bad_response`` when no usable answer came.
    """

    endpoint: str
    delivered: bool
    status: int | None
    code: str | None
    attempts: int
    elapsed: float
    duplicate: bool = False
    retry_after: float | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def raise_for_failure(self) -> None:
        """Raise PushbackError (429/503 left) or PeerError unless delivered."""
        if self.delivered:
            return
        text = f"{self.endpoint}: {self.message or self.code or 'not delivered'}"
        details = {"endpoint": self.endpoint, "status": self.status, "attempts": self.attempts}
        if self.retry_after is not None:
            raise PushbackError(text, retry_after=self.retry_after, code=self.code, details=details)
        raise PeerError(text, code=self.code or "peer_failed", details=details)


class HasEndpoint(Protocol):
    @property
    def endpoint(self) -> str: ...


_NOT_SENT: Final = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
_NEVER_RETRY: Final = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)


def _retry_after(value: str | None, wall_now: float) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - wall_now)


def _error_fields(body: bytes) -> tuple[str | None, str, dict[str, Any]]:
    try:
        err = loads_strict(body, max_bytes=1 << 20)["error"]
        code = err["code"]
        message = err.get("message", "")
        details = err.get("details") or {}
        if isinstance(code, str) and isinstance(message, str) and isinstance(details, dict):
            return code, message, details
    except (ValueError, TypeError, KeyError, AttributeError, FormatError):
        pass
    return None, body[:200].decode("utf-8", "replace"), {}


class FederationClient:
    """Sends federation messages over HTTP with timeouts, retries and backoff.

    Use as ``async with FederationClient() as client: await client.send(...)``.
    ``transport`` (an httpx transport), ``sleep``, ``clock`` and ``rand`` are
    for tests.
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        user_agent: str = "remembrancer-federation/1",
    ) -> None:
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=20),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": user_agent},
        )
        self._locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> FederationClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def broadcast(
        self, peers: Iterable[str | HasEndpoint], message: Message | bytes
    ) -> list[Delivery]:
        """Send ``message`` to every peer at once; one :class:`Delivery` per peer, in order."""
        endpoints = [p if isinstance(p, str) else p.endpoint for p in peers]
        return list(await asyncio.gather(*(self.send(e, message) for e in endpoints)))

    async def send(self, endpoint: str, message: Message | bytes) -> Delivery:
        """Deliver one message to one endpoint, retrying as the module docstring says.

        Never raises for what the network or the receiver did; see
        :meth:`Delivery.raise_for_failure`.
        """
        body = message.to_bytes() if isinstance(message, Message) else bytes(message)
        lock = self._locks.setdefault(message_url(endpoint), asyncio.Lock())
        async with lock:
            return await self._send(endpoint, body)

    async def _send(self, endpoint: str, body: bytes) -> Delivery:
        policy = self.retry
        start = self._clock()
        maybe_received = False  # an earlier attempt may have reached the receiver
        attempt = 0
        while True:
            attempt += 1
            status, headers, payload, failure = await self._attempt(endpoint, body)
            elapsed = self._clock() - start
            retry_after: float | None = None
            if failure is not None:
                kind, text, sent = failure
                if kind == "bad_endpoint":
                    return Delivery(endpoint, False, None, kind, attempt, elapsed, message=text)
                maybe_received = maybe_received or sent
                result = Delivery(endpoint, False, None, kind, attempt, elapsed, message=text)
            else:
                assert status is not None
                if 200 <= status < 300:
                    return Delivery(endpoint, True, status, None, attempt, elapsed)
                code, text, details = _error_fields(payload)
                if status == 409 and code == "replayed" and maybe_received:
                    return Delivery(endpoint, True, status, code, attempt, elapsed,
                                    duplicate=True, message=text, details=details)  # fmt: skip
                retry_after = _retry_after(headers.get("retry-after"), time.time())
                result = Delivery(endpoint, False, status, code or "bad_response", attempt,
                                  elapsed, retry_after=retry_after, message=text,
                                  details=details)  # fmt: skip
                if status != 429 and status < 500:
                    return result
                maybe_received = maybe_received or status >= 500
            if attempt >= policy.max_attempts:
                return result
            wait = policy.delay(attempt, self._rand())
            if retry_after is not None:
                wait = max(wait, retry_after)
            if elapsed + wait > policy.deadline:
                return result
            await self._sleep(wait)

    async def _attempt(
        self, endpoint: str, body: bytes
    ) -> tuple[int | None, httpx.Headers, bytes, tuple[str, str, bool] | None]:
        """One POST.  Returns (status, headers, body, None) or (None, ..., failure)
        where failure is (code, text, whether the request may have been received)."""
        empty = httpx.Headers()
        try:
            async with asyncio.timeout(self.timeout):
                request = self._client.build_request(
                    "POST",
                    message_url(endpoint),
                    content=body,
                    headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
                )
                response = await self._client.send(request, stream=True)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_RESPONSE_BYTES:
                            break
                        chunks.append(chunk)
                finally:
                    await response.aclose()
                return response.status_code, response.headers, b"".join(chunks), None
        except _NEVER_RETRY as e:
            return None, empty, b"", ("bad_endpoint", f"{type(e).__name__}: {e}", False)
        except _NOT_SENT as e:
            code = "timeout" if isinstance(e, httpx.TimeoutException) else "unreachable"
            return None, empty, b"", (code, f"{type(e).__name__}: {e}", False)
        except httpx.TimeoutException as e:
            return None, empty, b"", ("timeout", f"{type(e).__name__}: {e}", True)
        except TimeoutError:
            return None, empty, b"", ("timeout", f"no answer within {self.timeout} s", True)
        except httpx.TransportError as e:
            return None, empty, b"", ("unreachable", f"{type(e).__name__}: {e}", True)
