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

This package sits below every layer but the core (like the core it never
touches the network; unlike it, it reads files): each layer that reads a
configuration file imports it.  Modules: :mod:`.strict_yaml` (reading),
:mod:`.fields` (the base model, markers, shared field types),
:mod:`.describe` (fields in words: errors and docs), :mod:`.errors` (one
line per problem).
"""

from __future__ import annotations

from remembrancer.configfile.describe import Row, default_text, describe, rows
from remembrancer.configfile.errors import config_error, key_path
from remembrancer.configfile.fields import (
    ConfigPath,
    DefaultText,
    Expect,
    HttpUrl,
    NullIsEmpty,
    NullIsEmptyList,
    Placeholder,
    Settings,
    invalid,
    redact_url,
)
from remembrancer.configfile.strict_yaml import (
    MAX_CONFIG_BYTES,
    MAX_YAML_NODES,
    parse_yaml,
    read_yaml,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_YAML_NODES",
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
