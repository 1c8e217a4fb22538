"""One small, bounded HTTP client on httpx, with one classification of failures.

:func:`request` makes one exchange.  Every call has a size cap on the
answer (``limit``: the body is streamed and refused past it, and a declared
``Content-Length`` over it is refused before reading) and a deadline
(``timeout``: for connecting, for each read and write, and for the whole
exchange, checked between chunks, so a server that drips its answer cannot
hold a caller longer).  Redirects are followed for GET and HEAD only (at
most :data:`MAX_REDIRECTS`), never for a POST.

Any HTTP status is an answer (:class:`Answer`): the caller decides what a
status means.  What is not an answer raises :class:`HttpFailure` with its
``kind``:

==============  =======================================  ==============
kind            what happened                            error class
==============  =======================================  ==============
``network``     no answer: DNS, refused, reset, TLS, bad  transient
                URL
``timeout``     the deadline passed                      transient
``too_large``   the answer is over the cap               validation
``status``      an HTTP status the caller refuses        by status, see
                (:meth:`Answer.failure`)                 :func:`status_class`
==============  =======================================  ==============

:func:`error_class` is that table: the rails' back-off classes
(``transient``, ``auth``, ``validation``), so every client of an outside
service classifies one failure one way.  Callers turn a failure into their
own error, with their own code (a rail's RailError, the CLI's PeerError).

TLS verification is httpx's default (certifi's CA bundle, or
``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` with ``trust_env``), but the context is
built once per such setting and shared: building one loads the whole CA
bundle, about 45 ms here, where a JSON-RPC call to a local node takes 1 ms,
and an EVM anchor makes ten such calls.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

import httpx

from remembrancer.core.errors import PeerError

__all__ = [
    "MAX_REDIRECTS",
    "Answer",
    "ErrorClass",
    "FailureKind",
    "HttpFailure",
    "error_class",
    "request",
    "status_class",
    "tls_context",
]

ErrorClass = Literal["transient", "auth", "validation"]
FailureKind = Literal["network", "timeout", "too_large", "status"]
MAX_REDIRECTS: Final = 5
_TLS_CONTEXTS: dict[tuple[str, str] | None, ssl.SSLContext] = {}  # by CA setting; a few at most
_TLS_CONTEXTS_MAX: Final = 8
_TLS_LOCK: Final = threading.Lock()


def tls_context(trust_env: bool) -> ssl.SSLContext:
    """The verifying TLS context httpx would build for ``trust_env``, built
    once per CA setting (the environment's ``SSL_CERT_FILE`` and
    ``SSL_CERT_DIR`` as they are now) and shared by every exchange."""
    key = (
        (os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
        if trust_env
        else None
    )
    with _TLS_LOCK:
        context = _TLS_CONTEXTS.get(key)
        if context is None:
            if len(_TLS_CONTEXTS) >= _TLS_CONTEXTS_MAX:
                _TLS_CONTEXTS.clear()
            context = _TLS_CONTEXTS[key] = httpx.create_ssl_context(trust_env=trust_env)
        return context


class HttpFailure(PeerError):
    """An exchange that gave no usable answer; ``kind`` says why (see the module docstring)."""

    default_code = "http_failure"

    def __init__(
        self, message: str, *, kind: FailureKind, url: str, status: int | None = None
    ) -> None:
        details: dict[str, object] = {"kind": kind}
        if status is not None:
            details["http_status"] = status
        super().__init__(message, code=f"http_{kind}", details=details)
        self.kind: FailureKind = kind
        self.url = url
        self.status = status


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer, whatever its status, with a body within the cap."""

    url: str
    status: int
    content: bytes
    headers: Mapping[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def failure(self, what: str) -> HttpFailure:
        """This answer as a ``status`` failure (for a status the caller refuses)."""
        return HttpFailure(
            f"{what}: HTTP {self.status}", kind="status", url=self.url, status=self.status
        )


def status_class(status: int) -> ErrorClass:
    """How an HTTP status counts: 401 and 403 ``auth``; 408, 425, 429 and 5xx
    ``transient`` (try again later); every other refusal ``validation``."""
    if status in (401, 403):
        return "auth"
    if status >= 500 or status in (408, 425, 429):
        return "transient"
    return "validation"


def error_class(failure: HttpFailure) -> ErrorClass:
    """The error class of a failure (the table in the module docstring)."""
    if failure.kind in ("network", "timeout"):
        return "transient"
    if failure.kind == "too_large":
        return "validation"
    return status_class(failure.status or 0)


def request(
    method: str,
    url: str,
    *,
    content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float,
    limit: int,
    trust_env: bool = True,
    what: str | None = None,
) -> Answer:
    """One bounded exchange: the answer (any status), or HttpFailure.

    ``trust_env``: use the proxy settings of the environment (as most
    clients do); False goes direct.  ``what`` names the other side in
    messages (default: the URL)."""
    name = what or url
    deadline = time.monotonic() + timeout
    follow = method.upper() in ("GET", "HEAD")
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout), trust_env=trust_env,
                         verify=tls_context(trust_env), follow_redirects=follow,
                         max_redirects=MAX_REDIRECTS) as client,
            client.stream(method, url, content=content, headers=dict(headers or {})) as r,
        ):  # fmt: skip
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise HttpFailure(f"{name}: the answer is {declared} bytes, over {limit}",
                                  kind="too_large", url=url, status=r.status_code)  # fmt: skip
            body = bytearray()
            for chunk in r.iter_bytes():  # as it arrives (a chunk size would wait for it)
                body += chunk
                if len(body) > limit:
                    raise HttpFailure(f"{name}: the answer is over {limit} bytes",
                                      kind="too_large", url=url, status=r.status_code)  # fmt: skip
                if time.monotonic() > deadline:
                    raise HttpFailure(f"{name}: no complete answer within {timeout:g} s",
                                      kind="timeout", url=url)  # fmt: skip
            return Answer(url, r.status_code, bytes(body), dict(r.headers))
    except httpx.TimeoutException as e:
        raise HttpFailure(f"{name}: no answer within {timeout:g} s", kind="timeout",
                          url=url) from e  # fmt: skip
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as e:
        raise HttpFailure(f"{name} unreachable: {type(e).__name__}: {e}", kind="network",
                          url=url) from e  # fmt: skip
