"""The base of every settings model, the markers that describe its fields,
and the field types shared by the models (URLs, paths)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationInfo
from pydantic_core import PydanticCustomError


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
