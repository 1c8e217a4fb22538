"""Federation messages (docs/spec/federation.md): the signed envelope, its
content types, and the receiver's acceptance checks.

A message is one JSON object with exactly the members ``type``,
``federation_id``, ``sender``, ``seq``, ``timestamp``, ``content`` and
``signature``.  Its wire form is the RFC 8785 canonical form of that object
(nothing else is accepted), and ``signature`` is the unpadded base64url
Ed25519 signature, by the sender's registered key, of the canonical form of
the object without ``signature`` (the *signing input*).

This package is pure: bytes and values in, values or typed errors out.  It
reads no clock (``now`` is a parameter) and does no I/O.  Replay state and
rate limits sit behind two small interfaces (:class:`~.verify.ReplayState`,
:class:`~.verify.RateLimiter`) so the node can keep them in its store.

:meth:`~.verify.MessageVerifier.verify` makes the checks of the spec's section
"Receiving" in its order, each failure one error with one code:

========================  =========================================  =======
code                      error class                                status
========================  =========================================  =======
``oversize``              :class:`FormatError`                       413
``malformed``             :class:`FormatError`                       400
``federation_mismatch``   :class:`PolicyError`                       421
``unknown_sender``        :class:`PolicyError`                       404
``stale``                 :class:`PolicyError`                       422
``replayed``              :class:`ConflictError`                     409
``signature_invalid``     :class:`VerificationError`                 401
``peer_suspended``        :class:`PolicyError`                       410
``role_not_allowed``      :class:`PolicyError`                       403
``rate_limited``          :class:`PushbackError` (``retry_after``)   429
========================  =========================================  =======

(The HTTP statuses are applied by :mod:`remembrancer.federation.transport`.)

Cost: for small messages the checks around the Ed25519 verification (parse,
canonical-form check, grammar, bookkeeping) take about a third of the time of
the verification itself; ``bench/federation.py`` measures the ratio (goal:
at least 0.7 of PyNaCl's single-core verify rate).  The canonical-form check
has a fast path on msgspec's JSON codec (see
:func:`~.wire.decode_canonical`) and falls back to :mod:`remembrancer.core.jcs`.

The modules: :mod:`.grammar` (the small strict checks), :mod:`.contents`
(the content types), :mod:`.wire` (:class:`~.wire.Message`, the signed
envelope and its canonical form) and :mod:`.verify` (the receiver's checks).
"""
