"""RFC 3161 tokens from three independent TSA implementations, and the variants
real TSAs send, each judged by our verifier and by ``openssl ts -verify
-attime <genTime>`` with the same trust anchors: the verdicts must agree.

The implementations, all offline:

* the development TSA (``remembrancer.anchoring.rfc3161.devtsa``: asn1crypto and
  cryptography);
* ``openssl ts -reply`` with its own CA and configuration (OpenSSL's TS code,
  the engine of FreeTSA);
* Bouncy Castle's TSP API (bcpkix, Debian's ``libbcpkix-java``) driven by
  ``foreign_tsa/BcTsa.java``, run as a single-file Java program.  Bouncy
  Castle keeps the certificate SET OF in the order it is given: one of its two
  orders is not DER, the tokens rfc3161-client's parser used to refuse.

Plus tokens crafted here (cryptography signs, the bytes are laid out by hand)
for what none of them emits on request: ESS v1 and v2 together, signed
attributes not in DER order, BER indefinite lengths, refused algorithms.
``openssl ts -verify`` gets ``-CAfile`` (the roots) and ``-untrusted`` (the
other certificates of our trust bundle); its exit code is checked directly.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import algos, cms, core, tsp  # type: ignore[import-untyped]
from asn1crypto import x509 as asn1_x509
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from remembrancer.anchoring.rfc3161 import ber
from remembrancer.anchoring.rfc3161.chain import load_trust_bundle
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, response_for_token
from remembrancer.anchoring.rfc3161.model import ERROR_CODES, Imprint
from remembrancer.anchoring.rfc3161.parse import parse_response
from remembrancer.anchoring.rfc3161.rail import build_request
from remembrancer.anchoring.rfc3161.verify import verify_token
from remembrancer.cli.main import main
from remembrancer.core.errors import VerificationError

DATA = b"a checkpoint body, timestamped by three TSAs\n"
IMPRINT = Imprint.of_data(DATA)
HERE = Path(__file__).parent
BC_JARS = ("bcprov.jar", "bcpkix.jar", "bcutil.jar")
BC_CLASSPATH_ENV = "REMEMBRANCER_BC_CLASSPATH"


# -- the cases ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One token, the request it answers, and the trust both verifiers get."""

    response: bytes
    query: bytes  # imprint and nonce: what both verifiers check (openssl -queryfile)
    ca_file: Path  # the roots: openssl -CAfile
    untrusted: Path | None = None  # more certificates: openssl -untrusted
    valid: bool = True
    code: str | None = None  # our error code when not valid

    @property
    def nonce(self) -> int:
        return nonce_of(self.query)

    def trust(self) -> list[x509.Certificate]:
        """Our trust bundle: the roots and the other certificates, as one PEM list."""
        extra = load_trust_bundle(self.untrusted) if self.untrusted else []
        return load_trust_bundle(self.ca_file) + extra


def nonce_of(query: bytes) -> int:
    return int(tsp.TimeStampReq.load(query)["nonce"].native)


def query(*, cert_req: bool = True) -> bytes:
    request = build_request(IMPRINT, nonce=secrets.randbits(63) | 1 << 62)
    if cert_req:
        return request
    req = tsp.TimeStampReq.load(request)
    req["cert_req"] = False
    return bytes(req.dump(force=True))


def gen_time_of(response: bytes) -> dt.datetime:
    try:
        gen_time: dt.datetime = parse_response(response).tst_info["gen_time"].native
    except VerificationError:
        return dt.datetime.now(dt.UTC)
    return gen_time


def ours(case: Case) -> tuple[bool, str | None]:
    try:
        verify_token(case.response, IMPRINT, nonce=case.nonce, trust_roots=case.trust())
    except VerificationError as e:
        assert e.code in ERROR_CODES, e.code
        return False, e.code
    return True, None


def theirs(openssl: str, case: Case, attime: dt.datetime | None = None) -> tuple[bool, str]:
    """``openssl ts -verify`` on the same bytes, anchors and request, at genTime."""
    when = attime or gen_time_of(case.response)
    with tempfile.TemporaryDirectory() as tmp:
        tsr, tsq = Path(tmp, "r.tsr"), Path(tmp, "q.tsq")
        tsr.write_bytes(case.response)
        tsq.write_bytes(case.query)
        cmd = [openssl, "ts", "-verify", "-in", str(tsr), "-queryfile", str(tsq),
               "-CAfile", str(case.ca_file), "-attime", str(int(when.timestamp()))]  # fmt: skip
        if case.untrusted is not None:
            cmd += ["-untrusted", str(case.untrusted)]
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
    return proc.returncode == 0, proc.stderr.decode(errors="replace")


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def tst_info_span(response: bytes) -> tuple[int, int]:
    tst = parse_response(response).tst_info_der
    start = response.find(tst)
    assert start > 0
    return start, start + len(tst)


def signed_attrs_span(response: bytes) -> tuple[int, int]:
    attrs = parse_response(response).signed_attrs_der[1:]  # after the tag: same bytes as sent
    start = response.find(attrs)
    assert start > 0
    return start, start + len(attrs)


# -- implementation 1: the development TSA -----------------------------------------------


