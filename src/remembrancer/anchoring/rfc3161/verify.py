""":func:`verify_token`: the pure RFC 3161 verifier, every step in its order.

It takes the bytes of a response or token, the imprint the caller expects,
the nonce it sent and the trust roots it pins, and returns a
:class:`~remembrancer.anchoring.rfc3161.model.TokenReport` or raises
VerificationError with one of the ``tsa_*`` codes of
:data:`~remembrancer.anchoring.rfc3161.model.ERROR_CODES`, and nothing
else, for any input bytes.  No I/O; no clock unless given none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from remembrancer.anchoring.rfc3161.chain import (
    check_chain,
    check_eku,
    check_key_usage,
    check_tsa_name,
    general_name_text,
    verifier_description,
)
from remembrancer.anchoring.rfc3161.cms import check_ess, signer_certificate, verify_cms_signature
from remembrancer.anchoring.rfc3161.model import Check, Imprint, TokenReport, iso_utc, refuse
from remembrancer.anchoring.rfc3161.parse import parse_response
from remembrancer.core.errors import VerificationError


def _as_datetime(now: int | float | dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(now, dt.datetime):
        return now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(now, dt.UTC)


def verify_token(
    response_der: bytes,
    imprint: Imprint,
    *,
    nonce: int | None,
    trust_roots: Sequence[x509.Certificate],
    policy_oid: str | None = None,
    pinned_cert: x509.Certificate | None = None,
    now: int | float | dt.datetime | None = None,
) -> TokenReport:
    """Verify an RFC 3161 TimeStampResp (or bare TimeStampToken) offline.

    ``imprint`` is what the token must timestamp (its hash algorithm and
    value, stated explicitly: the rail's anchors imprint ``SHA-256(digest)``,
    general use imprints the data).  ``nonce`` is the request's nonce, or
    None to skip that check (the report says so).  ``trust_roots`` is the
    trust bundle: its self-issued certificates are the trust anchors, any
    other certificate in it (an intermediate, the TSA's own certificate for
    tokens that do not embed it) only helps build the chain, which is
    evaluated at the token's genTime.  ``now`` (epoch seconds or datetime,
    default the clock) only feeds ``cert_expired_now``.  Raises
    VerificationError with a ``tsa_*`` code (see :data:`ERROR_CODES`), and
    nothing else.
    """
    if not isinstance(imprint, Imprint):
        refuse("tsa_imprint_mismatch", "no valid imprint to compare with")
    checked_at = _as_datetime(now)
    stage = ["tsa_response_malformed"]  # the code for an unexpected error at each step
    try:
        return _verify_token(
            response_der,
            imprint,
            nonce=nonce,
            trust_roots=trust_roots,
            policy_oid=policy_oid,
            pinned_cert=pinned_cert,
            checked_at=checked_at,
            stage=stage,
        )
    except (VerificationError, MemoryError):
        raise
    except Exception as e:  # e.g. a corrupted key or curve in an embedded certificate
        refuse(stage[0], f"cannot check the token: {type(e).__name__}: {e}")


def _verify_token(
    response_der: bytes,
    imprint: Imprint,
    *,
    nonce: int | None,
    trust_roots: Sequence[x509.Certificate],
    policy_oid: str | None,
    pinned_cert: x509.Certificate | None,
    checked_at: dt.datetime,
    stage: list[str],
) -> TokenReport:
    parsed = parse_response(response_der)
    checks: list[Check] = []
    status_name = "granted" if parsed.status == 0 else "granted_with_mods"
    unreadable = (
        f", {parsed.unreadable_certificates} unreadable (ignored)"
        if parsed.unreadable_certificates
        else ""
    )
    checks.append(
        Check(
            "parse",
            f"{'TimeStampResp' if parsed.form == 'response' else 'TimeStampToken'}"
            f", status {status_name}, {len(parsed.certificates)} certificate(s) embedded"
            f"{unreadable}; TSTInfo and signed attributes DER-framed, verified as received",
        )
    )
    try:
        info = parsed.tst_info
        gen_time: dt.datetime = info["gen_time"].native
        serial: int = info["serial_number"].native
        policy: str = info["policy"].dotted
        token_alg: str = info["message_imprint"]["hash_algorithm"]["algorithm"].native
        token_hash: bytes = info["message_imprint"]["hashed_message"].native
        token_nonce: int | None = info["nonce"].native
        tsa_field = info["tsa"]
        accuracy = info["accuracy"]
        accuracy_seconds = (
            None
            if not accuracy.contents
            else float(accuracy["seconds"].native or 0)
            + (accuracy["millis"].native or 0) / 1e3
            + (accuracy["micros"].native or 0) / 1e6
        )
    except VerificationError:
        raise
    except Exception as e:
        refuse("tsa_response_malformed", f"cannot read the TSTInfo: {type(e).__name__}: {e}")
    if not isinstance(gen_time, dt.datetime) or gen_time.tzinfo is None:
        refuse("tsa_response_malformed", "genTime is not a UTC time")

    stage[0] = "tsa_signer_unknown"
    signer, source = signer_certificate(
        parsed.signer_info, parsed.certificates, pinned_cert, trust_roots
    )
    stage[0] = "tsa_signature_invalid"
    algorithm = verify_cms_signature(parsed, signer)
    checks.append(
        Check(
            "signature",
            f"CMS {algorithm} by {signer.subject.rfc4514_string()} (certificate from the "
            f"{source}); messageDigest matches the TSTInfo",
        )
    )
    stage[0] = "tsa_cert_not_pinned"
    signer_der = signer.public_bytes(serialization.Encoding.DER)
    if pinned_cert is not None:
        if pinned_cert.public_bytes(serialization.Encoding.DER) != signer_der:
            refuse(
                "tsa_cert_not_pinned",
                f"signed by {signer.subject.rfc4514_string()}, not by the pinned certificate",
            )
        checks.append(Check("pin", "signed by exactly the pinned TSA certificate"))
    stage[0] = "tsa_eku_missing"
    check_eku(signer)
    stage[0] = "tsa_key_usage_invalid"
    key_usage = check_key_usage(signer)
    checks.append(Check("eku", f"critical extendedKeyUsage: id-kp-timeStamping only; {key_usage}"))
    stage[0] = "tsa_chain_untrusted"
    chain = check_chain(signer, parsed.certificates, trust_roots, gen_time)
    expired = [c for c in chain if c.not_valid_after_utc < checked_at]
    checks.append(
        Check(
            "chain",
            " -> ".join(c.subject.rfc4514_string() for c in chain)
            + f" (trust bundle); valid at genTime {iso_utc(gen_time)}",
        )
    )
    if expired:
        checks.append(
            Check(
                "expiry",
                f"{expired[0].subject.rfc4514_string()} expired "
                f"{iso_utc(expired[0].not_valid_after_utc)}, after genTime: the token stays valid",
            )
        )
    stage[0] = "tsa_signer_cert_mismatch"
    checks.append(Check("ess", check_ess(parsed, chain)))
    stage[0] = "tsa_name_mismatch"
    tsa_name = None
    if tsa_field.contents:
        tsa_name = general_name_text(tsa_field)
        checks.append(Check("tsa-name", check_tsa_name(tsa_field, signer)))
    stage[0] = "tsa_imprint_mismatch"
    # (hash parameters other than absent or NULL fail the TSTInfo's parse: malformed)
    if token_alg != imprint.hash_algorithm or token_hash != imprint.hashed_message:
        refuse(
            "tsa_imprint_mismatch",
            f"the token timestamps {token_alg}:{token_hash.hex()}, "
            f"expected {imprint.hash_algorithm}:{imprint.hashed_message.hex()}",
        )
    checks.append(Check("imprint", f"{token_alg} {token_hash.hex()} matches"))
    if nonce is not None:
        if token_nonce != nonce:
            refuse(
                "tsa_nonce_mismatch",
                "the token's nonce is not the request's",
                expected=str(nonce),
                found=None if token_nonce is None else str(token_nonce),
            )
        checks.append(Check("nonce", f"{nonce} matches"))
    else:
        checks.append(Check("nonce", "not checked (no nonce given)"))
    if policy_oid is not None:
        if policy != policy_oid:
            refuse("tsa_policy_mismatch", f"issued under {policy}, expected {policy_oid}")
        checks.append(Check("policy", f"{policy} matches"))
    else:
        checks.append(Check("policy", f"{policy} (any policy accepted)"))
    anchor_cert = chain[-1]
    return TokenReport(
        form=parsed.form,
        status=status_name,
        gen_time=gen_time.astimezone(dt.UTC),
        serial_number=serial,
        policy=policy,
        imprint=imprint,
        nonce=token_nonce,
        nonce_checked=nonce is not None,
        tsa_name=tsa_name,
        accuracy_seconds=accuracy_seconds,
        signer_subject=signer.subject.rfc4514_string(),
        signer_issuer=signer.issuer.rfc4514_string(),
        signer_serial=signer.serial_number,
        signer_sha256=hashlib.sha256(signer_der).hexdigest(),
        signer_not_before=signer.not_valid_before_utc,
        signer_not_after=signer.not_valid_after_utc,
        chain=tuple(c.subject.rfc4514_string() for c in chain),
        trust_anchor_sha256=hashlib.sha256(
            anchor_cert.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
        valid_at_gen_time=True,
        cert_expired_now=bool(expired),
        checked_at=checked_at,
        verifier=verifier_description(trust_roots),
        checks=tuple(checks),
    )
