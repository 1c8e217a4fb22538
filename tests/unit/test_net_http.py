"""The one HTTP client (remembrancer.net.http) against real local servers:
answers of any status, the size cap, the deadline, no answer, the one
classification of failures, and TLS verified with a context built once per
CA setting."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from remembrancer.net import http as net_http
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


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA bundle trusts, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remembrancer test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


def test_tls_is_verified_with_one_context_per_ca_setting(
    server: tuple[list[Handler], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers, url = server
    handlers[:] = [_reply(200, b"plain")]
    built: list[object] = []
    make = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(kwargs.get("cafile") or kwargs.get("capath"))
        return make(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setattr(net_http, "_TLS_CONTEXTS", {})
    # Many exchanges, one context: building one loads the whole CA bundle.
    for _ in range(5):
        assert request("GET", url, timeout=5, limit=100).content == b"plain"
    assert len(built) == 1

    # The context still verifies: a certificate no CA signed is refused ...
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _tls_handler())
    httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    https = f"https://127.0.0.1:{httpd.server_address[1]}/"
    try:
        with pytest.raises(HttpFailure) as e:
            request("GET", https, timeout=5, limit=100)
        assert e.value.kind == "network" and "CERTIFICATE_VERIFY_FAILED" in str(e.value)
        # ... unless the environment names it as the CA bundle: a new setting,
        # a new context (the one built before does not trust it).
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        assert request("GET", https, timeout=5, limit=100).content == b"tls"
        assert request("GET", https, timeout=5, limit=100).content == b"tls"
        assert built[1:] == [str(cert)]
        # Without trust_env the environment is not read: refused again.
        with pytest.raises(HttpFailure):
            request("GET", https, timeout=5, limit=100, trust_env=False)
    finally:
        httpd.shutdown()
        httpd.server_close()


def _tls_handler() -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            _reply(200, b"tls")(self)

        def log_message(self, *args: object) -> None:
            return None

    return H
