"""Fast construction of frozen, slotted dataclasses made once per record.

A frozen dataclass's ``__init__`` stores each field through
``object.__setattr__`` (the class's own ``__setattr__`` refuses), a lookup
and a call per field: 1.75 µs for the 14 fields of a record on the reference
machine.  :func:`positional_maker` returns a constructor that writes the
slots through their descriptors instead (0.8 µs), for the hot paths that
make one object per admitted record from values they have already checked
(the record parser, the sequencer's receipts).  The object is the same: same
class, same fields, still frozen for everyone else; nothing is validated or
defaulted, so the maker takes every field, in declaration order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def positional_maker(cls: type[T]) -> Callable[..., T]:
    """A constructor of ``cls`` (a frozen dataclass with ``slots=True`` and no
    ``__post_init__``) taking every field positionally, in declaration order."""
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__, which the maker would skip")
    names = [f.name for f in dataclasses.fields(cls)]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    o = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_s{i}"] = getattr(cls, name).__set__  # the slot's member descriptor
        lines.append(f"    _s{i}(o, {name})")
    lines.append("    return o")
    exec("\n".join(lines), env)  # one straight-line function, as dataclasses makes __init__
    make: Callable[..., T] = env["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    return make