def dev_cases(root: Path) -> dict[str, Case]:
    ec_tsa = DevTsa(root / "dev-ec")
    rsa_tsa = DevTsa(root / "dev-rsa", key_type="rsa")
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
    old = DevTsa(root / "dev-old", clock=lambda: t0, tsa_valid_for=dt.timedelta(hours=1))
    other = DevTsa(root / "dev-other", name="Another dev TSA")
    cases: dict[str, Case] = {}
    q = query()
    cases["dev-ec"] = Case(ec_tsa.respond(q), q, ec_tsa.ca_cert_path)
    q = query()
    cases["dev-rsa"] = Case(rsa_tsa.respond(q), q, rsa_tsa.ca_cert_path)
    q = query(cert_req=False)
    bare = ec_tsa.respond(q)
    cases["dev-no-certs-chain-in-trust"] = Case(bare, q, ec_tsa.ca_cert_path, ec_tsa.tsa_cert_path)
    cases["dev-no-certs-no-chain"] = Case(
        bare, q, ec_tsa.ca_cert_path, valid=False, code="tsa_signer_unknown"
    )
    q = query()
    cases["dev-expired-tsa-cert-at-gentime"] = Case(old.respond(q), q, old.ca_cert_path)
    q = query()
    good = ec_tsa.respond(q)
    start, _ = tst_info_span(good)
    cases["dev-altered-tstinfo"] = Case(
        flip(good, start + 20), q, ec_tsa.ca_cert_path, valid=False, code="tsa_signature_invalid"
    )
    cases["dev-other-root"] = Case(
        good, q, other.ca_cert_path, valid=False, code="tsa_chain_untrusted"
    )
    return cases


# -- implementation 2: openssl ts -reply -------------------------------------------------


def _run(*args: str, cwd: Path) -> None:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, timeout=120)
    assert proc.returncode == 0, (args, proc.stderr)


def openssl_tsa(openssl: str, d: Path) -> Path:
    """An RSA root and an ECDSA P-256 TSA certificate with a critical timeStamping
    EKU, and a ts.cnf with a section per ESS variant, all made with the openssl CLI."""
    d.mkdir()
    _run(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
         "-out", "ca.pem", "-days", "30", "-subj", "/O=OpenSSL interop/CN=OpenSSL TSA root",
         cwd=d)  # fmt: skip
    _run(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", "tsa.key", "-out", "tsa.csr", "-subj",
         "/O=OpenSSL interop/CN=OpenSSL TSA", cwd=d)  # fmt: skip
    (d / "tsa.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,nonRepudiation\n"
        "extendedKeyUsage=critical,timeStamping\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _run(openssl, "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "30", "-extfile", "tsa.ext", "-out", "tsa.pem", cwd=d)  # fmt: skip
    (d / "tsaserial").write_text("01\n")
    common = (
        f"dir = {d}\nserial = $dir/tsaserial\ncrypto_device = builtin\n"
        "signer_cert = $dir/tsa.pem\nsigner_key = $dir/tsa.key\nsigner_digest = sha256\n"
        "default_policy = 1.2.3.4.1\ndigests = sha256, sha384, sha512\n"
        "accuracy = secs:1\nordering = no\ntsa_name = yes\n"
    )
    (d / "ts.cnf").write_text(
        "[ tsa ]\ndefault_tsa = ess_v2\n"
        f"[ ess_v2 ]\n{common}ess_cert_id_alg = sha256\ness_cert_id_chain = no\n"
        f"[ ess_v1 ]\n{common}ess_cert_id_chain = no\n"  # openssl's default: ESSCertID, SHA-1
        # The root embedded after the signer (openssl's order, not DER's), and named
        # in the ESS attribute too: FreeTSA's configuration.
        f"[ chain ]\n{common}certs = $dir/ca.pem\ness_cert_id_alg = sha256\n"
        "ess_cert_id_chain = yes\n"
    )
    return d


