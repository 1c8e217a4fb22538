"""The one HTTP client (remembrancer.net.http) against real local servers:
answers of any status, the size cap, the deadline, no answer, and the one
classification of failures."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from remembrancer.net.http import HttpFailure, error_class, request, status_class

Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def server() -> Iterator[tuple[list[Handler], str]]:
    handlers: list[Handler] = []

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            handlers[0](self)

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield handlers, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _reply(status: int, body: bytes, *, length: int | None = None) -> Handler:
    def handle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(len(body) if length is None else length))
        h.end_headers()
        h.wfile.write(body)

    return handle


def test_any_status_is_an_answer(server: tuple[list[Handler], str]) -> None:
    handlers, url = server
    for status in (200, 404, 500):
        handlers[:] = [_reply(status, b"body")]
        answer = request("GET", url, timeout=5, limit=100)
        assert (answer.status, answer.content, answer.content_type) == (status, b"body",
                                                                        "text/plain")  # fmt: skip
    failure = answer.failure("the thing")
    assert (
        failure.kind == "status" and failure.status == 500 and error_class(failure) == "transient"
    )


def test_a_body_over_the_cap_is_refused_declared_or_streamed(
    server: tuple[list[Handler], str],
) -> None:
    handlers, url = server
    handlers[:] = [_reply(200, b"x" * 101)]  # declared: refused before reading
    with pytest.raises(HttpFailure) as e:
        request("GET", url, timeout=5, limit=100)
    assert e.value.kind == "too_large" and error_class(e.value) == "validation"

    def chunked(h: BaseHTTPRequestHandler) -> None:  # no length: counted while streaming
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(20):
            h.wfile.write(b"10\r\n" + b"y" * 16 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    handlers[:] = [chunked]
    with pytest.raises(HttpFailure) as e:
        request("GET", url, timeout=5, limit=100)
    assert e.value.kind == "too_large"
    assert request("GET", url, timeout=5, limit=320).content == b"y" * 320


def test_a_server_that_drips_meets_the_deadline(server: tuple[list[Handler], str]) -> None:
    handlers, url = server
    stop = threading.Event()

    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        while not stop.is_set():  # a byte every 0.2 s: each read is quick, the whole is not
            try:
                h.wfile.write(b"z")
                h.wfile.flush()
            except OSError:
                return
            stop.wait(0.2)

    handlers[:] = [drip]
    start = time.monotonic()
    try:
        with pytest.raises(HttpFailure) as e:
            request("GET", url, timeout=1.0, limit=1 << 20)
    finally:
        stop.set()
    assert e.value.kind == "timeout" and error_class(e.value) == "transient"
    assert time.monotonic() - start < 3.0


def test_no_answer_is_a_network_failure() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HttpFailure) as e:
        request("GET", f"http://127.0.0.1:{port}/", timeout=2, limit=100)
    assert e.value.kind == "network" and error_class(e.value) == "transient"
    with pytest.raises(HttpFailure) as e:
        request("GET", "notaurl", timeout=2, limit=100)
    assert e.value.kind == "network"


def test_a_post_is_never_redirected(server: tuple[list[Handler], str]) -> None:
    handlers, url = server

    def redirect(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/there":
            _reply(200, b"arrived")(h)
            return
        h.send_response(302)
        h.send_header("Location", "/there")
        h.send_header("Content-Length", "0")
        h.end_headers()

    handlers[:] = [redirect]
    assert request("GET", url + "/here", timeout=5, limit=100).content == b"arrived"
    assert request("POST", url + "/here", content=b"x", timeout=5, limit=100).status == 302


@pytest.mark.parametrize(
    ("status", "cls"),
    [(401, "auth"), (403, "auth"), (408, "transient"), (425, "transient"), (429, "transient"),
     (500, "transient"), (503, "transient"), (400, "validation"), (404, "validation"),
     (302, "validation")],
)  # fmt: skip
def test_one_classification_of_statuses(status: int, cls: str) -> None:
    assert status_class(status) == cls
