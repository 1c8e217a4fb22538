"""Schema policy and payload validation (admission rules 3 and 4).

Payload schemas are JSON Schema Draft 2020-12 documents bundled with the
package (``core/schemas/<name>@<version>.json``), each with an ``$id`` of
``urn:remembrancer:schema:<name>@<version>``.  They are compiled once with
``jsonschema-rs`` in offline mode, with a registry holding only the bundled
documents, so a ``$ref`` can never reach the network.  Formats (``uuid``,
``date-time``, ``uri``) are asserted.

Pure: the registry is built from documents; reading the bundled ones from
the package is :mod:`remembrancer.log.schemas`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from remembrancer.core.errors import ConfigError, FormatError, PolicyError

SCHEMA_ID_PREFIX = "urn:remembrancer:schema:"
_PATTERN_RE = re.compile(
    r"^(?P<name>[a-z][a-z0-9]*(?:\.[a-z][a-z0-9]*)*)"
    r"(?:@(?P<major>0|[1-9][0-9]*)\.(?P<minor>0|[1-9][0-9]*)\.(?P<patch>0|[1-9][0-9]*|x))?$"
)


@dataclass(frozen=True, slots=True)
class SchemaPattern:
    """One ``schema_policy.allow`` entry: ``name``, ``name@1.0.x`` or ``name@1.0.3``."""

    name: str
    major: int | None = None
    minor: int | None = None
    patch: int | None = None  # None with major set means the "x" wildcard

    @classmethod
    def parse(cls, text: str) -> SchemaPattern:
        m = _PATTERN_RE.match(text) if isinstance(text, str) else None
        if m is None:
            raise FormatError(
                f"schema pattern {text!r} is not name, name@M.m.p or name@M.m.x",
                code="schema_pattern_invalid",
            )
        if m["major"] is None:
            return cls(m["name"])
        patch = None if m["patch"] == "x" else int(m["patch"])
        return cls(m["name"], int(m["major"]), int(m["minor"]), patch)

    def matches(self, schema: str) -> bool:
        name, _, version = schema.partition("@")
        if name != self.name:
            return False
        if self.major is None:
            return True
        parts = version.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            return False
        major, minor, patch = (int(p) for p in parts)
        if (major, minor) != (self.major, self.minor):
            return False
        return self.patch is None or patch == self.patch

    def __str__(self) -> str:
        if self.major is None:
            return self.name
        patch = "x" if self.patch is None else str(self.patch)
        return f"{self.name}@{self.major}.{self.minor}.{patch}"


class SchemaRegistry:
    """Compiled payload validators by exact ``name@version``."""

    def __init__(self, documents: Mapping[str, Mapping[str, Any]]) -> None:
        resources_ = [(SCHEMA_ID_PREFIX + key, dict(doc)) for key, doc in documents.items()]
        self._validators: dict[str, Any] = {}
        try:
            registry = jsonschema_rs.Registry(resources_)
            for key, doc in documents.items():
                if doc.get("$id") != SCHEMA_ID_PREFIX + key:
                    raise ConfigError(
                        f"schema {key} has $id {doc.get('$id')!r}", code="schema_id_mismatch"
                    )
                self._validators[key] = jsonschema_rs.Draft202012Validator(
                    dict(doc), validate_formats=True, registry=registry, offline=True
                )
        except ValueError as e:  # an unresolvable $ref: nothing is ever fetched
            raise ConfigError(
                f"schema cannot be compiled offline: {e}", code="schema_invalid"
            ) from e
        self._documents = {k: dict(v) for k, v in documents.items()}

    def names(self) -> list[str]:
        return sorted(self._validators)

    def document(self, schema: str) -> dict[str, Any]:
        return self._documents[schema]

    def __contains__(self, schema: object) -> bool:
        return schema in self._validators

    def validate(self, schema: str, payload: Any) -> None:
        """Raise PolicyError ``schema_unknown`` or FormatError ``payload_invalid``."""
        validator = self._validators.get(schema)
        if validator is None:
            raise PolicyError(f"no bundled schema {schema}", code="schema_unknown")
        if validator.is_valid(payload):
            return
        errors = [
            {"path": "/" + "/".join(str(p) for p in e.instance_path), "message": e.message}
            for e, _ in zip(validator.iter_errors(payload), range(5), strict=False)
        ]
        first = errors[0] if errors else {"path": "/", "message": "invalid"}
        raise FormatError(
            f"payload does not match {schema} at {first['path']}: {first['message']}",
            code="payload_invalid",
            details={"errors": errors},
        )


def allowed(patterns: Iterable[SchemaPattern], schema: str) -> bool:
    return any(p.matches(schema) for p in patterns)