def openssl_reply(openssl: str, d: Path, q: bytes, section: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        tsq, tsr = Path(tmp, "q.tsq"), Path(tmp, "r.tsr")
        tsq.write_bytes(q)
        _run(openssl, "ts", "-reply", "-config", str(d / "ts.cnf"), "-section", section,
             "-queryfile", str(tsq), "-out", str(tsr), cwd=d)  # fmt: skip
        return tsr.read_bytes()


def openssl_cases(openssl: str, root: Path) -> dict[str, Case]:
    d = openssl_tsa(openssl, root / "openssl")
    cases: dict[str, Case] = {}
    for name, section in (("openssl-ess-v2", "ess_v2"), ("openssl-ess-v1", "ess_v1"),
                          ("openssl-chain-embedded", "chain")):  # fmt: skip
        q = query()
        cases[name] = Case(openssl_reply(openssl, d, q, section), q, d / "ca.pem")
    q = query(cert_req=False)
    cases["openssl-no-certs-chain-in-trust"] = Case(
        openssl_reply(openssl, d, q, "ess_v2"), q, d / "ca.pem", d / "tsa.pem"
    )
    q = query()
    good = openssl_reply(openssl, d, q, "ess_v2")
    _, end = signed_attrs_span(good)
    cases["openssl-altered-signed-attrs"] = Case(
        flip(good, end - 3), q, d / "ca.pem", valid=False, code="tsa_signature_invalid"
    )
    return cases


# -- implementation 3: Bouncy Castle ----------------------------------------------------


def bc_classpath() -> str | None:
    configured = os.environ.get(BC_CLASSPATH_ENV)
    if configured:
        jars = [Path(p) for p in configured.split(os.pathsep) if p]
    else:
        jars = [Path("/usr/share/java", jar) for jar in BC_JARS]  # Debian's libbcpkix-java
    return os.pathsep.join(map(str, jars)) if jars and all(j.exists() for j in jars) else None


def run_bc_tsa(java: str, classpath: str, d: Path, key: str, valid: tuple[int, int],
               jobs: dict[str, tuple[bytes, str, str, str, int]]) -> None:  # fmt: skip
    """Run BcTsa.java in ``d``: a fresh CA, then one response per job."""
    d.mkdir()
    lines = []
    for name, (q, ess, encoding, order, gen_time) in jobs.items():
        (d / f"{name}.tsq").write_bytes(q)
        lines.append(f"{name}\t{ess}\t{encoding}\t{order}\t{gen_time}")
    (d / "jobs.tsv").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        [java, "-cp", classpath, str(HERE / "foreign_tsa" / "BcTsa.java"), str(d), key,
         str(valid[0]), str(valid[1])],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")


def bc_cases(java: str, classpath: str, root: Path) -> dict[str, Case]:
    now = int(dt.datetime.now(dt.UTC).timestamp())
    jobs = {
        "bc-ess-v2-tsa-first": (query(), "v2", "dl", "tsa-ca", now),
        "bc-ess-v2-ca-first": (query(), "v2", "dl", "ca-tsa", now),
        "bc-ess-v1-ber": (query(), "v1", "ber", "tsa-ca", now),
        "bc-no-certs-chain-in-trust": (query(cert_req=False), "v2", "dl", "tsa-ca", now),
        "bc-altered-tstinfo": (query(), "v2", "dl", "tsa-ca", now),
    }
    d = root / "bc"
    run_bc_tsa(java, classpath, d, "ec", (now - 3600, now + 30 * 86400), jobs)
    # An RSA TSA whose certificate lived for one day, three days ago.
    old_jobs = {"bc-expired-tsa-cert-at-gentime": (query(), "v2", "dl", "tsa-ca",
                                                   now - 3 * 86400 + 3600)}  # fmt: skip
    old = root / "bc-old"
    run_bc_tsa(java, classpath, old, "rsa", (now - 3 * 86400, now - 2 * 86400), old_jobs)
    cases: dict[str, Case] = {}
    for name, (q, *_) in jobs.items():
        response = (d / f"{name}.tsr").read_bytes()
        cases[name] = Case(response, q, d / "ca.pem")
    cases["bc-no-certs-chain-in-trust"] = Case(
        cases["bc-no-certs-chain-in-trust"].response, jobs["bc-no-certs-chain-in-trust"][0],
        d / "ca.pem", d / "tsa.pem",
    )  # fmt: skip
    altered = cases["bc-altered-tstinfo"]
    _, end = tst_info_span(altered.response)
    cases["bc-altered-tstinfo"] = Case(
        flip(altered.response, end - 1), altered.query, altered.ca_file, valid=False,
        code="tsa_signature_invalid",
    )  # fmt: skip
    q = old_jobs["bc-expired-tsa-cert-at-gentime"][0]
    cases["bc-expired-tsa-cert-at-gentime"] = Case(
        (old / "bc-expired-tsa-cert-at-gentime.tsr").read_bytes(), q, old / "ca.pem"
    )
    return cases


# -- crafted tokens ------------------------------------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _new_key(kind: str) -> Any:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Crafted"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


@dataclass
class Pki:
    """A root CA and a TSA certificate, made with cryptography, written as PEM."""

    ca_cert: x509.Certificate
    tsa_cert: x509.Certificate
    tsa_key: Any
    ca_file: Path


def make_pki(d: Path, kind: str = "ec", *, key_usage: tuple[str, ...] = ("digital_signature",),
             extra_eku: bool = False, critical_unknown: bool = False,
             san: str | None = None) -> Pki:  # fmt: skip
    d.mkdir()
    now = dt.datetime.now(dt.UTC)
    ca_key = _new_key("ec")
    ca_name = _name("Crafted root")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                       critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = _new_key(kind)
    usages = {u: u in key_usage for u in ("digital_signature", "content_commitment",
              "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign",
              "crl_sign")}  # fmt: skip
    eku = [ExtendedKeyUsageOID.TIME_STAMPING]
    if extra_eku:
        eku.append(x509.ObjectIdentifier("1.3.6.1.4.1.55555.7"))
    builder = (
        x509.CertificateBuilder().subject_name(_name("Crafted TSA")).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usages, encipher_only=False, decipher_only=False),
                       critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )  # fmt: skip
    if critical_unknown:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00"),
            critical=True,
        )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
        )
    pki = Pki(ca, builder.sign(ca_key, hashes.SHA256()), key, d / "ca.pem")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return pki


