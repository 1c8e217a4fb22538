"""A pydantic ``ValidationError`` as one ConfigError line:
``<file>: <key path>: expected <what>, found <value>``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from remembrancer.configfile.describe import describe, model_of, strip_annotations
from remembrancer.core.errors import ConfigError


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return repr(text)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def key_path(loc: tuple[Any, ...]) -> str:
    """``witness.logs[0].vkey``; a key with control characters is quoted (one line)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
            continue
        text = str(part)
        if not text.isprintable():
            text = repr(text)
        out += f".{text}" if out else text
    return out


def _field_at(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Any, list[Any]] | None:
    """(type, metadata) of the value at ``loc``, or None if the path leaves the models."""
    tp: Any = model
    meta: list[Any] = []
    for part in loc:
        inner, _ = strip_annotations(tp)
        sub = model_of(inner)
        if sub is not None:
            if not isinstance(part, str) or part not in sub.model_fields:
                return None
            field = sub.model_fields[part]
            tp, meta = field.annotation, list(field.metadata)
            continue
        origin = get_origin(inner)
        if origin in (list, tuple) and isinstance(part, int):
            tp, meta = get_args(inner)[0], []
        elif origin is dict:
            tp, meta = get_args(inner)[1], []
        else:
            return None
    return tp, meta


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    at = _field_at(model, loc)
    sub = model_of(at[0]) if at is not None else None
    return list(sub.model_fields) if sub is not None else []


_GENERIC = {
    "bool_type": "true or false", "int_type": "an integer", "float_type": "a number",
    "string_type": "a string", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "list_type": "a list", "tuple_type": "a list",
    "finite_number": "a finite number",
}  # fmt: skip


def config_error(
    e: ValidationError,
    model: type[BaseModel],
    *,
    source: str | None = None,
    prefix: tuple[Any, ...] = (),
    code: Callable[[tuple[Any, ...], str], str] | None = None,
    sources: Mapping[str, str] | None = None,
) -> ConfigError:
    """The first problem of ``e`` as one ConfigError line:
    ``<source>: <key path>: expected <what>, found <value>``.

    ``prefix`` is the key path of ``model`` inside its file; ``sources`` maps a
    top-level key to what set it instead of the file (an environment
    variable), and ``code(path, kind)`` chooses the error code (``kind`` is
    ``unknown_key`` or ``invalid``; default ``config_key_unknown`` /
    ``config_invalid``)."""
    err = e.errors(include_url=False)[0]
    raw_loc = tuple(err["loc"])
    is_key = bool(raw_loc) and raw_loc[-1] == "[key]"
    loc = raw_loc[:-1] if is_key else raw_loc
    kind = err["type"]
    ctx = err.get("ctx") or {}
    found = ctx.get("found")
    if found is None:
        found = _show(err["input"])
    reason = "invalid"
    if kind in ("extra_forbidden", "invalid_key"):
        reason = "unknown_key"
        known = _known_keys(model, loc[:-1])
        what = "unknown key" + (f" (expected one of: {', '.join(known)})" if known else "")
        if kind == "invalid_key":
            what = f"a key must be a string, found {found}"
    elif kind == "missing":
        at = _field_at(model, loc)
        what = "is required" + (f" (expected {describe(*at)})" if at is not None else "")
    else:
        if kind == "config_value":
            expected = str(ctx["expected"])
        elif kind in ("value_error", "assertion_error"):
            expected = str(ctx.get("error", err["msg"]))
        else:
            at = None if is_key else _field_at(model, loc)
            expected = describe(*at) if at is not None else _GENERIC.get(kind, err["msg"])
        what = f"expected {expected}, found {found}"
    path = (*prefix, *loc)
    where = source
    if sources and loc and isinstance(loc[0], str) and loc[0] in sources:
        where, path = sources[loc[0]], ()
    shown = key_path(path)
    message = ": ".join(p for p in (where, shown, what) if p)
    chosen = str(ctx["code"]) if "code" in ctx else (code or _default_code)(path, reason)
    details: dict[str, Any] = {"key": shown, "reason": reason}
    if where:
        details["file" if where == source else "source"] = where
    return ConfigError(message, code=chosen, details=details)


def _default_code(path: tuple[Any, ...], reason: str) -> str:
    return "config_key_unknown" if reason == "unknown_key" else "config_invalid"
