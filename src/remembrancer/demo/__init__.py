"""``remembrancer demo`` (``make run``): product code, not a test helper.

A local federation of real processes (:mod:`.localfed`, :mod:`.procs`,
:mod:`.anvil`), driven by :mod:`.supervisor` with :mod:`.traffic` and
:mod:`.readings`; the public, insecure demo keys (:mod:`.keys`), record
builders (:mod:`.records`) and the record stream (:mod:`.workload`).  Tests
and benchmarks reuse these parts; nothing here imports
:mod:`remembrancer.testing`.
"""
