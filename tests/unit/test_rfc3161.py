"""RFC 3161 verification (``anchoring.rfc3161.verify.verify_token``) against real tokens
from the development TSA: every failure has its own code, nothing else escapes,
and the chain is judged at genTime (a token outlives its TSA certificate)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remembrancer.anchoring.base import RailError, RailRegistry, VerifyContext, recheck
from remembrancer.anchoring.rfc3161 import ber
from remembrancer.anchoring.rfc3161.chain import load_trust_bundle, trust_bundle_fingerprint
from remembrancer.anchoring.rfc3161.devtsa import (
    DEV_POLICY_OID,
    DevTsa,
    rejection,
    response_for_token,
)
from remembrancer.anchoring.rfc3161.model import ERROR_CODES, Imprint
from remembrancer.anchoring.rfc3161.parse import parse_response
from remembrancer.anchoring.rfc3161.rail import Rfc3161Rail, build_request, new_nonce
from remembrancer.anchoring.rfc3161.verify import verify_token
from remembrancer.core.anchor import Anchor
from remembrancer.core.errors import ConfigError, VerificationError

DATA = b"the checkpoint body of some log\n"


@pytest.fixture(scope="module")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> DevTsa:
    return DevTsa(tmp_path_factory.mktemp("devtsa"))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> DevTsa:
    return DevTsa(tmp_path_factory.mktemp("foreign"), name="Foreign TSA")


def roots(t: DevTsa) -> list:  # type: ignore[type-arg]
    return load_trust_bundle(t.ca_cert_path)


def issue(
    t: DevTsa, data: bytes = DATA, *, policy: str | None = None, cert_req: bool = True
) -> tuple[bytes, Imprint, int]:
    """A real request/response round with ``t`` (no HTTP)."""
    imprint = Imprint.of_data(data)
    nonce = new_nonce()
    request = build_request(imprint, nonce=nonce, policy_oid=policy)
    if not cert_req:
        req = tsp.TimeStampReq.load(request)
        req["cert_req"] = False
        request = req.dump(force=True)
    return t.respond(request), imprint, nonce


def code_of(fn: Callable[[], object]) -> str:
    with pytest.raises(VerificationError) as info:
        fn()
    assert info.value.code in ERROR_CODES, info.value.code
    return info.value.code


# -- good tokens ----------------------------------------------------------------------


def test_good_token_verifies_with_a_full_report(tsa: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa)
    report = verify_token(resp, imprint, nonce=nonce, trust_roots=roots(tsa))
    assert report.form == "response" and report.status == "granted"
    assert report.nonce == nonce and report.nonce_checked
    assert report.policy == DEV_POLICY_OID
    assert report.valid_at_gen_time is True and report.cert_expired_now is False
    assert abs(report.gen_time_epoch - dt.datetime.now(dt.UTC).timestamp()) < 60
    assert report.chain[0] == tsa.tsa_cert.subject.rfc4514_string()
    assert report.chain[-1] == tsa.ca_cert.subject.rfc4514_string()
    assert (
        report.signer_sha256
        == hashlib.sha256(tsa.tsa_cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    )
    assert "Remembrancer dev TSA" in (report.tsa_name or "")
    names = [c.name for c in report.checks]
    assert names == ["parse", "signature", "eku", "chain", "ess", "tsa-name", "imprint",
                     "nonce", "policy"]  # fmt: skip
    assert f"sha256:{trust_bundle_fingerprint(roots(tsa))}" in report.verifier
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["valid"] and doc["validAtGenTime"] and not doc["certExpiredNow"]
    assert doc["nonce"] == str(nonce)  # beyond 2**53: a string in JSON


def test_rsa_tsa_and_bare_token_and_no_embedded_cert(tmp_path: Path) -> None:
    t = DevTsa(tmp_path, key_type="rsa")
    resp, imprint, nonce = issue(t)
    report = verify_token(resp, imprint, nonce=nonce, trust_roots=roots(t))
    assert "RSA-PKCS1v15-SHA256" in report.checks[1].detail
    token = parse_response(resp).token_der
    assert verify_token(token, imprint, nonce=nonce, trust_roots=roots(t)).form == "token"
    bare, imprint, nonce = issue(t, cert_req=False)
    assert parse_response(bare).certificates == ()
    assert code_of(lambda: verify_token(bare, imprint, nonce=nonce, trust_roots=roots(t))) == (
        "tsa_signer_unknown"
    )
    pinned = verify_token(bare, imprint, nonce=nonce, trust_roots=roots(t), pinned_cert=t.tsa_cert)
    assert "from the pin" in pinned.checks[1].detail


def test_granted_with_mods_is_accepted_and_nonce_is_optional(tsa: DevTsa) -> None:
    resp, imprint, _ = issue(tsa)
    mods = response_for_token(parse_response(resp).token_der, status=1)
    report = verify_token(mods, imprint, nonce=None, trust_roots=roots(tsa))
    assert report.status == "granted_with_mods" and not report.nonce_checked


# -- each failure, its code -----------------------------------------------------------


def test_wrong_nonce(tsa: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa)
    assert code_of(
        lambda: verify_token(resp, imprint, nonce=nonce + 1, trust_roots=roots(tsa))
    ) == ("tsa_nonce_mismatch")


def test_wrong_imprint_value_or_algorithm(tsa: DevTsa) -> None:
    resp, _, nonce = issue(tsa)
    for other in (Imprint.of_data(DATA + b"!"), Imprint.of_data(DATA, "sha384")):
        assert code_of(lambda: verify_token(resp, other, nonce=nonce, trust_roots=roots(tsa))) == (  # noqa: B023
            "tsa_imprint_mismatch"
        )


def test_token_from_a_foreign_ca_is_untrusted(tsa: DevTsa, foreign: DevTsa) -> None:
    resp, imprint, nonce = issue(foreign)
    assert code_of(lambda: verify_token(resp, imprint, nonce=nonce, trust_roots=roots(tsa))) == (
        "tsa_chain_untrusted"
    )
    # With both bundles it verifies: trust is exactly the bundle.
    verify_token(resp, imprint, nonce=nonce, trust_roots=roots(tsa) + roots(foreign))


def test_pinned_certificate(tsa: DevTsa, foreign: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa)
    report = verify_token(
        resp, imprint, nonce=nonce, trust_roots=roots(tsa), pinned_cert=tsa.tsa_cert
    )
    assert "pin" in [c.name for c in report.checks]
    assert (
        code_of(
            lambda: verify_token(
                resp, imprint, nonce=nonce, trust_roots=roots(tsa), pinned_cert=foreign.tsa_cert
            )
        )
        == "tsa_cert_not_pinned"
    )


def test_policy(tsa: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa, policy=DEV_POLICY_OID)
    verify_token(resp, imprint, nonce=nonce, trust_roots=roots(tsa), policy_oid=DEV_POLICY_OID)
    assert (
        code_of(
            lambda: verify_token(
                resp, imprint, nonce=nonce, trust_roots=roots(tsa), policy_oid="1.2.3.4"
            )
        )
        == "tsa_policy_mismatch"
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"\x30", b"\x30\x03\x02\x01", b"\x04\x00", b"not DER at all", b"\x30\x80\x00\x00"],
)
def test_malformed_bytes(tsa: DevTsa, data: bytes) -> None:
    imprint = Imprint.of_data(DATA)
    assert code_of(lambda: verify_token(data, imprint, nonce=None, trust_roots=roots(tsa))) == (
        "tsa_response_malformed"
    )


def test_truncated_and_trailing_data(tsa: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa)
    for cut in (1, 2, 10, len(resp) // 2, len(resp) - 1):
        assert (
            code_of(
                lambda: verify_token(resp[:cut], imprint, nonce=nonce, trust_roots=roots(tsa))  # noqa: B023
            )
            == "tsa_response_malformed"
        )
    assert (
        code_of(lambda: verify_token(resp + b"\x00", imprint, nonce=nonce, trust_roots=roots(tsa)))
        == "tsa_response_malformed"
    )


def test_rejections_from_the_dev_tsa(tsa: DevTsa) -> None:
    imprint = Imprint.of_data(DATA)
    sha1_req = tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha1"},
                "hashed_message": hashlib.sha1(DATA).digest(),
            },
            "nonce": 7,
            "cert_req": True,
        }
    ).dump()
    cases = {
        "bad_alg": sha1_req,
        "unaccepted_policy": build_request(imprint, nonce=7, policy_oid="1.2.3.4"),
        "bad_data_format": b"garbage",
    }
    for fail_info, request in cases.items():
        resp = tsa.respond(request)
        with pytest.raises(VerificationError) as info:
            verify_token(resp, imprint, nonce=7, trust_roots=roots(tsa))
        assert info.value.code == "tsa_status_rejected"
        assert info.value.details["fail_info"] == [fail_info]
        assert info.value.details["status"] == 2
    hand_made = rejection("system_failure", "down for maintenance")
    assert code_of(
        lambda: verify_token(hand_made, imprint, nonce=None, trust_roots=roots(tsa))
    ) == ("tsa_status_rejected")


@pytest.mark.parametrize("eku", ["noncritical", "absent"])
def test_tsa_cert_without_critical_timestamping_eku(tmp_path: Path, eku: str) -> None:
    t = DevTsa(tmp_path, eku=eku)  # type: ignore[arg-type]
    resp, imprint, nonce = issue(t)
    assert code_of(lambda: verify_token(resp, imprint, nonce=nonce, trust_roots=roots(t))) == (
        "tsa_eku_missing"
    )


def test_ess_signing_certificate_must_name_the_signer(tsa: DevTsa, foreign: DevTsa) -> None:
    liar = DevTsa(tsa.directory)  # same keys; its ESS attribute will hash another certificate
    liar.tsa_cert = foreign.tsa_cert
    resp, imprint, nonce = issue(liar)
    assert code_of(lambda: verify_token(resp, imprint, nonce=nonce, trust_roots=roots(tsa))) == (
        "tsa_signer_cert_mismatch"
    )


def test_tsa_name_must_be_the_signer(tsa: DevTsa) -> None:
    imprint = Imprint.of_data(DATA)
    info = tsp.TSTInfo(
        {
            "version": "v1",
            "policy": DEV_POLICY_OID,
            "message_imprint": {"hash_algorithm": {"algorithm": "sha256"},
                                "hashed_message": imprint.hashed_message},
            "serial_number": 12345,
            "gen_time": dt.datetime.now(dt.UTC).replace(microsecond=0),
            "nonce": 9,
            "tsa": asn1_x509.GeneralName(
                name="directory_name",
                value=asn1_x509.Name.build({"common_name": "Somebody Else"}),
            ),
        }
    )  # fmt: skip
    resp = response_for_token(tsa.sign_tst_info(info.dump()))
    assert code_of(lambda: verify_token(resp, imprint, nonce=9, trust_roots=roots(tsa))) == (
        "tsa_name_mismatch"
    )


def test_token_outlives_its_tsa_certificate(tmp_path: Path) -> None:
    """The TSA certificate lived one hour, two days ago; tokens issued then stay valid."""
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=2)
    t = DevTsa(tmp_path, clock=lambda: t0, tsa_valid_for=dt.timedelta(hours=1))
    assert t.tsa_cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    resp, imprint, nonce = issue(t)
    report = verify_token(resp, imprint, nonce=nonce, trust_roots=roots(t))
    assert report.gen_time == t0
    assert report.valid_at_gen_time is True and report.cert_expired_now is True
    assert any(c.name == "expiry" and "stays valid" in c.detail for c in report.checks)
    at_issue = verify_token(resp, imprint, nonce=nonce, trust_roots=roots(t), now=t0)
    assert at_issue.cert_expired_now is False
    later = t0 + dt.timedelta(days=400)
    assert verify_token(
        resp, imprint, nonce=nonce, trust_roots=roots(t), now=later
    ).cert_expired_now
    # A token whose genTime falls after the certificate expired is refused.
    late = t.token_response(
        "sha256", imprint.hashed_message, nonce=nonce, gen_time=t0 + dt.timedelta(hours=2)
    )
    assert code_of(lambda: verify_token(late, imprint, nonce=nonce, trust_roots=roots(t))) == (
        "tsa_chain_untrusted"
    )


def test_every_bit_flip_in_the_signed_parts_is_caught(tsa: DevTsa) -> None:
    """Flip one bit in each byte of the response: the signature, the signed
    attributes and the TSTInfo fail with a specific code; a flip that still
    verifies touches only unsigned fields (the PKIStatus, a version number, the
    case of the signer's issuer name, the signature algorithm's label, which
    OpenSSL ignores too) and leaves every signed byte as it was."""
    resp, imprint, nonce = issue(tsa)
    parsed = parse_response(resp)
    signature = parsed.signer_info["signature"].native
    regions = {
        "tst_info": parsed.tst_info_der,
        "signature": signature,
        "signed_attrs": parsed.signed_attrs_der[4:],
    }
    spans = {name: (resp.find(raw), resp.find(raw) + len(raw)) for name, raw in regions.items()}
    assert all(start > 0 for start, _ in spans.values())
    trust = roots(tsa)
    still_valid = []
    for i in range(len(resp)):
        flipped = bytearray(resp)
        flipped[i] ^= 1 << (i % 8)
        try:
            verify_token(bytes(flipped), imprint, nonce=nonce, trust_roots=trust)
            still_valid.append(i)
        except VerificationError as e:
            assert e.code in ERROR_CODES
            for name, (start, end) in spans.items():
                if start <= i < end:
                    assert e.code in ("tsa_signature_invalid", "tsa_response_malformed"), (name, i)
            continue
        again = parse_response(bytes(flipped))
        assert again.tst_info_der == parsed.tst_info_der
        assert again.signed_attrs_der == parsed.signed_attrs_der
        assert again.signer_info["signature"].native == signature
    status_byte = 8  # SEQUENCE, SEQUENCE { INTEGER 0 }: granted -> grantedWithMods
    assert resp[status_byte] == 0
    assert status_byte in still_valid
    assert not any(start <= i < end for i in still_valid for start, end in spans.values())


def test_signed_attributes_marked_primitive_are_malformed(tsa: DevTsa) -> None:
    """The [0] tag of the signed attributes with its constructed bit cleared:
    refused as malformed (a SET OF is constructed in BER too), not read as a
    token without signed attributes.  OpenSSL accepts this one."""
    resp, imprint, nonce = issue(tsa)
    attrs = parse_response(resp).signed_attrs_der
    at = resp.find(b"\xa0" + attrs[1:])
    assert at > 0
    mutated = resp[:at] + b"\x80" + resp[at + 1 :]
    trust = roots(tsa)
    assert (
        code_of(lambda: verify_token(mutated, imprint, nonce=nonce, trust_roots=trust))
        == "tsa_response_malformed"
    )


# -- only our errors, for any bytes ---------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_our_error(tsa: DevTsa, data: bytes) -> None:
    with pytest.raises(VerificationError) as info:
        verify_token(data, Imprint.of_data(DATA), nonce=None, trust_roots=roots(tsa))
    assert info.value.code in ERROR_CODES


@pytest.fixture(scope="module")
def good(tsa: DevTsa) -> tuple[bytes, Imprint, int]:
    return issue(tsa)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["set", "insert", "delete"]),
            st.integers(min_value=0, max_value=4000),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_responses_raise_only_our_error(
    tsa: DevTsa, good: tuple[bytes, Imprint, int], edits: list[tuple[str, int, int]]
) -> None:
    resp, imprint, nonce = good
    data = bytearray(resp)
    for op, pos, value in edits:
        pos %= len(data) + (op == "insert")
        if op == "set" and data:
            data[pos % len(data)] = value
        elif op == "insert":
            data.insert(pos, value)
        elif data:
            del data[pos % len(data)]
    try:
        report = verify_token(bytes(data), imprint, nonce=nonce, trust_roots=roots(tsa))
    except VerificationError as e:
        assert e.code in ERROR_CODES
    else:  # a mutation that still verifies may only touch unsigned fields
        before, after = parse_response(resp), parse_response(bytes(data))
        assert after.tst_info_der == before.tst_info_der
        assert after.signed_attrs_der == before.signed_attrs_der
        assert after.signer_info["signature"].native == before.signer_info["signature"].native
        assert report.imprint == imprint and report.nonce == nonce


# -- values and configuration ---------------------------------------------------------


def test_imprint_values() -> None:
    digest = bytes(range(32))
    assert Imprint.for_digest(digest) == Imprint("sha256", hashlib.sha256(digest).digest())
    assert Imprint.of_data(b"x", "sha512").hashed_message == hashlib.sha512(b"x").digest()
    for bad in (lambda: Imprint("md5", b"\0" * 16), lambda: Imprint("sha256", b"\0" * 31),
                lambda: Imprint.for_digest(b"\0" * 31), lambda: Imprint.of_data(b"", "sha1")):  # fmt: skip
        with pytest.raises(ConfigError):
            bad()


def test_request_is_der_with_nonce_and_cert_req() -> None:
    imprint = Imprint.for_digest(b"\x01" * 32)
    nonce = new_nonce()
    assert nonce.bit_length() == 64
    req = tsp.TimeStampReq.load(
        build_request(imprint, nonce=nonce, policy_oid="1.2.3"), strict=True
    )
    assert req["nonce"].native == nonce and req["cert_req"].native is True
    assert req["req_policy"].dotted == "1.2.3"
    assert req["message_imprint"]["hashed_message"].native == imprint.hashed_message


def test_dev_tsa_files_and_reload(tsa: DevTsa) -> None:
    for name in ("ca.key", "tsa.key"):
        assert stat.S_IMODE(os.stat(tsa.directory / name).st_mode) == 0o600
    again = DevTsa(tsa.directory)
    assert again.ca_cert == tsa.ca_cert and again.tsa_cert == tsa.tsa_cert
    resp, _, _ = issue(again)
    certs = parse_response(resp).certificates
    assert certs == (tsa.tsa_cert,)


def test_rail_config_is_strict(tsa: DevTsa, tmp_path: Path) -> None:
    bundle = str(tsa.ca_cert_path)
    good = {"url": "http://127.0.0.1:9/", "trust_bundle": bundle}
    rail = Rfc3161Rail.from_config("rfc3161:dev", good)
    assert rail.target == "rfc3161:dev" and rail.timeout == 10.0
    registry = RailRegistry({"rfc3161": {"dev": good}})
    assert isinstance(registry.get("rfc3161:dev"), Rfc3161Rail)
    relative = Rfc3161Rail.from_config(
        "rfc3161:dev",
        {"url": good["url"], "trust_bundle": "ca.pem", "base_dir": str(tsa.directory)},
    )
    assert relative.trust_roots == rail.trust_roots
    (tmp_path / "empty.pem").write_text("")
    verifier_only = Rfc3161Rail.from_config("rfc3161:dev", {"trust_bundle": bundle})
    with pytest.raises(RailError) as info:
        verifier_only.submit(b"\0" * 32, now=0)
    assert info.value.code == "rail_not_configured"
    bad_settings = [
        {"url": "ftp://x", "trust_bundle": bundle},
        {"url": good["url"]},
        {**good, "trust_bundle": str(tmp_path / "missing.pem")},
        {**good, "trust_bundle": str(tmp_path / "empty.pem")},
        {**good, "timeout": 0},
        {**good, "timeout": "soon"},
        {**good, "policy_oid": "not an oid"},
        {**good, "surprise": 1},
    ]
    for settings_ in bad_settings:
        with pytest.raises(ConfigError):
            Rfc3161Rail.from_config("rfc3161:dev", settings_)
    with pytest.raises(ConfigError):
        Rfc3161Rail.from_config("eip155:1", good)


def _anchor_for(t: DevTsa, root: bytes, status: str = "submitted") -> Anchor:
    imprint = Imprint.for_digest(root)
    nonce = new_nonce()
    resp = t.respond(build_request(imprint, nonce=nonce))
    evidence = {"type": "rfc3161", "tsr": base64.b64encode(resp).decode(), "nonce": str(nonce)}
    return Anchor("rfc3161:dev", root, status=status, evidence=evidence)  # type: ignore[arg-type]


def test_rail_verify_is_offline_and_binds_the_root(tsa: DevTsa, foreign: DevTsa) -> None:
    rail = Rfc3161Rail.from_config("rfc3161:dev", {"trust_bundle": str(tsa.ca_cert_path)})
    root = hashlib.sha256(b"checkpoint").digest()
    now = int(dt.datetime.now(dt.UTC).timestamp())
    ctx = VerifyContext(now=now)
    checked = recheck(rail, _anchor_for(tsa, root), ctx)
    assert checked.status == "verified" and checked.observed_at == now
    assert abs((checked.anchor_ts or 0) - now) < 60 and checked.tx_ref
    assert checked.finality.state == "final" and rail.verifier == checked.verifier

    # The imprint comes from anchor.root, never from the evidence.
    moved = Anchor("rfc3161:dev", b"\x07" * 32, status="submitted",
                   evidence=_anchor_for(tsa, root).evidence)  # fmt: skip
    failed = recheck(rail, moved, ctx)
    assert failed.status == "failed" and (failed.error or "").startswith("tsa_imprint_mismatch")
    foreign_anchor = recheck(rail, _anchor_for(foreign, root), ctx)
    assert (foreign_anchor.error or "").startswith("tsa_chain_untrusted")
    for evidence in ({}, {"tsr": "!!", "nonce": "1"}, {"tsr": "AAAA", "nonce": "x"}):
        broken = Anchor("rfc3161:dev", root, status="submitted", evidence=evidence)
        assert rail.verify(broken, ctx).code == "tsa_evidence_malformed"
    # A final status this node gave stays final.
    already = _anchor_for(tsa, root, status="failed")
    assert recheck(rail, already, ctx).status == "failed"


# -- the unsigned parts: lenient, bounded ---------------------------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _with_certificates(resp: bytes, entries: list[bytes]) -> bytes:
    """``resp`` with its certificate set's entries replaced (nothing signed changes)."""
    status, token = ber.read(resp).children
    content_type, explicit = token.children
    fields = explicit.children[0].children
    rebuilt = b"".join(
        _tlv(0xA0, b"".join(entries)) if f.is_(2, 0) else f.raw(resp) for f in fields
    )
    signed_data = _tlv(0x30, rebuilt)
    return _tlv(
        0x30, status.raw(resp) + _tlv(0x30, content_type.raw(resp) + _tlv(0xA0, signed_data))
    )


