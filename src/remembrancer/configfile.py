"""Configuration files: strict YAML in, strict typed settings, one readable line out.

Every configuration file the node reads (``node.yaml``, the namespaces file,
``federation.yaml``) goes through :func:`read_yaml`: at most 1 MiB, no
duplicate keys, no alias bomb (at most :data:`MAX_YAML_NODES` nodes once
aliases are expanded), and YAML 1.2 booleans only: ``true`` and ``false``
are booleans, ``yes``/``no``/``on``/``off`` are strings (so a boolean
setting refuses them, as it refuses ``'no'``; docs/adr/0011).

Typed settings derive from :class:`Settings`: pydantic models in strict mode
that refuse unknown keys and wrong types (no ``"3"`` for 3, no ``1`` for
``true``, no ``"no"`` for ``false``), hold every default once and are
frozen.  :func:`config_error` turns the first problem of a
``ValidationError`` into one :class:`~remembrancer.core.errors.ConfigError`
line naming the file, the key path, what was expected and what was found::

    node.yaml: scheduler.tick_seconds: expected a number from 0.05 to 3600, found 'fast'

The same descriptions (:func:`describe`, :func:`default_text`) write the
settings tables of docs/node.md and docs/anchoring.md, and a test compares
those tables with the models, so the documentation cannot drift.

This module sits below every layer but the core (like the core it never
touches the network; unlike it, it reads files): each layer that reads a
configuration file imports it.
"""

from __future__ import annotations

import re
import types
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, ValidationInfo
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from remembrancer.core.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20
MAX_YAML_NODES = 1_000_000  # a 1 MiB file without aliases cannot reach it
_BOOL_TAG = "tag:yaml.org,2002:bool"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# --- strict YAML --------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads YAML 1.2 booleans only."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # unhashable: SafeLoader's own error names it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {key!r} (first at line {first + 1})",
                        key_node.start_mark,
                    )  # fmt: skip
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded (a cycle counts as too many)."""
    sizes: dict[int, int] = {}
    too_many = MAX_YAML_NODES + 1

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = too_many  # in progress: meeting it again is a cycle
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                total = too_many
                break
        sizes[key] = total
        return total

    return size(root)


def parse_yaml(data: bytes, source: str) -> Any:
    """The document in ``data`` (see the module docstring); ConfigError naming ``source``."""
    loader: _StrictLoader | None = None
    try:
        loader = _StrictLoader(data)
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise ConfigError(
                f"{source}: more than {MAX_YAML_NODES} YAML nodes once aliases are expanded",
                code="config_too_large",
                details={"file": source},
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(str(e.problem or e.context or "syntax error").split())
        raise ConfigError(
            f"{source}: not valid YAML{where}: {what}",
            code="config_yaml_invalid",
            details={"file": source, **({"line": mark.line + 1} if mark else {})},
        ) from None
    except yaml.YAMLError as e:
        what = " ".join(str(e).split())
        raise ConfigError(
            f"{source}: not valid YAML: {what}", code="config_yaml_invalid",
            details={"file": source},
        ) from None  # fmt: skip
    except RecursionError:
        raise ConfigError(
            f"{source}: not valid YAML: nested too deeply",
            code="config_yaml_invalid",
            details={"file": source},
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: str | Path, *, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Read and parse a configuration file of at most ``max_bytes``."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(
            f"{p}: cannot read: {e.strerror or e}",
            code="config_unreadable",
            details={"file": str(p)},
        ) from e
    if len(data) > max_bytes:
        raise ConfigError(
            f"{p}: larger than {max_bytes} bytes",
            code="config_too_large",
            details={"file": str(p)},
        )
    return parse_yaml(data, str(p))


# --- typed settings -------------------------------------------------------------------


class Settings(BaseModel):
    """Base of every settings model: strict types, unknown keys refused, frozen,
    finite numbers only."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


@dataclass(frozen=True, slots=True)
class Expect:
    """What a value must be, in words (errors and the documentation tables)."""

    text: str


@dataclass(frozen=True, slots=True)
class DefaultText:
    """The default, in words, where it is not a literal (computed, or long)."""

    text: str


