"""The pure core: bytes and values in, values or typed errors out.

Invariants: no I/O, no clock reads (time is always a parameter), no imports
from any other ``remembrancer`` layer.  Everything here is deterministic and
safe to call from any thread.
"""
