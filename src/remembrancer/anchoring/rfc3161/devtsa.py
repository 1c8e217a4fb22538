"""The development TSA: a real RFC 3161 Time-Stamp Authority with a throwaway CA.

For demos and tests only (DESIGN.md 3.8).  ``DevTsa(directory)`` creates, or
loads, a root CA and a TSA signing certificate in ``directory``:

* ``ca.pem``  the root CA certificate: the *trust bundle* a verifier pins;
* ``ca.key``  its private key (mode 0600);
* ``tsa.pem`` the TSA certificate, issued by the root, with a **critical**
  extendedKeyUsage of exactly ``id-kp-timeStamping`` (RFC 3161 section 2.3);
* ``tsa.key`` its private key (mode 0600).

``DevTsa.respond(request_der)`` answers a DER ``TimeStampReq`` (RFC 3161
section 2.4.1) with a DER ``TimeStampResp`` (section 2.4.2): ``granted``,
a fresh ``genTime`` (whole seconds, UTC), a random 128-bit serial number, the
request's nonce echoed, the TSA policy, and the TSA certificate embedded when
``certReq`` is true.  The token is CMS ``SignedData`` (RFC 5652) over the
DER ``TSTInfo`` with the signed attributes contentType, messageDigest and
ESS ``signingCertificateV2`` (RFC 5816).  A request it cannot honour gets a
``rejection`` with the RFC's ``PKIFailureInfo`` bit (badAlg, badRequest,
badDataFormat, unacceptedPolicy, unacceptedExtensions), never an exception.

Its tokens verify with ``openssl ts -verify -CAfile ca.pem`` and with
:func:`remembrancer.anchoring.rfc3161.verify.verify_token`.

``DevTsaServer`` serves it over HTTP (``POST`` with ``Content-Type:
application/timestamp-query``; ``GET /ca.pem`` returns the trust bundle) on
the standard library's ``ThreadingHTTPServer``.  Nothing here is meant to
protect a real secret: the CA key sits next to the certificate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from asn1crypto import algos, cms, core, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from remembrancer.core.errors import ConfigError

DEV_POLICY_OID = "2.999.3161.1"  # under the ITU-T/ISO "example" arc: a dev policy only
MAX_REQUEST_BYTES = 16 * 1024
QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"

KeyType = Literal["ec", "rsa"]
EkuMode = Literal["critical", "noncritical", "absent"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_HASHES: dict[str, tuple[int, Callable[[bytes], Any]]] = {
    "sha256": (32, hashlib.sha256),
    "sha384": (48, hashlib.sha384),
    "sha512": (64, hashlib.sha512),
}


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` atomically with ``mode`` set before any byte lands."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ConfigError(f"unknown dev TSA key type {key_type!r}", code="devtsa_key_type")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Remembrancer development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    common_name: str, *, key_type: KeyType = "ec", now: dt.datetime | None = None
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed root CA (10 years), for the dev TSA or a test's foreign TSA."""
    now = now or _utcnow()
    key = _new_key(key_type)
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_tsa_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    common_name: str,
    *,
    key_type: KeyType = "ec",
    eku: EkuMode = "critical",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A TSA signing certificate issued by ``ca_cert``.

    ``eku="critical"`` is what RFC 3161 section 2.3 requires; the other modes
    exist so tests can prove a verifier refuses them."""
    if not_before is None:
        not_before = _utcnow() - dt.timedelta(hours=1)
    if not_after is None:
        not_after = not_before + dt.timedelta(days=825)
    key = _new_key(key_type)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if eku != "absent":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]),
            critical=eku == "critical",
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(f"{path}: not an EC or RSA key", code="devtsa_key_type")
    return key


class DevTsa:
    """A development RFC 3161 TSA whose CA and keys live in ``directory``.

    The keyword arguments apply only when the directory is empty and the CA is
    created; an existing directory is loaded as it is.  ``clock`` (returning
    an aware UTC datetime) replaces the wall clock for ``genTime``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        key_type: KeyType = "ec",
        eku: EkuMode = "critical",
        tsa_valid_for: dt.timedelta = dt.timedelta(days=825),
        name: str = "Remembrancer dev TSA",
        policy_oid: str = DEV_POLICY_OID,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.policy_oid = policy_oid
        self.clock = clock or _utcnow
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self.tsa_cert_path.exists():
                self._create(key_type, eku, tsa_valid_for, name)
            self.ca_cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            self.tsa_cert = x509.load_pem_x509_certificate(self.tsa_cert_path.read_bytes())
            self._tsa_key = _load_key(self.directory / "tsa.key")
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"cannot create or load the dev TSA in {self.directory}: {e}",
                code="devtsa_unusable",
            ) from e
        self._tsa_cert_asn1 = asn1_x509.Certificate.load(
            self.tsa_cert.public_bytes(serialization.Encoding.DER)
        )
        self.issued = 0  # tokens granted by this instance (tests count rail transactions)
        self._issued_lock = threading.Lock()

    @property
    def ca_cert_path(self) -> Path:
        """The trust bundle (PEM root CA) to give verifiers."""
        return self.directory / "ca.pem"

    @property
    def tsa_cert_path(self) -> Path:
        return self.directory / "tsa.pem"

    def _create(self, key_type: KeyType, eku: EkuMode, valid_for: dt.timedelta, name: str) -> None:
        now = self.clock()
        ca_cert, ca_key = make_ca(f"{name} root CA", key_type=key_type, now=now)
        tsa_cert, tsa_key = make_tsa_cert(
            ca_cert,
            ca_key,
            name,
            key_type=key_type,
            eku=eku,
            not_before=now - min(dt.timedelta(hours=1), valid_for / 2),
            not_after=now + valid_for,
        )
        _write_private(self.directory / "ca.key", _key_pem(ca_key))
        _write_private(self.directory / "tsa.key", _key_pem(tsa_key))
        _write_private(self.ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write_private(self.tsa_cert_path, tsa_cert.public_bytes(serialization.Encoding.PEM), 0o644)

    # -- the protocol -------------------------------------------------------------

    def respond(self, request_der: bytes) -> bytes:
        """Answer a DER TimeStampReq with a DER TimeStampResp (never raises on bad input)."""
        if len(request_der) > MAX_REQUEST_BYTES:
            return rejection("bad_request", "request too large")
        try:
            req = tsp.TimeStampReq.load(request_der, strict=True)
            req.native  # noqa: B018  (forces the lazy parser over every field)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as e:
            # (asn1crypto raises AttributeError on some malformed nestings)
            return rejection("bad_data_format", f"not a DER TimeStampReq: {e}")
        if req["version"].native != "v1":
            return rejection("bad_request", "only version 1 requests are supported")
        imprint = req["message_imprint"]
        alg = imprint["hash_algorithm"]["algorithm"].native
        hashed = imprint["hashed_message"].native
        if alg not in _HASHES or len(hashed) != _HASHES[alg][0]:
            return rejection("bad_alg", f"unsupported imprint algorithm {alg}")
        if imprint["hash_algorithm"]["parameters"].native is not None:
            return rejection("bad_alg", "hash algorithm parameters must be absent")
        policy = req["req_policy"].native
        if policy is not None and policy != self.policy_oid:
            return rejection("unaccepted_policy", f"this TSA only issues under {self.policy_oid}")
        if req["extensions"].native:
            return rejection("unaccepted_extensions", "no request extensions are supported")
        nonce = req["nonce"].native
        if nonce is not None and nonce < 0:  # verifiers (rfc3161-client) refuse such tokens
            return rejection("bad_request", "the nonce must not be negative")
        return self.token_response(alg, hashed, nonce=nonce, cert_req=bool(req["cert_req"].native))

    def token_response(
        self,
        hash_algorithm: str,
        hashed_message: bytes,
        *,
        nonce: int | None,
        cert_req: bool = True,
        gen_time: dt.datetime | None = None,
    ) -> bytes:
        """Issue a granted TimeStampResp for an imprint (the core of ``respond``)."""
        gen = (gen_time or self.clock()).astimezone(dt.UTC).replace(microsecond=0)
        tst_info = tsp.TSTInfo(
            {
                "version": "v1",
                "policy": self.policy_oid,
                "message_imprint": {
                    "hash_algorithm": {"algorithm": hash_algorithm},
                    "hashed_message": hashed_message,
                },
                "serial_number": secrets.randbits(127) | (1 << 126),
                "gen_time": gen,
                "accuracy": {"seconds": 1},
                "nonce": nonce,
                "tsa": asn1_x509.GeneralName(
                    name="directory_name", value=self._tsa_cert_asn1.subject
                ),
            }
        )
        response = response_for_token(self.sign_tst_info(tst_info.dump(), cert_req=cert_req))
        with self._issued_lock:
            self.issued += 1
        return response

    def sign_tst_info(self, tst_info_der: bytes, *, cert_req: bool = True) -> bytes:
        """A CMS SignedData ContentInfo (a TimeStampToken) over ``tst_info_der``."""
        cert_der = self.tsa_cert.public_bytes(serialization.Encoding.DER)
        signed_attrs = cms.CMSAttributes(
            [
                cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
                cms.CMSAttribute(
                    {"type": "message_digest", "values": [hashlib.sha256(tst_info_der).digest()]}
                ),
                cms.CMSAttribute(
                    {
                        "type": "signing_certificate_v2",
                        "values": [
                            {
                                "certs": [
                                    {
                                        "cert_hash": hashlib.sha256(cert_der).digest(),
                                        "issuer_serial": {
                                            "issuer": [
                                                asn1_x509.GeneralName(
                                                    name="directory_name",
                                                    value=self._tsa_cert_asn1.issuer,
                                                )
                                            ],
                                            "serial_number": self._tsa_cert_asn1.serial_number,
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                ),
            ]
        )
        to_sign = signed_attrs.dump()  # the universal SET OF encoding (RFC 5652 section 5.4)
        if isinstance(self._tsa_key, ec.EllipticCurvePrivateKey):
            signature = self._tsa_key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
            sig_alg = "sha256_ecdsa"
        else:
            signature = self._tsa_key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
            sig_alg = "sha256_rsa"
        signer_info = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    name="issuer_and_serial_number",
                    value={
                        "issuer": self._tsa_cert_asn1.issuer,
                        "serial_number": self._tsa_cert_asn1.serial_number,
                    },
                ),
                "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "signed_attrs": signed_attrs,
                "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": sig_alg}),
                "signature": signature,
            }
        )
        signed_data: dict[str, Any] = {
            "version": "v3",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {
                "content_type": "tst_info",
                "content": core.ParsableOctetString(tst_info_der),
            },
            "signer_infos": [signer_info],
        }
        if cert_req:
            signed_data["certificates"] = [self._tsa_cert_asn1]
        token = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
        return bytes(token.dump())


def response_for_token(token_der: bytes, status: int = 0) -> bytes:
    """A TimeStampResp wrapping a TimeStampToken (status granted by default)."""
    status_info = tsp.PKIStatusInfo({"status": status}).dump()
    return _der_sequence(status_info + token_der)


def rejection(fail_info: str, text: str) -> bytes:
    """A TimeStampResp with status ``rejection``, no token (RFC 3161 section 2.4.2)."""
    status_info = tsp.PKIStatusInfo(
        {
            "status": "rejection",
            "status_string": [text[:200]],
            "fail_info": tsp.PKIFailureInfo({fail_info}),
        }
    ).dump()
    return _der_sequence(status_info)


def _der_sequence(contents: bytes) -> bytes:
    n = len(contents)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return b"\x30" + length + contents


# -- HTTP ------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _TsaHttpServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # seconds a client may take to send its request

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path in ("/ca.pem", "/trust-bundle.pem"):
            self._send(200, self.server.tsa.ca_cert_path.read_bytes(), "application/x-pem-file")
        else:
            self._send(404, b"POST an application/timestamp-query here\n", "text/plain")

    def do_POST(self) -> None:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            length = int(self.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if length < 0 or length > MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(413 if length > 0 else 411, b"bad Content-Length\n", "text/plain")
            return
        body = self.rfile.read(length)
        if ctype != QUERY_CONTENT_TYPE:
            self._send(415, f"Content-Type must be {QUERY_CONTENT_TYPE}\n".encode(), "text/plain")
            return
        self._send(200, self.server.tsa.respond(body), REPLY_CONTENT_TYPE)


class _TsaHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], tsa: DevTsa, verbose: bool) -> None:
        self.tsa = tsa
        self.verbose = verbose
        super().__init__(address, _Handler)


class DevTsaServer:
    """``tsa`` over HTTP on ``host:port`` (port 0 picks a free one), in a thread.

    Use as a context manager, or ``start()``/``stop()``; ``serve_forever()``
    runs in the calling thread (the CLI)."""

    def __init__(
        self, tsa: DevTsa, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False
    ) -> None:
        self.tsa = tsa
        self._httpd = _TsaHttpServer((host, port), tsa, verbose)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/"

    def start(self) -> DevTsaServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="dev-tsa", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        """Stop serving and release the port (safe to call twice)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> DevTsaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
