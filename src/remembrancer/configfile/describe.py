"""What a settings field must be and what its default is, in words: the
``expected`` of an error line and the columns of the docs tables."""

from __future__ import annotations

import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from remembrancer.configfile.fields import DefaultText, Expect, Placeholder


def strip_annotations(tp: Any) -> tuple[Any, list[Any]]:
    """(type without Annotated or Optional, the Annotated metadata found)."""
    meta: list[Any] = []
    while True:
        if get_origin(tp) is Annotated:
            args = get_args(tp)
            tp = args[0]
            for a in args[1:]:
                meta.extend(a.metadata if isinstance(a, FieldInfo) else [a])
            continue
        if get_origin(tp) in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp, meta


def _number(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def _bounds(meta: list[Any]) -> str:
    lo: Any = None
    hi: Any = None
    lo_op = hi_op = ""
    for m in meta:  # annotated_types' Ge, Gt, Le and Lt, as pydantic's Field() makes them
        if getattr(m, "ge", None) is not None:
            lo, lo_op = m.ge, ">="
        elif getattr(m, "gt", None) is not None:
            lo, lo_op = m.gt, ">"
        if getattr(m, "le", None) is not None:
            hi, hi_op = m.le, "<="
        elif getattr(m, "lt", None) is not None:
            hi, hi_op = m.lt, "<"
    if lo_op == ">=" and hi_op == "<=":
        return f" from {_number(lo)} to {_number(hi)}"
    parts = [f"{op} {_number(v)}" for op, v in ((lo_op, lo), (hi_op, hi)) if op]
    return " " + " and ".join(parts) if parts else ""


def describe(tp: Any, metadata: list[Any] | None = None) -> str:
    """What a value of type ``tp`` (with its Field metadata) must be, in words."""
    inner, meta = strip_annotations(tp)
    meta = [*meta, *(metadata or [])]
    for m in reversed(meta):  # the outermost annotation wins
        if isinstance(m, Expect):
            return m.text
    if inner is bool:
        return "true or false"
    if inner is int:
        return "an integer" + _bounds(meta)
    if inner is float:
        return "a number" + _bounds(meta)
    if inner is str:
        return "a string"
    origin = get_origin(inner)
    if origin is Literal:
        names = [repr(a) for a in get_args(inner)]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if origin in (list, tuple):
        return "a list"
    if origin is dict or (isinstance(inner, type) and issubclass(inner, BaseModel)):
        return "a mapping"
    return "a value"


def default_text(field: FieldInfo) -> str:
    """The default of a field as the documentation writes it."""
    for m in reversed([*strip_annotations(field.annotation)[1], *field.metadata]):
        if isinstance(m, DefaultText):
            return m.text
    if field.is_required():
        return "(required)"
    value = field.get_default(call_default_factory=True)
    return _yaml_scalar(value)


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    if isinstance(value, BaseModel):
        return "{}"
    return str(value)


def model_of(tp: Any) -> type[BaseModel] | None:
    inner, _ = strip_annotations(tp)
    return inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None


@dataclass(frozen=True, slots=True)
class Row:
    """One documented setting: its key path, what it must be, its default."""

    key: str
    expected: str
    default: str


def rows(model: type[BaseModel], prefix: str = "") -> Iterator[Row]:
    """Every setting of ``model`` in declaration order, sections flattened
    (``limits.max_body_bytes``), list items as ``key[].field``, named
    mappings as ``key.<placeholder>`` (the rails: documented on their own)."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        inner, meta = strip_annotations(field.annotation)
        meta = [*field.metadata, *meta]
        sub = model_of(inner)
        if sub is not None:
            yield from rows(sub, f"{key}.")
            continue
        origin = get_origin(inner)
        if origin in (list, tuple):
            item = model_of(get_args(inner)[0])
            yield Row(key, describe(field.annotation, field.metadata), default_text(field))
            if item is not None:
                yield from rows(item, f"{key}[].")
            continue
        if origin is dict:
            placeholder = next((m.text for m in meta if isinstance(m, Placeholder)), "<name>")
            yield Row(f"{key}.{placeholder}", describe(field.annotation, field.metadata),
                      default_text(field))  # fmt: skip
            continue
        yield Row(key, describe(field.annotation, field.metadata), default_text(field))