def make_tst_info(nonce: int | None, *, tsa_name: Any = None, explicit_default: bool = False,
                  hash_name: str = "sha256", imprint_parameters: bytes = b"") -> bytes:  # fmt: skip
    info: dict[str, Any] = {
        "version": "v1",
        "policy": "1.2.3.4.1",
        "message_imprint": {"hash_algorithm": {"algorithm": hash_name},
                            "hashed_message": IMPRINT.hashed_message},
        "serial_number": secrets.randbits(64) | 1 << 63,
        "gen_time": dt.datetime.now(dt.UTC).replace(microsecond=0),
        "nonce": nonce,
    }  # fmt: skip
    if tsa_name is not None:
        info["tsa"] = tsa_name
    der = bytes(tsp.TSTInfo(info).dump())
    if imprint_parameters:  # parameters after the hash OID (RFC 3161 wants none, or NULL)
        t = tsp.TSTInfo.load(der)
        algorithm = _tlv(0x30, t["message_imprint"]["hash_algorithm"]["algorithm"].dump()
                         + imprint_parameters)  # fmt: skip
        imprint = _tlv(0x30, algorithm + t["message_imprint"]["hashed_message"].dump())
        fields = [t[n].dump() for n in ("version", "policy")] + [imprint] + [
            t[n].dump() for n in ("serial_number", "gen_time", "nonce")]  # fmt: skip
        return _tlv(0x30, b"".join(fields))
    if not explicit_default:
        return der
    # ordering BOOLEAN FALSE spelled out although it is the DEFAULT: BER, not DER.
    t = tsp.TSTInfo.load(der)
    fields = [t[n].dump() for n in ("version", "policy", "message_imprint", "serial_number",
                                    "gen_time")]  # fmt: skip
    return _tlv(0x30, b"".join(fields) + b"\x01\x01\x00" + t["nonce"].dump())


def craft(pki: Pki, tst_der: bytes, *, ess: str = "v2", sid: str = "issuer_serial",
          scheme: str = "pkcs1", attrs: str = "der", certs: bool = True,
          digest: str = "sha256", ess_extra: bytes | None = None,
          ess_serial_offset: int = 0, listed: list[bytes] | None = None, signers: int = 1,
          detached: bool = False) -> bytes:  # fmt: skip
    """A TimeStampResp signed by ``pki``'s TSA key, laid out byte by byte.

    ``attrs``: "der" (sorted), "reversed" (sent and signed in reverse order),
    "reordered" (signed sorted, sent reversed), "long-length" (one attribute's
    length in the long form, signed as sent), "values-unsorted" (an extra
    attribute whose two values are not in DER order, signed as sent).
    ``ess``: "v1", "v2", "both", "none"; ``ess_extra``: a second ESSCertIDv2
    for this DER certificate; ``ess_serial_offset``: added to the serial the
    issuerSerial names.  ``listed``: the SignedData's digestAlgorithms (DER
    AlgorithmIdentifiers); ``signers``: how many copies of the SignerInfo;
    ``detached``: no eContent."""
    cert = pki.tsa_cert
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    acert = asn1_x509.Certificate.load(cert_der)
    issuer_serial = {"issuer": [asn1_x509.GeneralName(name="directory_name", value=acert.issuer)],
                     "serial_number": acert.serial_number + ess_serial_offset}  # fmt: skip
    parts = [
        cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}).dump(),
        cms.CMSAttribute({"type": "message_digest",
                          "values": [hashlib.new(digest, tst_der).digest()]}).dump(),
    ]  # fmt: skip
    if ess in ("v1", "both"):
        parts.append(cms.CMSAttribute({"type": "signing_certificate", "values": [{"certs": [
            {"cert_hash": hashlib.sha1(cert_der).digest(), "issuer_serial": issuer_serial}]}]}).dump())  # fmt: skip
    if ess in ("v2", "both"):
        ids = [{"cert_hash": hashlib.sha256(cert_der).digest(), "issuer_serial": issuer_serial}]
        if ess_extra is not None:
            ids.append({"cert_hash": hashlib.sha256(ess_extra).digest()})
        parts.append(cms.CMSAttribute({"type": "signing_certificate_v2",
                                       "values": [{"certs": ids}]}).dump())  # fmt: skip
    if attrs == "values-unsorted":  # SET OF { INTEGER 2, INTEGER 1 }: not DER's order
        oid = core.ObjectIdentifier("1.3.6.1.4.1.55555.9").dump()
        parts.append(_tlv(0x30, oid + _tlv(0x31, b"\x02\x01\x02\x02\x01\x01")))
    ordered = sorted(parts)
    if attrs == "long-length":  # 0x30 0x81 n: the long form where the short one fits
        ordered[0] = b"\x30\x81" + ordered[0][1:]
    sent = ordered[::-1] if attrs in ("reversed", "reordered") else ordered
    signed = _tlv(0x31, b"".join(ordered if attrs == "reordered" else sent))
    h = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[digest]
    key = pki.tsa_key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature, sig_alg = key.sign(signed), {"algorithm": "ed25519"}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        signature, sig_alg = key.sign(signed, ec.ECDSA(h)), {"algorithm": f"{digest}_ecdsa"}
    elif scheme == "pss":
        signature = key.sign(signed, padding.PSS(mgf=padding.MGF1(h), salt_length=32), h)
        sig_alg = {"algorithm": "rsassa_pss", "parameters": {
            "hash_algorithm": {"algorithm": digest},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": digest}},
            "salt_length": 32}}  # fmt: skip
    else:
        signature, sig_alg = key.sign(signed, padding.PKCS1v15(), h), {"algorithm": f"{digest}_rsa"}
    if sid == "ski":
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        version, sid_der = b"\x02\x01\x03", _tlv(0x80, ski)
    else:
        version = b"\x02\x01\x01"
        sid_der = cms.IssuerAndSerialNumber({"issuer": acert.issuer,
                                             "serial_number": acert.serial_number}).dump()  # fmt: skip
    digest_alg = algos.DigestAlgorithm({"algorithm": digest}).dump()
    signer_info = _tlv(0x30, version + sid_der + digest_alg + _tlv(0xA0, b"".join(sent))
                       + algos.SignedDigestAlgorithm(sig_alg).dump() + _tlv(0x04, signature))  # fmt: skip
    encap = _tlv(0x30, core.ObjectIdentifier("1.2.840.113549.1.9.16.1.4").dump()
                 + (b"" if detached else _tlv(0xA0, _tlv(0x04, tst_der))))  # fmt: skip
    digests = b"".join(sorted(listed)) if listed is not None else digest_alg
    signed_data = _tlv(0x30, b"\x02\x01\x03" + _tlv(0x31, digests) + encap
                       + (_tlv(0xA0, cert_der) if certs else b"")
                       + _tlv(0x31, signer_info * signers))  # fmt: skip
    token = _tlv(0x30, core.ObjectIdentifier("1.2.840.113549.1.7.2").dump()
                 + _tlv(0xA0, signed_data))  # fmt: skip
    return response_for_token(token)


