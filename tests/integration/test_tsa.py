"""The RFC 3161 rail against real TSAs over HTTP: the development TSA (in a
thread and as a ``remembrancer tsa serve`` process) and an independent one made
with ``openssl ts -reply``; ``openssl ts -verify`` and our verifier must agree;
HTTP failures are classified for the scheduler's backoff."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from remembrancer.anchoring.base import RailError, VerifyContext, recheck
from remembrancer.anchoring.rfc3161.chain import load_trust_bundle
from remembrancer.anchoring.rfc3161.devtsa import DevTsa, DevTsaServer, rejection
from remembrancer.anchoring.rfc3161.model import Imprint
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail, build_request, new_nonce
from remembrancer.anchoring.rfc3161.verify import verify_token
from remembrancer.cli.main import main
from remembrancer.core.anchor import Anchor
from remembrancer.demo.procs import free_port

DIGEST = hashlib.sha256(b"a checkpoint body").digest()


def now() -> int:
    return int(time.time())


def rail_for(url: str, bundle: Path, **extra: Any) -> Rfc3161Rail:
    return Rfc3161Rail.from_config(
        "rfc3161:test", {"url": url, "trust_bundle": str(bundle), "timeout": 5, **extra}
    )


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevTsa, DevTsaServer]]:
    tsa = DevTsa(tmp_path_factory.mktemp("devtsa"))
    with DevTsaServer(tsa) as server:
        yield tsa, server


# -- the rail and the dev TSA ---------------------------------------------------------


def test_submit_returns_a_verified_anchor_that_reverifies(dev: tuple[DevTsa, DevTsaServer]) -> None:
    tsa, server = dev
    rail = rail_for(server.url, tsa.ca_cert_path)
    t = now()
    anchor = rail.submit(DIGEST, now=t)
    assert anchor.status == "verified" and anchor.target == "rfc3161:test"
    assert anchor.root == DIGEST and anchor.chain == "TSA"
    assert abs((anchor.anchor_ts or 0) - t) < 60 and anchor.observed_at == t
    assert int(anchor.tx_ref, 16) > 0
    assert "trust bundle sha256:" in anchor.verifier
    ev = anchor.evidence
    assert set(ev) >= {"type", "tsr", "nonce", "imprint", "tsaName", "policy", "serialNumber",
                       "genTime", "signerSha256", "url"}  # fmt: skip
    assert ev["imprint"]["hashedMessage"] == hashlib.sha256(DIGEST).hexdigest()
    assert ev["serialNumber"] == anchor.tx_ref
    # Through the receipt's JSON and back, then verified offline again.
    restored = Anchor.from_dict(json.loads(json.dumps(anchor.to_dict())))
    again = recheck(rail, restored, VerifyContext(now=t + 10))
    assert again.status == "verified" and again.observed_at == t + 10
    assert again.tx_ref == anchor.tx_ref and again.anchor_ts == anchor.anchor_ts


def test_openssl_accepts_the_rails_response(
    dev: tuple[DevTsa, DevTsaServer], tmp_path: Path, openssl_bin: str
) -> None:
    tsa, server = dev
    anchor = rail_for(server.url, tsa.ca_cert_path).submit(DIGEST, now=now())
    tsr = tmp_path / "resp.tsr"
    tsr.write_bytes(base64.b64decode(anchor.evidence["tsr"]))
    data = tmp_path / "digest.bin"  # openssl hashes it: the imprint is SHA-256(digest)
    data.write_bytes(DIGEST)
    ok = subprocess.run([openssl_bin, "ts", "-verify", "-data", str(data), "-in", str(tsr),
                         "-CAfile", str(tsa.ca_cert_path)], capture_output=True, timeout=30)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert b"Verification: OK" in ok.stdout
    data.write_bytes(DIGEST[::-1])
    bad = subprocess.run([openssl_bin, "ts", "-verify", "-data", str(data), "-in", str(tsr),
                          "-CAfile", str(tsa.ca_cert_path)], capture_output=True, timeout=30)  # fmt: skip
    assert bad.returncode != 0


def test_tsa_serve_process(tmp_path: Path) -> None:
    port = free_port()
    directory = tmp_path / "served"
    proc = subprocess.Popen(
        [sys.executable, "-m", "remembrancer.cli", "tsa", "serve", "--dir", str(directory),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                with urllib.request.urlopen(url + "ca.pem", timeout=1) as r:
                    served_bundle = r.read()
                break
            except OSError:
                assert time.monotonic() < deadline, "tsa serve did not come up"
                time.sleep(0.1)
        bundle = directory / "ca.pem"
        assert served_bundle == bundle.read_bytes()
        anchor = rail_for(url, bundle).submit(DIGEST, now=now())
        assert anchor.status == "verified"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"trust bundle: {bundle.resolve()}" in out
    assert f"listening on {url}" in out


# -- an independent TSA: openssl ts -reply ---------------------------------------------


def _run(*args: str, cwd: Path) -> None:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, timeout=60)
    assert proc.returncode == 0, (args, proc.stderr)


@pytest.fixture(scope="module")
def openssl_tsa(tmp_path_factory: pytest.TempPathFactory, openssl_bin: str) -> Path:
    """An RSA root CA and an ECDSA P-256 TSA certificate with a critical
    timeStamping EKU, made with the openssl CLI (test_tsa_interop.py adds the chain)."""
    d = tmp_path_factory.mktemp("openssl-tsa")
    _run(openssl_bin, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
         "-out", "ca.pem", "-days", "30", "-subj", "/O=OpenSSL test/CN=OpenSSL TSA root", cwd=d)  # fmt: skip
    _run(openssl_bin, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", "/O=OpenSSL test/CN=OpenSSL TSA", cwd=d)  # fmt: skip
    (d / "tsa.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,nonRepudiation\n"
        "extendedKeyUsage=critical,timeStamping\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _run(openssl_bin, "x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "30", "-extfile", "tsa.ext", "-out", "tsa.pem", cwd=d)  # fmt: skip
    (d / "tsaserial").write_text("01\n")
    common = (
        f"dir = {d}\nserial = $dir/tsaserial\ncrypto_device = builtin\n"
        "signer_cert = $dir/tsa.pem\nsigner_key = $dir/tsa.key\nsigner_digest = sha256\n"
        "default_policy = 1.2.3.4.1\nother_policies = 1.2.3.4.5\ndigests = sha256, sha384, sha512\n"
        "accuracy = secs:1\nordering = no\ntsa_name = yes\ness_cert_id_chain = no\n"
    )
    (d / "ts.cnf").write_text(
        "[ tsa ]\ndefault_tsa = tsa_sha256\n"
        f"[ tsa_sha256 ]\n{common}ess_cert_id_alg = sha256\n"
        f"[ tsa_sha1 ]\n{common}"  # openssl's default ESS: signingCertificate v1 (SHA-1)
    )
    return d


def openssl_reply(d: Path, query: bytes, section: str = "tsa_sha256") -> bytes:
    openssl = shutil.which("openssl")
    assert openssl is not None  # the openssl_tsa fixture made d with it
    with tempfile.TemporaryDirectory() as tmp:
        q, r = Path(tmp, "q.tsq"), Path(tmp, "r.tsr")
        q.write_bytes(query)
        _run(openssl, "ts", "-reply", "-config", str(d / "ts.cnf"), "-section", section,
             "-queryfile", str(q), "-out", str(r), cwd=d)  # fmt: skip
        return r.read_bytes()


@pytest.mark.parametrize("section", ["tsa_sha256", "tsa_sha1"])
def test_openssl_tsa_tokens_verify_with_our_verifier(openssl_tsa: Path, section: str) -> None:
    imprint = Imprint.for_digest(DIGEST)
    nonce = new_nonce()
    resp = openssl_reply(openssl_tsa, build_request(imprint, nonce=nonce), section)
    report = verify_token(resp, imprint, nonce=nonce, trust_roots=load_trust_bundle(openssl_tsa / "ca.pem"),
                          policy_oid="1.2.3.4.1")  # fmt: skip
    assert report.policy == "1.2.3.4.1" and report.nonce == nonce
    assert report.chain[-1] == "CN=OpenSSL TSA root,O=OpenSSL test"
    ess = next(c.detail for c in report.checks if c.name == "ess")
    assert ("signingCertificateV2" in ess) == (section == "tsa_sha256")
    # The dev TSA's bundle does not trust openssl's TSA.
    other = DevTsa(openssl_tsa / "dev-for-contrast")
    with pytest.raises(Exception) as info:
        verify_token(resp, imprint, nonce=nonce, trust_roots=load_trust_bundle(other.ca_cert_path))
    assert getattr(info.value, "code", None) == "tsa_chain_untrusted"


class _Handler(BaseHTTPRequestHandler):
    server: _Stub

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        code, reply = self.server.behaviour(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/timestamp-reply")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class _Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behaviour: Callable[[bytes], tuple[int, bytes]]) -> None:
        self.behaviour = behaviour
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def stub() -> Iterator[Callable[[Callable[[bytes], tuple[int, bytes]]], _Stub]]:
    servers: list[_Stub] = []

    def start(behaviour: Callable[[bytes], tuple[int, bytes]]) -> _Stub:
        servers.append(_Stub(behaviour))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def test_rail_against_the_openssl_tsa_over_http(openssl_tsa: Path, stub: Any) -> None:
    lock = threading.Lock()

    def reply(query: bytes) -> tuple[int, bytes]:
        with lock:  # openssl ts -reply keeps its serial in a file
            return 200, openssl_reply(openssl_tsa, query)

    server = stub(reply)
    rail = rail_for(server.url, openssl_tsa / "ca.pem", policy_oid="1.2.3.4.5",
                    pinned_cert=str(openssl_tsa / "tsa.pem"))  # fmt: skip
    anchor = rail.submit(DIGEST, now=now())
    assert anchor.status == "verified" and anchor.evidence["policy"] == "1.2.3.4.5"
    assert recheck(rail, anchor, VerifyContext(now=now())).status == "verified"


# -- the CLI on both TSAs -------------------------------------------------------------


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_tsa_verify_on_both_tsas(
    dev: tuple[DevTsa, DevTsaServer], openssl_tsa: Path, tmp_path: Path
) -> None:
    tsa, _ = dev
    data = tmp_path / "document.txt"
    data.write_bytes(b"a document anyone may timestamp\n")
    imprint = Imprint.of_data(data.read_bytes())
    nonce = new_nonce()
    ours, theirs = tmp_path / "dev.tsr", tmp_path / "openssl.tsr"
    ours.write_bytes(tsa.respond(build_request(imprint, nonce=nonce)))
    theirs.write_bytes(openssl_reply(openssl_tsa, build_request(imprint, nonce=nonce)))
    for token, bundle in ((ours, tsa.ca_cert_path), (theirs, openssl_tsa / "ca.pem")):
        ok = _cli("tsa", "verify", "--data", str(data), "--token", str(token), "--trust", str(bundle),
                  "--nonce", str(nonce))  # fmt: skip
        assert ok.exit_code == 0, ok.output
        lines = ok.stdout.splitlines()
        assert [ln.split(":")[0] for ln in lines[:3]] == ["ok  parse", "ok  signature", "ok  eku"]
        assert any(ln.startswith("ok  chain:") and "valid at genTime" in ln for ln in lines)
        assert lines[-1].startswith("OK: valid RFC 3161 token")
        as_json = _cli("tsa", "verify", "--data", str(data), "--token", str(token), "--trust",
                       str(bundle), "--json", "--nonce", hex(nonce))  # fmt: skip
        report = json.loads(as_json.stdout)
        assert as_json.exit_code == 0 and report["valid"] and report["nonce"] == str(nonce)
    # Not valid: exit 1, one line naming the failed check.
    other = tmp_path / "other.txt"
    other.write_bytes(b"something else")
    for args in (
        ["--data", str(other), "--token", str(ours), "--trust", str(tsa.ca_cert_path)],
        ["--data", str(data), "--token", str(theirs), "--trust", str(tsa.ca_cert_path)],
        [
            "--data",
            str(data),
            "--token",
            str(ours),
            "--trust",
            str(tsa.ca_cert_path),
            "--nonce",
            "5",
        ],
        ["--data", str(data), "--token", str(data), "--trust", str(tsa.ca_cert_path)],
    ):
        bad = _cli("tsa", "verify", *args)
        assert bad.exit_code == 1, bad.output
        assert bad.stderr.startswith("error: tsa_")
    failed = _cli("tsa", "verify", "--json", "--data", str(other), "--token", str(ours),
                  "--trust", str(tsa.ca_cert_path))  # fmt: skip
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["error"]["code"] == "tsa_imprint_mismatch"
    # Bad input: exit 2.
    (tmp_path / "empty.pem").write_text("")
    for args in (
        [
            "--data",
            str(data),
            "--token",
            str(tmp_path / "missing.tsr"),
            "--trust",
            str(tsa.ca_cert_path),
        ],
        [
            "--data",
            str(tmp_path / "missing.txt"),
            "--token",
            str(ours),
            "--trust",
            str(tsa.ca_cert_path),
        ],
        ["--data", str(data), "--token", str(ours), "--trust", str(tmp_path / "empty.pem")],
        [
            "--data",
            str(data),
            "--token",
            str(ours),
            "--trust",
            str(tsa.ca_cert_path),
            "--nonce",
            "x",
        ],
    ):
        assert _cli("tsa", "verify", *args).exit_code == 2


def test_cli_verifies_a_token_whose_tsa_cert_expired_unlike_openssl(
    tmp_path: Path, openssl_bin: str
) -> None:
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3)
    tsa = DevTsa(tmp_path / "old", clock=lambda: t0, tsa_valid_for=dt.timedelta(hours=2))
    data = tmp_path / "old.txt"
    data.write_bytes(b"written three days ago")
    token = tmp_path / "old.tsr"
    token.write_bytes(tsa.respond(build_request(Imprint.of_data(data.read_bytes()), nonce=1)))
    ok = _cli(
        "tsa",
        "verify",
        "--data",
        str(data),
        "--token",
        str(token),
        "--trust",
        str(tsa.ca_cert_path),
    )
    assert ok.exit_code == 0, ok.output
    assert "expired" in ok.stdout and "token still valid" in ok.stdout
    report = json.loads(_cli("tsa", "verify", "--json", "--data", str(data), "--token", str(token),
                             "--trust", str(tsa.ca_cert_path)).stdout)  # fmt: skip
    assert report["validAtGenTime"] is True and report["certExpiredNow"] is True
    verify = [
        openssl_bin,
        "ts",
        "-verify",
        "-data",
        str(data),
        "-in",
        str(token),
        "-CAfile",
        str(tsa.ca_cert_path),
    ]
    assert subprocess.run(verify, capture_output=True, timeout=30).returncode != 0  # checks "now"
    at_gen_time = subprocess.run([*verify, "-attime", str(int(t0.timestamp()))],
                                 capture_output=True, timeout=30)  # fmt: skip
    assert at_gen_time.returncode == 0, at_gen_time.stderr


# -- failures, classified for the backoff ---------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(401, "auth"), (403, "auth"), (500, "transient"), (503, "transient"), (429, "transient"),
     (404, "validation"), (400, "validation")],
)  # fmt: skip
def test_http_status_is_classified(
    dev: tuple[DevTsa, DevTsaServer], stub: Any, status: int, error_class: str
) -> None:
    tsa, _ = dev
    server = stub(lambda q: (status, b"no"))
    with pytest.raises(RailError) as info:
        rail_for(server.url, tsa.ca_cert_path).submit(DIGEST, now=now())
    assert info.value.error_class == error_class
    assert info.value.details["http_status"] == status


def test_bad_answers_are_validation_errors(
    dev: tuple[DevTsa, DevTsaServer], stub: Any, tmp_path: Path
) -> None:
    tsa, server = dev
    cases = {
        "tsa_response_malformed": stub(lambda q: (200, b"\x30\x03\x02\x01")).url,
        "tsa_status_rejected": stub(lambda q: (200, rejection("system_failure", "down"))).url,
    }
    for code, url in cases.items():
        with pytest.raises(RailError) as info:
            rail_for(url, tsa.ca_cert_path).submit(DIGEST, now=now())
        assert (info.value.code, info.value.error_class) == (code, "validation")
    # The dev TSA refuses a policy it does not issue under.
    with pytest.raises(RailError) as info:
        rail_for(server.url, tsa.ca_cert_path, policy_oid="1.2.3.4").submit(DIGEST, now=now())
    assert (info.value.code, info.value.error_class) == ("tsa_status_rejected", "validation")
    # A token that does not verify here: another CA's bundle, or another pinned cert.
    foreign = DevTsa(tmp_path / "foreign")
    with pytest.raises(RailError) as info:
        rail_for(server.url, foreign.ca_cert_path).submit(DIGEST, now=now())
    assert (info.value.code, info.value.error_class) == ("tsa_chain_untrusted", "validation")
    assert base64.b64decode(info.value.details["tsr"])  # kept for the forensics
    with pytest.raises(RailError) as info:
        rail_for(server.url, tsa.ca_cert_path, pinned_cert=str(foreign.tsa_cert_path)).submit(
            DIGEST, now=now()
        )
    assert info.value.code == "tsa_cert_not_pinned"


def test_timeout_is_transient(dev: tuple[DevTsa, DevTsaServer], stub: Any) -> None:
    tsa, _ = dev

    def slow(query: bytes) -> tuple[int, bytes]:
        time.sleep(1.5)
        return 200, tsa.respond(query)

    server = stub(slow)
    rail = Rfc3161Rail.from_config(
        "rfc3161:slow", {"url": server.url, "trust_bundle": str(tsa.ca_cert_path), "timeout": 0.3}
    )
    with pytest.raises(RailError) as info:
        rail.submit(DIGEST, now=now())
    assert info.value.error_class == "transient"


def test_unreachable_rail_then_back(dev: tuple[DevTsa, DevTsaServer]) -> None:
    tsa, _ = dev
    port = free_port()
    rail = rail_for(f"http://127.0.0.1:{port}/", tsa.ca_cert_path)
    with pytest.raises(RailError) as info:  # connection refused
        rail.submit(DIGEST, now=now())
    assert (info.value.code, info.value.error_class) == ("tsa_unreachable", "transient")
    with DevTsaServer(tsa, port=port):
        anchor = rail.submit(DIGEST, now=now())
    assert anchor.status == "verified"
    with pytest.raises(RailError) as info:  # and gone again
        rail.submit(DIGEST, now=now())
    assert info.value.error_class == "transient"
    # Verification needs no network: the evidence alone suffices.
    assert recheck(rail, anchor, VerifyContext(now=now())).status == "verified"