@dataclass(frozen=True, slots=True)
class Placeholder:
    """The name standing for a mapping's keys in the documentation (``<name>``)."""

    text: str


def invalid(
    expected: str, found: str | None = None, *, code: str | None = None
) -> PydanticCustomError:
    """A validator's refusal; ``found`` replaces the input in the message (for
    inputs that may hold secrets, such as URLs with credentials), ``code``
    the error code :func:`config_error` would choose."""
    ctx: dict[str, Any] = {"expected": expected}
    if found is not None:
        ctx["found"] = found
    if code is not None:
        ctx["code"] = code
    return PydanticCustomError("config_value", "{expected}", ctx)


def _null_is_empty_mapping(value: Any) -> Any:
    return {} if value is None else value


def _null_is_empty_list(value: Any) -> Any:
    return [] if value is None else value


NullIsEmpty = BeforeValidator(_null_is_empty_mapping)
"""A section written ``key:`` (YAML null) is the empty section."""
NullIsEmptyList = BeforeValidator(_null_is_empty_list)
"""A list written ``key:`` (YAML null) is the empty list."""


def redact_url(url: str) -> str:
    """``scheme://host[:port]``: URLs may carry credentials or API keys."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "(not a URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}" if parts.scheme else "(not a URL)"


def _http_url(value: Any) -> str:
    expected = "an http(s) URL"
    if type(value) is not str:
        raise invalid(expected)
    try:
        parts = urllib.parse.urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise invalid(expected, redact_url(value)) from None
    if (
        parts.scheme not in ("http", "https")
        or not host
        or any(c.isspace() or ord(c) < 0x20 for c in value)
    ):
        raise invalid(expected, repr(redact_url(value)))
    return value


HttpUrl = Annotated[str, Expect("an http(s) URL"), BeforeValidator(_http_url)]
"""An ``http://`` or ``https://`` URL with a host; errors show only scheme, host and port."""


def _path(value: Any, info: ValidationInfo) -> Path:
    if not isinstance(value, str | Path) or not str(value).strip() or not str(value).isprintable():
        raise invalid("a file path")
    base = None if info.field_name == "base_dir" else info.data.get("base_dir")
    if base is None:
        base = (info.context or {}).get("base")
    try:
        path = Path(value).expanduser()
        return (Path(base) / path).resolve() if base is not None else path
    except (RuntimeError, OSError, ValueError) as e:  # ~nobody/, a symlink loop
        raise invalid(f"a usable file path ({e})") from None


ConfigPath = Annotated[Path, Expect("a file path"), BeforeValidator(_path)]
"""A path; relative ones resolve against the validation context's ``base``
(node.yaml's directory), or a ``base_dir`` field validated before it."""


# --- describing fields (errors and docs) -----------------------------------------------


def _strip(tp: Any) -> tuple[Any, list[Any]]:
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
    inner, meta = _strip(tp)
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
    for m in reversed([*_strip(field.annotation)[1], *field.metadata]):
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


def _model_of(tp: Any) -> type[BaseModel] | None:
    inner, _ = _strip(tp)
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
        inner, meta = _strip(field.annotation)
        meta = [*field.metadata, *meta]
        sub = _model_of(inner)
        if sub is not None:
            yield from rows(sub, f"{key}.")
            continue
        origin = get_origin(inner)
        if origin in (list, tuple):
            item = _model_of(get_args(inner)[0])
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


# --- one line per problem ---------------------------------------------------------------


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
        inner, _ = _strip(tp)
        sub = _model_of(inner)
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
    sub = _model_of(at[0]) if at is not None else None
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


__all__ = [
    "MAX_CONFIG_BYTES",
    "ConfigPath",
    "DefaultText",
    "Expect",
    "HttpUrl",
    "NullIsEmpty",
    "NullIsEmptyList",
    "Placeholder",
    "Row",
    "Settings",
    "config_error",
    "default_text",
    "describe",
    "invalid",
    "key_path",
    "parse_yaml",
    "read_yaml",
    "redact_url",
    "rows",
]