def indefinite(response: bytes) -> bytes:
    """``response`` with the wrappers around the signed parts in BER: indefinite
    lengths, and the eContent as a constructed OCTET STRING of two pieces (how
    Bouncy Castle's CMS classes used to send tokens).  The signed bytes stay."""

    def raw(tlv: ber.Tlv) -> bytes:
        return tlv.raw(response)

    def wrap(identifier: int, *parts: bytes) -> bytes:
        return bytes([identifier, 0x80]) + b"".join(parts) + b"\0\0"

    status, token = ber.read(response).children
    content_type, explicit = token.children
    version, digests, encap, *middle, signer_infos = explicit.children[0].children
    e_type, e_explicit = encap.children
    value = e_explicit.children[0].content(response)
    pieces = wrap(0x24, _tlv(0x04, value[: len(value) // 2]), _tlv(0x04, value[len(value) // 2 :]))
    rest = [wrap(0xA0, *map(raw, m.children)) if m.is_(2, 0) else raw(m) for m in middle]
    signer_info = wrap(0x30, *map(raw, signer_infos.children[0].children))
    signed_data = wrap(0x30, raw(version), raw(digests),
                       wrap(0x30, raw(e_type), wrap(0xA0, pieces)), *rest,
                       wrap(0x31, signer_info))  # fmt: skip
    return wrap(0x30, raw(status), wrap(0x30, raw(content_type), wrap(0xA0, signed_data)))


def crafted_cases(root: Path) -> dict[str, Case]:
    pki = make_pki(root / "crafted-ec")
    rsa_pki = make_pki(root / "crafted-rsa", "rsa")
    cases: dict[str, Case] = {}

    def add(name: str, p: Pki, build: Callable[[int], bytes], valid: bool = True,
            code: str | None = None) -> None:  # fmt: skip
        q = query()
        cases[name] = Case(build(nonce_of(q)), q, p.ca_file, None, valid, code)

    add("crafted-ess-v1-and-v2", pki, lambda n: craft(pki, make_tst_info(n), ess="both"))
    add("crafted-signed-attrs-not-in-der-order", pki,
        lambda n: craft(pki, make_tst_info(n), attrs="reversed"))  # fmt: skip
    add("crafted-signed-attrs-reordered-after-signing", pki,
        lambda n: craft(pki, make_tst_info(n), attrs="reordered"), False, "tsa_signature_invalid")  # fmt: skip
    add("crafted-signed-attrs-long-form-length", pki,
        lambda n: craft(pki, make_tst_info(n), attrs="long-length"), False,
        "tsa_response_malformed")  # fmt: skip
    add("crafted-signed-attr-values-not-in-der-order", pki,
        lambda n: craft(pki, make_tst_info(n), attrs="values-unsorted"), False,
        "tsa_response_malformed")  # fmt: skip
    stranger = rsa_pki.tsa_cert.public_bytes(serialization.Encoding.DER)
    add("crafted-ess-names-a-certificate-outside-the-chain", pki,
        lambda n: craft(pki, make_tst_info(n), ess_extra=stranger), False,
        "tsa_signer_cert_mismatch")  # fmt: skip
    root_der = pki.ca_cert.public_bytes(serialization.Encoding.DER)
    add("crafted-ess-names-the-root-second", pki,
        lambda n: craft(pki, make_tst_info(n), ess_extra=root_der))  # fmt: skip
    add("crafted-ess-issuer-serial-not-the-signer", pki,
        lambda n: craft(pki, make_tst_info(n), ess_serial_offset=1), False,
        "tsa_signer_cert_mismatch")  # fmt: skip
    add("crafted-imprint-hash-parameters-null", pki,
        lambda n: craft(pki, make_tst_info(n, imprint_parameters=b"\x05\x00")))  # fmt: skip
    add("crafted-imprint-hash-parameters-integer", pki,
        lambda n: craft(pki, make_tst_info(n, imprint_parameters=b"\x02\x01\x05")), False,
        "tsa_response_malformed")  # fmt: skip
    sha256 = algos.DigestAlgorithm({"algorithm": "sha256"}).dump()
    sha384 = algos.DigestAlgorithm({"algorithm": "sha384"}).dump()
    unknown = _tlv(0x30, core.ObjectIdentifier("1.3.6.1.4.1.55555.3").dump())
    add("crafted-digest-algorithms-lack-the-signers", pki,
        lambda n: craft(pki, make_tst_info(n), listed=[sha384]), False,
        "tsa_response_malformed")  # fmt: skip
    add("crafted-digest-algorithms-list-an-unknown-one", pki,
        lambda n: craft(pki, make_tst_info(n), listed=[sha256, unknown]), False,
        "tsa_response_malformed")  # fmt: skip
    add("crafted-digest-algorithms-list-two-known", pki,
        lambda n: craft(pki, make_tst_info(n), listed=[sha256, sha384]))  # fmt: skip
    add("crafted-two-signers", pki, lambda n: craft(pki, make_tst_info(n), signers=2), False,
        "tsa_response_malformed")  # fmt: skip
    add("crafted-detached-content", pki, lambda n: craft(pki, make_tst_info(n), detached=True),
        False, "tsa_response_malformed")  # fmt: skip
    add("crafted-tstinfo-explicit-default", pki,
        lambda n: craft(pki, make_tst_info(n, explicit_default=True)))  # fmt: skip
    add("crafted-indefinite-lengths", rsa_pki,
        lambda n: indefinite(craft(rsa_pki, make_tst_info(n))))  # fmt: skip
    add("crafted-no-ess", pki, lambda n: craft(pki, make_tst_info(n), ess="none"), False,
        "tsa_signer_cert_mismatch")  # fmt: skip
    add("crafted-rsassa-pss", rsa_pki, lambda n: craft(rsa_pki, make_tst_info(n), scheme="pss"),
        False, "tsa_algorithm_unsupported")  # fmt: skip
    add("crafted-subject-key-identifier-sid", pki,
        lambda n: craft(pki, make_tst_info(n), sid="ski"), False, "tsa_response_malformed")  # fmt: skip
    add("crafted-nonce-missing", pki, lambda n: craft(pki, make_tst_info(None)), False,
        "tsa_nonce_mismatch")  # fmt: skip
    ed = make_pki(root / "crafted-ed25519", "ed25519")
    add("crafted-ed25519", ed, lambda n: craft(ed, make_tst_info(n)), False,
        "tsa_algorithm_unsupported")  # fmt: skip
    ku = make_pki(root / "crafted-ku", key_usage=("digital_signature", "key_encipherment"))
    add("crafted-key-usage-key-encipherment", ku, lambda n: craft(ku, make_tst_info(n)), False,
        "tsa_key_usage_invalid")  # fmt: skip
    crit = make_pki(root / "crafted-crit", critical_unknown=True)
    add("crafted-unknown-critical-extension", crit, lambda n: craft(crit, make_tst_info(n)),
        False, "tsa_chain_untrusted")  # fmt: skip
    san = make_pki(root / "crafted-san", san="tsa.example")
    dns = asn1_x509.GeneralName(name="dns_name", value="tsa.example")
    add("crafted-tsa-name-in-subject-alt-name", san,
        lambda n: craft(san, make_tst_info(n, tsa_name=dns)))  # fmt: skip
    add("crafted-tsa-name-not-the-signer", pki,
        lambda n: craft(pki, make_tst_info(n, tsa_name=dns)), False, "tsa_name_mismatch")  # fmt: skip
    return cases


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def java_and_bc(require_tool: Callable[[str | None, str], str]) -> tuple[str, str]:
    java = require_tool(
        shutil.which("java") if shutil.which("javac") else None,
        "a JDK (java and javac, 11 or later) is not installed",
    )
    classpath = require_tool(
        bc_classpath(),
        f"Bouncy Castle jars not found: apt-get install libbcpkix-java, or set {BC_CLASSPATH_ENV}",
    )
    return java, classpath


@pytest.fixture(scope="module")
def cases(
    openssl_bin: str, java_and_bc: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Case]:
    root = tmp_path_factory.mktemp("interop")
    made = {**dev_cases(root), **openssl_cases(openssl_bin, root),
            **bc_cases(*java_and_bc, root), **crafted_cases(root)}  # fmt: skip
    assert sorted(made) == sorted(CASES), sorted(set(made) ^ set(CASES))
    return made


CASES = [
    "dev-ec", "dev-rsa", "dev-no-certs-chain-in-trust", "dev-no-certs-no-chain",
    "dev-expired-tsa-cert-at-gentime", "dev-altered-tstinfo", "dev-other-root",
    "openssl-ess-v2", "openssl-ess-v1", "openssl-chain-embedded",
    "openssl-no-certs-chain-in-trust", "openssl-altered-signed-attrs",
    "bc-ess-v2-tsa-first", "bc-ess-v2-ca-first", "bc-ess-v1-ber", "bc-no-certs-chain-in-trust",
    "bc-altered-tstinfo", "bc-expired-tsa-cert-at-gentime",
    "crafted-ess-v1-and-v2", "crafted-signed-attrs-not-in-der-order",
    "crafted-signed-attrs-reordered-after-signing", "crafted-tstinfo-explicit-default",
    "crafted-indefinite-lengths", "crafted-no-ess", "crafted-rsassa-pss",
    "crafted-subject-key-identifier-sid", "crafted-nonce-missing", "crafted-ed25519",
    "crafted-key-usage-key-encipherment", "crafted-unknown-critical-extension",
    "crafted-tsa-name-in-subject-alt-name", "crafted-tsa-name-not-the-signer",
    "crafted-signed-attrs-long-form-length", "crafted-signed-attr-values-not-in-der-order",
    "crafted-ess-names-a-certificate-outside-the-chain", "crafted-ess-names-the-root-second",
    "crafted-ess-issuer-serial-not-the-signer", "crafted-imprint-hash-parameters-null",
    "crafted-imprint-hash-parameters-integer", "crafted-digest-algorithms-lack-the-signers",
    "crafted-digest-algorithms-list-an-unknown-one", "crafted-digest-algorithms-list-two-known",
    "crafted-two-signers", "crafted-detached-content",
]  # fmt: skip


# -- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_same_verdict_as_openssl_ts_verify(cases: dict[str, Case], openssl_bin: str,
                                           name: str) -> None:  # fmt: skip
    case = cases[name]
    valid, code = ours(case)
    openssl_valid, stderr = theirs(openssl_bin, case)
    assert (valid, code) == (case.valid, case.code)
    assert openssl_valid == case.valid, stderr


def test_the_variants_are_what_they_claim(cases: dict[str, Case]) -> None:
    """Each case's name says what real TSAs do; check that the bytes do it."""

    def certificate_order(name: str) -> list[bytes]:
        top = ber.read(cases[name].response)
        signed_data = top.children[1].children[1].children[0]
        cert_set = next(c for c in signed_data.children if c.is_(2, 0))
        return [c.raw(cases[name].response) for c in cert_set.children]

    # Bouncy Castle keeps the order it is given: exactly one of the two is DER's.
    orders = [certificate_order(n) for n in ("bc-ess-v2-tsa-first", "bc-ess-v2-ca-first")]
    assert all(len(o) == 2 for o in orders) and orders[0] == orders[1][::-1]
    assert [o == sorted(o) for o in orders].count(False) == 1
    assert len(certificate_order("openssl-chain-embedded")) == 2
    for name in ("dev-no-certs-chain-in-trust", "openssl-no-certs-chain-in-trust",
                 "bc-no-certs-chain-in-trust"):  # fmt: skip
        assert parse_response(cases[name].response).certificates == ()

    def ess(name: str) -> set[str]:
        return {a["type"].native for a in parse_response(cases[name].response).signed_attrs} & {
            "signing_certificate", "signing_certificate_v2"}  # fmt: skip

    assert ess("openssl-ess-v1") == ess("bc-ess-v1-ber") == {"signing_certificate"}
    assert ess("openssl-ess-v2") == ess("bc-ess-v2-tsa-first") == {"signing_certificate_v2"}
    assert ess("crafted-ess-v1-and-v2") == {"signing_certificate", "signing_certificate_v2"}
    chain_ids = parse_response(cases["openssl-chain-embedded"].response).signed_attrs
    v2 = next(a for a in chain_ids if a["type"].native == "signing_certificate_v2")
    assert len(v2["values"][0]["certs"]) == 2  # the signer's and its root's ESSCertIDv2
    now = dt.datetime.now(dt.UTC)
    for name in ("dev-expired-tsa-cert-at-gentime", "bc-expired-tsa-cert-at-gentime"):
        case = cases[name]
        report = verify_token(case.response, IMPRINT, nonce=case.nonce, trust_roots=case.trust())
        assert report.signer_not_after < now and report.cert_expired_now
        assert report.signer_not_before <= report.gen_time <= report.signer_not_after
    crafted = cases["crafted-indefinite-lengths"].response
    assert crafted[1] == 0x80 and ber.read(crafted).indefinite
    attrs = parse_response(cases["crafted-signed-attrs-not-in-der-order"].response)
    encodings = [a.dump() for a in attrs.signed_attrs]
    assert encodings != sorted(encodings)


def test_an_expired_tsa_certificate_fails_now_in_openssl_but_not_at_gentime(
    cases: dict[str, Case], openssl_bin: str
) -> None:
    for name in ("dev-expired-tsa-cert-at-gentime", "bc-expired-tsa-cert-at-gentime"):
        case = cases[name]
        assert theirs(openssl_bin, case)[0]
        assert not theirs(openssl_bin, case, attime=dt.datetime.now(dt.UTC))[0]
        assert ours(case) == (True, None)


def test_regression_certificate_set_not_in_der_order_was_refused_as_malformed(
    cases: dict[str, Case],
) -> None:
    """rfc3161-client's strict-DER parser refused these as tsa_response_malformed."""
    for name in ("bc-ess-v2-tsa-first", "bc-ess-v2-ca-first", "openssl-chain-embedded"):
        case = cases[name]
        report = verify_token(case.response, IMPRINT, nonce=case.nonce, trust_roots=case.trust())
        assert report.chain[0] == report.signer_subject and len(report.chain) == 2


def test_deliberate_divergences_from_openssl(cases: dict[str, Case], openssl_bin: str,
                                             tmp_path: Path) -> None:  # fmt: skip
    """Where openssl accepts and we refuse, on purpose (docs/adr/0009): trailing
    bytes after the response, a SHA-1 CMS digest, an EKU with a purpose besides
    timeStamping, a TSTInfo not framed as DER (the signed parts must be DER)."""
    good = cases["dev-ec"]
    pki = make_pki(tmp_path / "sha1")
    extra = make_pki(tmp_path / "extra-eku", extra_eku=True)

    def with_nonce(build: Callable[[int], bytes], p: Pki) -> Case:
        q = query()
        return Case(build(nonce_of(q)), q, p.ca_file)

    def indefinite_tst_info(n: int) -> bytes:
        der = make_tst_info(n)
        return b"\x30\x80" + b"".join(c.raw(der) for c in ber.read(der).children) + b"\0\0"

    divergent = [
        ("tsa_response_malformed", Case(good.response + b"\0", good.query, good.ca_file)),
        ("tsa_algorithm_unsupported",
         with_nonce(lambda n: craft(pki, make_tst_info(n), digest="sha1"), pki)),
        ("tsa_eku_missing", with_nonce(lambda n: craft(extra, make_tst_info(n)), extra)),
        ("tsa_response_malformed", with_nonce(lambda n: craft(pki, indefinite_tst_info(n)), pki)),
    ]  # fmt: skip
    for code, case in divergent:
        assert ours(case) == (False, code)
        accepted, stderr = theirs(openssl_bin, case)
        assert accepted, (code, stderr)


def _elements(tlv: ber.Tlv) -> Iterator[ber.Tlv]:
    yield tlv
    for child in tlv.children:
        yield from _elements(child)


def _outside(spans: list[tuple[int, int]], i: int) -> bool:
    return not any(start <= i < end for start, end in spans)


@pytest.mark.parametrize("name", ["dev-ec", "openssl-ess-v2", "bc-ess-v2-tsa-first"])
def test_flipped_bits_same_verdict_as_openssl(cases: dict[str, Case], openssl_bin: str,
                                              name: str) -> None:  # fmt: skip
    """Flip one bit of each byte outside the certificate set (unsigned: we ignore
    a certificate we cannot read, OpenSSL refuses the token): both verifiers give
    the same verdict, except that OpenSSL's decoder lets some encodings through
    that X.690 forbids (a SET marked primitive), which we refuse."""
    case = cases[name]
    top = ber.read(case.response)
    signed_data = top.children[1].children[1].children[0]
    cert_sets = [(c.start, c.end) for c in signed_data.children if c.is_(2, 0)]
    positions = [i for i in range(len(case.response)) if _outside(cert_sets, i)]
    constructed_at = {t.start for t in _elements(top) if t.constructed}

    def judge(i: int) -> tuple[int, bool, bool, bool]:
        bit = i % 8
        mutated = Case(flip(case.response, i, bit), case.query, case.ca_file, case.untrusted)
        try:
            ber.read(mutated.response)
            # A constructed element marked primitive (bit 6 of its identifier, 0x20)
            # frames as BER, but a SET or SEQUENCE cannot be primitive.
            well_formed = not (i in constructed_at and bit == 5)
        except ber.BerError:
            well_formed = False
        return (
            i,
            ours(mutated)[0],
            theirs(openssl_bin, mutated, gen_time_of(case.response))[0],
            (well_formed),
        )

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(judge, positions))
    disagree = [(i, mine, other) for i, mine, other, well_formed in results
                if mine != other and (mine or well_formed)]  # fmt: skip
    assert disagree == []
    assert any(mine for _, mine, _, _ in results)  # the unsigned status still verifies
    assert sum(not mine for _, mine, _, _ in results) > len(positions) // 2


def test_cli_takes_the_chain_from_trust_for_a_token_without_certificates(
    cases: dict[str, Case], tmp_path: Path
) -> None:
    """``tsa verify --trust`` with the root and the TSA certificate in one PEM file."""
    for name in ("dev-no-certs-chain-in-trust", "bc-no-certs-chain-in-trust",
                 "openssl-no-certs-chain-in-trust"):  # fmt: skip
        case = cases[name]
        assert case.untrusted is not None
        data, token, bundle, roots_only = (tmp_path / f"{name}.{ext}" for ext in
                                           ("txt", "tsr", "pem", "roots.pem"))  # fmt: skip
        data.write_bytes(DATA)
        token.write_bytes(case.response)
        bundle.write_bytes(case.ca_file.read_bytes() + case.untrusted.read_bytes())
        roots_only.write_bytes(case.ca_file.read_bytes())
        args = ["tsa", "verify", "--data", str(data), "--token", str(token), "--nonce",
                str(case.nonce), "--trust"]  # fmt: skip
        ok = CliRunner().invoke(main, [*args, str(bundle)], catch_exceptions=False)
        assert ok.exit_code == 0, ok.output
        assert "(certificate from the trust bundle)" in ok.stdout
        bad = CliRunner().invoke(main, [*args, str(roots_only)], catch_exceptions=False)
        assert bad.exit_code == 1 and "tsa_signer_unknown" in bad.stderr


def test_a_bundle_without_the_root_is_refused_like_openssl(
    cases: dict[str, Case], openssl_bin: str, tmp_path: Path
) -> None:
    """Only a self-issued certificate of the bundle is a trust anchor (OpenSSL
    without partial chains): the TSA certificate alone anchors nothing."""
    case, tsa_only = cases["dev-ec"], cases["dev-no-certs-chain-in-trust"].untrusted
    assert tsa_only is not None
    alone = Case(case.response, case.query, tsa_only)
    assert ours(alone) == (False, "tsa_chain_untrusted")
    assert not theirs(openssl_bin, alone)[0]
