"""Anchoring: committing checkpoint digests to outside targets, and judging such commitments.

- :mod:`.base`: the :class:`~.base.Rail` protocol, :class:`~.base.Verdict`
  (a rail's judgement of evidence under this node's own policy, never the
  anchor's own ``status``), the rail registry keyed by target scheme;
- one package per rail: :mod:`.rfc3161` (TSAs, and the development TSA),
  :mod:`.evm` (EIP-155 chains), :mod:`.btc` (Bitcoin: OpenTimestamps or
  OP_RETURN); each talks to its service through :mod:`remembrancer.net.http`;
- :mod:`.scheduler`: the cadence scheduler (when to anchor, re-verification,
  back-off).
"""