def test_certificates_in_any_order_unreadable_ones_ignored(tsa: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa)
    signer = tsa.tsa_cert.public_bytes(serialization.Encoding.DER)
    root = tsa.ca_cert.public_bytes(serialization.Encoding.DER)
    junk = b"\x30\x03\x02\x01\x05"  # a SEQUENCE, not a certificate
    for entries in ([root, signer], [signer, root], [junk, signer], [signer, junk, junk]):
        token = _with_certificates(resp, entries)
        report = verify_token(token, imprint, nonce=nonce, trust_roots=roots(tsa))
        assert report.chain[0] == tsa.tsa_cert.subject.rfc4514_string()
        unreadable = entries.count(junk)
        assert parse_response(token).unreadable_certificates == unreadable
        assert ("unreadable (ignored)" in report.checks[0].detail) == bool(unreadable)
    # Only junk: the signer is nowhere.
    only_junk = _with_certificates(resp, [junk])
    assert code_of(
        lambda: verify_token(only_junk, imprint, nonce=nonce, trust_roots=roots(tsa))
    ) == ("tsa_signer_unknown")


def test_certificate_choices_other_than_x509_and_too_many_are_malformed(tsa: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa)
    signer = tsa.tsa_cert.public_bytes(serialization.Encoding.DER)
    attribute_cert = b"\xa1" + signer[1:]  # [1]: an attribute certificate (v1), not X.509
    for entries in ([attribute_cert, signer], [signer] * 33):
        token = _with_certificates(resp, entries)
        assert code_of(
            lambda: verify_token(token, imprint, nonce=nonce, trust_roots=roots(tsa))  # noqa: B023
        ) == ("tsa_response_malformed")
    at_cap = _with_certificates(resp, [signer] * 32)
    verify_token(at_cap, imprint, nonce=nonce, trust_roots=roots(tsa))


