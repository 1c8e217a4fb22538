"""The federation: nodes that witness, countersign and mirror each other (docs/federation.md).

:mod:`.service` is the message endpoint over parts that each own one
concept (:mod:`.peers`, :mod:`.outbox`, :mod:`.countersigning`,
:mod:`.misbehaviour`, :mod:`.changes`); extensions (:mod:`.collaborative`,
:mod:`.antientropy`, :mod:`.xns`) get only the parts they use, typed by the
narrow interfaces of :mod:`.ports`.  Formats and rules are packages of pure
modules: :mod:`.protocol`, :mod:`.registry`, :mod:`.evidence`.  Every
verdict comes from evidence and this node's own policy, never from what an
incoming object says about itself.
"""
