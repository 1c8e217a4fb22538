"""Remembrancer: verifiable, federated memory.

Layers (dependencies point downwards only): ``cli`` and ``node`` on top, then
``explorer``, ``federation``, ``anchoring``, ``log``, ``storage``, and the
pure ``core`` at the bottom.
"""

__version__ = "0.1.0"