def test_status_info_text_is_checked_for_shape_and_read_only_on_rejection(tsa: DevTsa) -> None:
    resp, imprint, nonce = issue(tsa)
    token = parse_response(resp).token_der
    ok_text = _tlv(0x30, _tlv(0x0C, b"Operation Okay"))
    granted = _tlv(0x30, _tlv(0x30, b"\x02\x01\x00" + ok_text) + token)
    verify_token(granted, imprint, nonce=nonce, trust_roots=roots(tsa))
    not_utf8 = _tlv(0x30, _tlv(0x0C, b"\xff\xfe"))  # unread when granted, as OpenSSL
    granted = _tlv(0x30, _tlv(0x30, b"\x02\x01\x00" + not_utf8) + token)
    verify_token(granted, imprint, nonce=nonce, trust_roots=roots(tsa))
    rejected = _tlv(0x30, _tlv(0x30, b"\x02\x01\x02" + not_utf8))
    with pytest.raises(VerificationError) as info:
        verify_token(rejected, imprint, nonce=nonce, trust_roots=roots(tsa))
    assert info.value.code == "tsa_status_rejected"
    assert info.value.details["status_string"] == ["(statusString not readable)"]
    wrong_type = _tlv(0x30, _tlv(0x13, b"printable"))
    for status_info in (b"\x02\x01\x00" + wrong_type, b"\x02\x01\x00\x02\x01\x00", b"\x04\x00"):
        bad = _tlv(0x30, _tlv(0x30, status_info) + token)
        assert code_of(lambda: verify_token(bad, imprint, nonce=nonce, trust_roots=roots(tsa))) == (  # noqa: B023
            "tsa_response_malformed"
        )


