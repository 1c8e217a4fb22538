"""The ``rfc3161:<name>`` rail: requests, the HTTP exchange, and re-verification.

:func:`build_request` builds a ``TimeStampReq`` (RFC 3161 section 2.4.1);
:class:`Rfc3161Rail` POSTs it (section 3.4, ``application/timestamp-query``),
keeps the response exactly as received in the anchor's evidence, and
verifies it offline with :func:`~remembrancer.anchoring.rfc3161.verify.verify_token`
against the imprint recomputed from ``anchor.root`` (never from the evidence).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asn1crypto import tsp  # type: ignore[import-untyped]
from cryptography import x509

from remembrancer.anchoring.base import RailError, Verdict, VerifyContext, http_status_error
from remembrancer.anchoring.rfc3161.chain import (
    load_certificate,
    load_trust_bundle,
    verifier_description,
)
from remembrancer.anchoring.rfc3161.model import MAX_RESPONSE_BYTES, Imprint, TokenReport, iso_utc
from remembrancer.anchoring.rfc3161.verify import verify_token
from remembrancer.anchoring.settings import Rfc3161Settings, rail_settings
from remembrancer.core.anchor import Anchor, Finality
from remembrancer.core.errors import ConfigError, VerificationError
from remembrancer.net.http import HttpFailure, error_class, request

QUERY_CONTENT_TYPE = "application/timestamp-query"
REPLY_CONTENT_TYPE = "application/timestamp-reply"


def build_request(imprint: Imprint, *, nonce: int, policy_oid: str | None = None) -> bytes:
    """A DER TimeStampReq (RFC 3161 section 2.4.1), certReq true."""
    req: dict[str, Any] = {
        "version": "v1",
        "message_imprint": {
            "hash_algorithm": {"algorithm": imprint.hash_algorithm},
            "hashed_message": imprint.hashed_message,
        },
        "nonce": nonce,
        "cert_req": True,
    }
    if policy_oid is not None:
        req["req_policy"] = policy_oid
    return bytes(tsp.TimeStampReq(req).dump())


def new_nonce() -> int:
    """A random 64-bit nonce (RFC 3161 section 2.4.1), top bit set for a fixed size."""
    return secrets.randbits(63) | (1 << 63)


@dataclass
class Rfc3161Rail:
    """Anchors digests at one TSA: target ``rfc3161:<tsa name>``.

    Settings (``anchoring.rfc3161.<name>``): :class:`Rfc3161Settings`; ``url``
    is the TSA endpoint (without it the rail only verifies), ``trust_bundle``
    the PEM file of trusted root CAs, ``policy_oid`` is requested and
    required in tokens, ``pinned_cert`` the TSA's signing certificate (tokens
    must be signed by exactly it).
    """

    target: str
    url: str | None  # None: a verifier only (``remembrancer anchor verify --tsa-trust``)
    trust_roots: list[x509.Certificate]
    policy_oid: str | None = None
    pinned_cert: x509.Certificate | None = None
    timeout: float = 10.0
    nonce_source: Callable[[], int] = new_nonce  # seedable for deterministic simulations

    @classmethod
    def from_config(cls, target: str, settings: Rfc3161Settings | Mapping[str, Any]) -> Rfc3161Rail:
        scheme, _, name = target.partition(":")
        if scheme != "rfc3161" or not name:
            raise ConfigError(f"{target} is not an rfc3161:<name> target", code="rail_unknown")
        s = rail_settings(target, settings, Rfc3161Settings)
        trust_roots = load_trust_bundle(s.trust_bundle)
        pinned = load_certificate(s.pinned_cert) if s.pinned_cert is not None else None
        return cls(target, s.url, trust_roots, s.policy_oid, pinned, s.timeout)

    @property
    def verifier(self) -> str:
        return verifier_description(self.trust_roots)

    def _post(self, body: bytes) -> bytes:
        """POST a TimeStampReq; RailError classified for the scheduler's backoff."""
        if self.url is None:
            raise RailError(
                f"{self.target} has no url: it can verify anchors but not make them",
                code="rail_not_configured",
                error_class="validation",
            )
        try:
            reply = request("POST", self.url, content=body,
                            headers={"Content-Type": QUERY_CONTENT_TYPE, "Accept": REPLY_CONTENT_TYPE},
                            timeout=self.timeout, limit=MAX_RESPONSE_BYTES,
                            what=f"{self.target}: the TSA at {self.url}")  # fmt: skip
        except HttpFailure as e:
            if e.kind == "too_large":
                raise RailError(
                    f"{self.target}: the TSA's answer is larger than {MAX_RESPONSE_BYTES} bytes",
                    code="tsa_response_malformed",
                    error_class=error_class(e),
                ) from e
            raise RailError(
                e.message,
                code="tsa_unreachable",
                error_class=error_class(e),
            ) from e
        if not 200 <= reply.status < 300:
            raise http_status_error(reply.status, f"{self.target}: the TSA answered", {
                "auth": "tsa_http_auth", "transient": "tsa_http_error", "validation": "tsa_http_error",
            })  # fmt: skip
        return reply.content

    def submit(self, digest: bytes, *, now: int) -> Anchor:
        """Timestamp ``SHA-256(digest)``; the anchor comes back already ``verified``."""
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise RailError(
                "an anchored digest is 32 bytes",
                code="anchor_root_invalid",
                error_class="validation",
            )
        imprint = Imprint.for_digest(digest)
        nonce = self.nonce_source()
        response = self._post(build_request(imprint, nonce=nonce, policy_oid=self.policy_oid))
        try:
            report = self._verify(response, imprint, nonce, now)
        except VerificationError as e:
            raise RailError(
                f"{self.target}: {e.message}",
                code=e.code,
                error_class="validation",
                details={**e.details, "tsr": base64.b64encode(response).decode("ascii")},
            ) from e
        return Anchor(
            target=self.target,
            root=digest,
            status="verified",
            tx_ref=report.serial_hex,
            anchor_ts=report.gen_time_epoch,
            observed_at=now,
            verifier=report.verifier,
            finality=Finality(0, 0, "final"),
            evidence=self._evidence(response, nonce, report),
        )

    def _verify(self, response: bytes, imprint: Imprint, nonce: int, now: int) -> TokenReport:
        return verify_token(
            response,
            imprint,
            nonce=nonce,
            trust_roots=self.trust_roots,
            policy_oid=self.policy_oid,
            pinned_cert=self.pinned_cert,
            now=now,
        )

    def _evidence(self, response: bytes, nonce: int, report: TokenReport) -> dict[str, Any]:
        return {
            "type": "rfc3161",
            "tsr": base64.b64encode(response).decode("ascii"),
            "nonce": str(nonce),
            "imprint": {
                "hashAlgorithm": report.imprint.hash_algorithm,
                "hashedMessage": report.imprint.hashed_message.hex(),
            },
            "tsaName": report.tsa_name or report.signer_subject,
            "policy": report.policy,
            "serialNumber": report.serial_hex,
            "genTime": iso_utc(report.gen_time),
            "signerSha256": report.signer_sha256,
            "url": self.url,
        }

    def verify(self, anchor: Anchor, ctx: VerifyContext) -> Verdict:
        """Judge the stored TimeStampResp offline against this node's trust bundle.

        The imprint is recomputed from ``anchor.root``; the nonce comes from the
        evidence (it binds the response to our request, not to the root).  The
        verdict's facts are the token's serial number (``tx_ref``) and genTime
        (``anchor_ts``).  The anchor's own status, finality, txRef and anchor
        time are never read."""
        if anchor.target != self.target:
            return Verdict.unchecked(
                "tsa_target_mismatch", f"anchor for {anchor.target}, not {self.target}"
            )
        try:
            evidence = anchor.evidence
            tsr_text = evidence.get("tsr")
            nonce_text = evidence.get("nonce")
            if not isinstance(tsr_text, str) or not isinstance(nonce_text, str):
                raise VerificationError(
                    "the evidence lacks tsr or nonce", code="tsa_evidence_malformed"
                )
            try:
                response = base64.b64decode(tsr_text, validate=True)
                nonce = int(nonce_text, 10)
            except (binascii.Error, ValueError) as e:
                raise VerificationError(
                    f"the evidence is garbled: {e}", code="tsa_evidence_malformed"
                ) from e
            report = self._verify(response, Imprint.for_digest(anchor.root), nonce, ctx.now)
        except (VerificationError, ConfigError) as e:
            return Verdict.failed(e.code, e.message, self.verifier)
        return Verdict.ok(report.verifier, tx_ref=report.serial_hex,
                          anchor_ts=report.gen_time_epoch)  # fmt: skip
