"""The RFC 3161 rail: anchor a digest with a Time-Stamp Authority (DESIGN.md 3.8).

Two layers, shaped like python-tuf's trust core and its I/O shell:

* :func:`~.verify.verify_token` is pure (no I/O, no clock unless given one): it takes
  the bytes of a ``TimeStampResp`` (RFC 3161 section 2.4.2) or of a bare
  ``TimeStampToken``, the message imprint the caller expects, the nonce it
  sent and the trust roots it pins, and returns a :class:`TokenReport` or
  raises :class:`~remembrancer.core.errors.VerificationError` with one of the
  ``tsa_*`` codes in :data:`~.model.ERROR_CODES`.  It raises nothing else, for any
  input bytes.
* :class:`~.rail.Rfc3161Rail` does the HTTP (RFC 3161 section 3.4, ``POST`` of
  ``application/timestamp-query``), keeps the response exactly as received in
  the anchor's evidence, and re-verifies it offline.

What is anchored: for a 32-byte ``digest`` the rail asks for a timestamp over
``SHA-256(digest)``; that is the message imprint ``Imprint.for_digest``
builds, and what :meth:`Rfc3161Rail.verify` recomputes from ``anchor.root``
(never from the evidence).

Verification, in this order, each step with its own error code (the checks
and their semantics are those of ``openssl ts -verify``, with the chain judged
at genTime; docs/adr/0010-rfc3161-acceptance.md lists where we differ):

1. parse -> ``tsa_response_malformed``: size cap, one BER element and no
   trailing byte, bounded nesting (:mod:`remembrancer.anchoring.rfc3161.ber`).  BER is
   accepted where no signature reaches (indefinite lengths, the certificate
   SET OF in any order, as Bouncy Castle, FreeTSA, DigiCert and others send
   it); the encapsulated TSTInfo and the signed attributes must be framed as
   DER (RFC 5652 section 5.3) and are kept exactly as received; one
   SignerInfo, named by issuerAndSerialNumber;
2. ``PKIStatus`` granted or grantedWithMods -> ``tsa_status_rejected``;
3. the signer certificate (from the pin, the trust bundle, then the token) ->
   ``tsa_signer_unknown``;
4. messageDigest over the eContent octets as received, and the signature over
   the signed attributes as received (the SET tag in place of [0]), hashed with
   the SignerInfo's digestAlgorithm: RSA PKCS #1 v1.5 or ECDSA (RFC 5652
   sections 5.4, 5.6) -> ``tsa_signature_invalid``
   (``tsa_algorithm_unsupported`` for SHA-1, RSASSA-PSS, EdDSA);
5. the pin -> ``tsa_cert_not_pinned``; the extendedKeyUsage critical and
   exactly id-kp-timeStamping (RFC 3161 section 2.3) -> ``tsa_eku_missing``;
   a keyUsage of digitalSignature and/or nonRepudiation only ->
   ``tsa_key_usage_invalid``;
6. the chain to a root of the trust bundle **as of genTime** ->
   ``tsa_chain_untrusted``;
7. the ESS signingCertificate and/or signingCertificateV2 attribute: its
   first certificate ID names the signer, any other a CA of the chain (RFC
   3161 section 2.4.1, RFC 5816) -> ``tsa_signer_cert_mismatch``;
8. the TSTInfo's ``tsa`` name, if present, is the signer's subject or one of
   its subjectAltNames -> ``tsa_name_mismatch``;
9. imprint (algorithm and value; hash parameters other than absent or NULL
   fail step 1), nonce, policy ->
   ``tsa_imprint_mismatch``, ``tsa_nonce_mismatch``, ``tsa_policy_mismatch``.

Why genTime: a timestamp token proves that the data existed at genTime; it
stays valid after the TSA certificate expires (RFC 3161 section 4, and the
practice of long-term signature formats).  The report says the chain was valid
at genTime and whether a certificate in it has expired since
(``cert_expired_now``).

Who decides.  asn1crypto reads the structure, ``cryptography`` verifies the
signature and validates the path; no other library's verdict is consulted
(rfc3161-client's strict-DER parser refused the tokens real TSAs send, see the
ADR).  Step 6 is ``cryptography``'s RFC 5280 path validation with a fixed
time (``PolicyBuilder().time(genTime)``) and an extension policy written for
TSAs rather than the web PKI: the EKU is checked in step 5; an issuing
certificate must carry basicConstraints cA=TRUE and, if it has keyUsage,
keyCertSign; an unknown critical extension is refused.  The trust anchors
are the self-issued certificates of the bundle (as OpenSSL without partial
chains); the bundle's other certificates and the token's only help build the
path.  The web PKI's algorithm rules still apply (no SHA-1 certificate
signatures, RSA keys of 2048 bits or more, no DSA).  Revocation is not
checked: no CRL or OCSP is fetched (offline verification).

The modules, in the order of the checks: :mod:`.ber` (the bounded BER
reader), :mod:`.model` (imprints, reports, error codes), :mod:`.parse`
(step 1), :mod:`.cms` (steps 3, 4, 7), :mod:`.chain` (steps 5, 6, 8 and
trust bundles), :mod:`.verify` (:func:`~.verify.verify_token`, every step
in order), :mod:`.rail` (requests and :class:`~.rail.Rfc3161Rail`), and
:mod:`.devtsa`, a development TSA that issues real tokens.
"""