def test_signed_attributes_are_capped(tsa: DevTsa) -> None:
    """32 signed attributes are read (then the signature fails: they were added
    after signing); 33 are refused before any work."""
    resp, imprint, nonce = issue(tsa)
    token = parse_response(resp).token_der
    top = ber.read(token)
    signed_data = top.children[1].children[0]
    signer_info = signed_data.children[-1].children[0]
    attrs = next(c for c in signer_info.children if c.is_(2, 0))
    assert len(attrs.children) == 3
    extra = _tlv(0x30, b"\x06\x03\x2a\x03\x04" + _tlv(0x31, b"\x05\x00"))
    for count, code in ((29, "tsa_signature_invalid"), (30, "tsa_response_malformed")):
        new_attrs = _tlv(0xA0, attrs.content(token) + extra * count)
        new_si = b"".join(new_attrs if c is attrs else c.raw(token) for c in signer_info.children)
        fields = [f.raw(token) for f in signed_data.children[:-1]]
        fields.append(_tlv(0x31, _tlv(0x30, new_si)))
        content = _tlv(0xA0, _tlv(0x30, b"".join(fields)))
        bloated = response_for_token(_tlv(0x30, top.children[0].raw(token) + content))
        assert (
            code_of(
                lambda: verify_token(bloated, imprint, nonce=nonce, trust_roots=roots(tsa))  # noqa: B023
            )
            == code
        )
