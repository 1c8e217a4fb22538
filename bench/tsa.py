"""RFC 3161 token verification (issue 15: tokens from real TSAs).

Run ``python -m bench.tsa`` (``--quick`` for fewer tokens).

The same development-TSA tokens (ECDSA P-256 and RSA-2048, DER, one
embedded certificate) are verified by ``verify_token`` and by:

* its cryptographic core alone, measured in the same run: the messageDigest
  hash, the signature over the signed attributes and the path validation at
  genTime with ``cryptography``; the ratio is the share of the time spent on
  what cannot be avoided (1.0 would mean parsing and the other checks cost
  nothing);
* the implementation before ADR 0010 (the commit named by ``BASELINE``, read
  with ``git show``; it also ran rfc3161-client's strict parser and
  verifier), when git and rfc3161-client are available: the ratio is new
  over old tokens per second.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import verification as x509v

from bench.common import Row, suite_main
from bench.common import row as _row
from remembrancer.anchoring.rfc3161.chain import load_trust_bundle
from remembrancer.anchoring.rfc3161.devtsa import DevTsa
from remembrancer.anchoring.rfc3161.model import Imprint
from remembrancer.anchoring.rfc3161.parse import parse_response
from remembrancer.anchoring.rfc3161.rail import build_request, new_nonce
from remembrancer.anchoring.rfc3161.verify import verify_token

BASELINE = "d940e50"  # the last commit with rfc3161-client deciding acceptance
MODULE = "src/remembrancer/anchoring/rfc3161.py"  # its path at BASELINE
OURS = SimpleNamespace(Imprint=Imprint, verify_token=verify_token)


def _tokens(key_type: str, count: int) -> tuple[list[tuple[bytes, Any, int]], list[Any]]:
    tsa = DevTsa(tempfile.mkdtemp(prefix="bench-tsa-"), key_type=key_type)  # type: ignore[arg-type]
    work = []
    for i in range(count):
        imprint = Imprint.of_data(b"checkpoint %d" % i)
        nonce = new_nonce()
        work.append((tsa.respond(build_request(imprint, nonce=nonce)), imprint, nonce))
    return work, load_trust_bundle(tsa.ca_cert_path)


def _rate(fn: Callable[[], None], count: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return count / best


def _core(work: list[tuple[bytes, Any, int]], roots: list[Any]) -> Callable[[], None]:
    """Only the cryptography: digest, signature, path validation (pre-parsed)."""
    parsed = [parse_response(resp) for resp, _, _ in work]
    store = x509v.Store(roots)

    def run() -> None:
        for p in parsed:
            cert = p.certificates[0]
            digest = hashes.Hash(hashes.SHA256())
            digest.update(p.tst_info_der)
            digest.finalize()
            signature = p.signer_info["signature"].native
            key = cert.public_key()
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, p.signed_attrs_der, ec.ECDSA(hashes.SHA256()))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, p.signed_attrs_der, padding.PKCS1v15(), hashes.SHA256())
            gen_time: dt.datetime = p.tst_info["gen_time"].native
            verifier = (
                x509v.PolicyBuilder().store(store).time(gen_time)
                .extension_policies(ca_policy=x509v.ExtensionPolicy.webpki_defaults_ca(),
                                    ee_policy=x509v.ExtensionPolicy.permit_all())
                .build_client_verifier()
            )  # fmt: skip
            verifier.verify(cert, [])

    return run


def _baseline() -> ModuleType | None:
    """The pre-ADR-0010 module, or None without git or rfc3161-client."""
    if importlib.util.find_spec("rfc3161_client") is None:
        return None
    source = subprocess.run(["git", "show", f"{BASELINE}:{MODULE}"], capture_output=True,
                            cwd=Path(__file__).parent)  # fmt: skip
    if source.returncode != 0:
        return None
    path = Path(tempfile.mkdtemp(prefix="bench-tsa-")) / "rfc3161_baseline.py"
    path.write_bytes(source.stdout)
    spec = importlib.util.spec_from_file_location("rfc3161_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["rfc3161_baseline"] = module
    spec.loader.exec_module(module)
    return module


def _verify_all(module: Any, work: list[tuple[bytes, Any, int]], roots: list[Any]) -> None:
    for response, imprint, nonce in work:
        their_imprint = module.Imprint(imprint.hash_algorithm, imprint.hashed_message)
        module.verify_token(response, their_imprint, nonce=nonce, trust_roots=roots)


def run(quick: bool) -> list[Row]:
    count, rounds = (40, 2) if quick else (300, 3)
    baseline = _baseline()
    rows = []
    for key_type, label in (("ec", "ECDSA P-256"), ("rsa", "RSA-2048")):
        work, roots = _tokens(key_type, count)
        ours = _rate(lambda w=work, r=roots: _verify_all(OURS, w, r), count, rounds)  # type: ignore[misc]
        core = _rate(_core(work, roots), count, rounds)
        rows.append(_row(f"verify_token, {count} dev TSA tokens ({label}) vs its cryptographic "
                         "core (digest, signature, path validation)", ours, core, None, "tokens/s"))  # fmt: skip
        if baseline is not None:
            old = _rate(lambda w=work, r=roots: _verify_all(baseline, w, r), count, rounds)  # type: ignore[misc]
            rows.append(_row(f"verify_token, {count} dev TSA tokens ({label}) vs the implementation "
                             f"before ADR 0010 (commit {BASELINE})", ours, old, None, "tokens/s"))  # fmt: skip
    return rows


if __name__ == "__main__":
    raise SystemExit(suite_main(run, "python -m bench.tsa", __doc__))
