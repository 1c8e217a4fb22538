"""Node configuration (``node.yaml``), environment overrides, and ``init``.

node.yaml is parsed into :class:`NodeFile`, a strict typed model
(docs/adr/0011-typed-configuration.md): nested sections, each default in one
place, unknown keys and wrong types refused with one line naming the file,
the key path, what was expected and what was found (``remembrancer serve``
exits 2 on it, never with a traceback).  Booleans are YAML ``true`` and
``false`` only; every number has bounds (docs/node.md lists them, and a test
compares that table with these models).  The rails' settings are
:class:`~remembrancer.anchoring.settings.AnchoringSettings`, the peers'
:mod:`remembrancer.federation.settings`.

Relative paths in the file are relative to the file's own directory, so a
node directory can be moved as a whole.  Environment variables override the
file and are validated like the keys they replace (an error names the
variable): ``REMEMBRANCER_LISTEN``, ``REMEMBRANCER_STORAGE``,
``REMEMBRANCER_ORIGIN_PREFIX``, ``REMEMBRANCER_LOG_FORMAT``, and
``REMEMBRANCER_ADMIN_TOKEN`` (the token itself, instead of a token file; at
least 16 characters).  An empty variable counts as unset.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from remembrancer.anchoring.settings import AnchoringSettings, rail_error_code
from remembrancer.configfile import (
    ConfigPath,
    DefaultText,
    Expect,
    NullIsEmpty,
    NullIsEmptyList,
    Settings,
    config_error,
    invalid,
    read_yaml,
)
from remembrancer.core.errors import ConfigError, FormatError, RemembrancerError
from remembrancer.core.jcs import loads_strict
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import is_valid_key_name, parse_vkey
from remembrancer.federation.settings import (
    BudgetSettings,
    FederationSettings,
    WitnessingSettings,
    WitnessPeerSettings,
)
from remembrancer.node.keyfile import write_key_file

DATA_FORMAT = 1
DATA_MARKER = "remembrancer-data.json"
ENV_OVERRIDES = {
    "REMEMBRANCER_LISTEN": "listen",
    "REMEMBRANCER_STORAGE": "storage",
    "REMEMBRANCER_ORIGIN_PREFIX": "origin_prefix",
    "REMEMBRANCER_LOG_FORMAT": "log_format",
}
ENV_ADMIN_TOKEN = "REMEMBRANCER_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 16
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")
_ORIGIN_PREFIX = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~-]+)*$")
_STORE_SCHEMES = ("sqlite", "postgresql", "postgres", "memory")
_TOKEN = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces
_ORIGIN_PREFIX_TEXT = "a host name with an optional port and path, e.g. node.example.org"


# --- field types ------------------------------------------------------------------------


def _version(value: Any) -> int:
    if type(value) is not int or value != 1:
        raise invalid("1 (the only version)", code="config_version_unsupported")
    return value


def _origin_prefix(value: Any) -> str:
    if type(value) is not str or not _ORIGIN_PREFIX.match(value):
        raise invalid(_ORIGIN_PREFIX_TEXT, code="origin_prefix_invalid")
    return value


def _listen(value: Any) -> str:
    m = _HOSTPORT.match(value) if type(value) is str else None
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise invalid("HOST:PORT (port 1 to 65535)", code="listen_invalid")
    return str(value)


def _store_url(value: Any) -> str:
    expected = "a store URL: sqlite:///<path>, postgresql://... or memory://"
    if type(value) is not str:
        raise invalid(expected)
    scheme, sep, _ = value.partition("://")
    if not sep or scheme.lower() not in _STORE_SCHEMES or not value.isprintable():
        # never the whole URL: a PostgreSQL URL may hold a password
        raise invalid(expected, repr(scheme + sep) if sep else "a string without '://'")
    return value


def _key_name(value: Any) -> str:
    if not is_valid_key_name(value) or len(value) > 255:
        raise invalid("a signed-note key name (no '+', spaces or control characters)")
    return value


def _vkey(value: Any) -> str:
    expected = "a note vkey (<origin>+<key id>+<key>)"
    if type(value) is not str:
        raise invalid(expected, code="vkey_invalid")
    try:
        parse_vkey(value)
    except RemembrancerError as e:
        raise invalid(f"a note vkey ({e.message})", code="vkey_invalid") from None
    except (ValueError, UnicodeError):
        raise invalid(expected, code="vkey_invalid") from None
    return value


Vkey = Annotated[str, Expect("a note vkey (<origin>+<key id>+<key>)"), BeforeValidator(_vkey)]


# --- the sections -----------------------------------------------------------------------


class Limits(Settings):
    """``limits``: what one node accepts, per request, client and namespace."""

    max_body_bytes: Annotated[int, Field(ge=1024, le=64 << 20)] = 256 * 1024
    client_rate: Annotated[float, Field(gt=0)] = 2000.0  # requests per second per client address
    client_burst: Annotated[int, Field(ge=1)] = 4000
    namespace_rate: Annotated[float, Field(gt=0)] = 50_000.0  # records per second per namespace
    namespace_burst: Annotated[int, Field(ge=1)] = 100_000
    max_pending: Annotated[int, Field(ge=1, le=1_000_000)] = 20_000  # waiting per namespace
    # Records per commit.  2,048 rather than 1,024: each commit rewrites the key
    # indexes' pages it touches, so a larger group commit writes fewer bytes and
    # makes fewer write calls per record (3.6 -> 2.6 kB, 1.75 -> 1.28 calls per
    # record integrating 30,000 signed records into SQLite).  Only a backlog fills
    # a batch: under a light load batches stay small and latency is unchanged.
    batch_size: Annotated[int, Field(ge=1, le=65_536)] = 2048
    batch_wait_ms: Annotated[float, Field(ge=0, le=10_000)] = 0.0
    # Signatures of batches of 32 or more checked in two worker processes (1.08-1.27x
    # the threads' admission rate in bench/records.py); false: in two threads.
    verify_processes: bool = True
    request_timeout_s: Annotated[float, Field(ge=0.1, le=3600)] = 30.0


class ServerSettings(Settings):
    """``server``: the HTTP server's connection limits (node/connguard.py, uvicorn)."""

    header_timeout_s: Annotated[float, Field(ge=0.1, le=3600)] = 10.0
    keepalive_timeout_s: Annotated[int, Field(ge=1, le=3600)] = 5
    max_header_bytes: Annotated[int, Field(ge=1024, le=1 << 20)] = 64 * 1024
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] = 512
    max_half_open: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    max_half_open_per_client: Annotated[int, Field(ge=1, le=1_000_000)] = 32


class ReplicationSettings(Settings):
    """``replication``: what anti-entropy may spend on one fetch and one sync."""

    memory_budget_bytes: Annotated[int, Field(ge=49 << 20, le=1 << 40)] = 64 << 20
    fetch_deadline_s: Annotated[float, Field(ge=0.5, le=3600)] = 15.0
    sync_deadline_s: Annotated[float, Field(ge=1, le=86_400)] = 120.0


class AdminSettings(Settings):
    """``admin``: the bearer token of ``/v1/admin/*``."""

    token_file: ConfigPath | None = None


class WitnessLogSettings(Settings):
    """``witness.logs[]``: a log this node cosigns (docs/anti-entropy.md)."""

    vkey: Vkey | None = None
    vkeys: Annotated[
        tuple[Vkey, ...], Expect("a non-empty list of note vkeys of the log"), Field(strict=False)
    ] | None = None  # fmt: skip
    origin: Annotated[str, Expect("the log's origin"), DefaultText("the vkeys' name")] | None = None
    mirror: bool = False  # keep the log's entries as tiles too

    @model_validator(mode="after")
    def _one_origin(self) -> WitnessLogSettings:
        if (self.vkey is None) == (self.vkeys is None) or self.vkeys == ():
            raise invalid("either vkey or a non-empty vkeys", code="vkey_invalid")
        names = {parse_vkey(v).name for v in self.keys}
        origin = self.origin or next(iter(names))
        if names != {origin}:
            raise invalid(
                f"vkeys named after the log's origin {origin}",
                ", ".join(sorted(names)),
                code="vkey_invalid",
            )
        return self

    @property
    def keys(self) -> tuple[str, ...]:
        return self.vkeys if self.vkeys is not None else (self.vkey or "",)

    @property
    def log_origin(self) -> str:
        return self.origin or parse_vkey(self.keys[0]).name


class WitnessSettings(Settings):
    """``witness``: this node as a C2SP witness of other logs."""

    name: Annotated[
        str, Expect("a signed-note key name (no '+', spaces or control characters)"),
        DefaultText("<origin_prefix>/witness"), BeforeValidator(_key_name),
    ] | None = None  # fmt: skip
    logs: Annotated[
        tuple[WitnessLogSettings, ...], Expect("a list of logs {vkey or vkeys, origin, mirror}"),
        NullIsEmptyList, Field(strict=False),
    ] = ()  # fmt: skip


class SchedulerSettings(Settings):
    """``scheduler``: the anchoring scheduler's loop."""

    enabled: bool = True
    tick_seconds: Annotated[float, Field(ge=0.05, le=3600)] = 1.0
    reverify_seconds: Annotated[float, Field(ge=0.1, le=86_400)] = 10.0


def _advertise_url(value: Any) -> str:
    expected = "the http(s)://HOST:PORT URL the other processes reach this one at"
    if type(value) is not str:
        raise invalid(expected)
    m = re.match(r"^https?://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?/?$", value)
    if m is None:
        raise invalid(expected, repr(value[:100]))
    return value.rstrip("/")


class HaSettings(Settings):
    """``ha``: several processes of one node over one PostgreSQL store
    (docs/operations.md, "Several processes over one PostgreSQL").  Off by
    default: one process, no lease, no fencing."""

    enabled: bool = False
    lease_seconds: Annotated[float, Field(ge=0.5, le=600)] = 10.0
    renew_seconds: Annotated[
        float, Field(ge=0.05, le=300), DefaultText("lease_seconds / 4")
    ] | None = None  # fmt: skip
    advertise_url: Annotated[
        str, Expect("the http(s)://HOST:PORT URL the other processes reach this one at"),
        BeforeValidator(_advertise_url),
    ] | None = None  # fmt: skip

    @model_validator(mode="after")
    def _consistent(self) -> HaSettings:
        if self.enabled and self.advertise_url is None:
            raise invalid("an advertise_url when enabled is true", "none")
        if self.renew_seconds is not None and self.renew_seconds * 2 > self.lease_seconds:
            raise invalid(
                "renew_seconds at most half of lease_seconds",
                f"{self.renew_seconds:g} for a lease of {self.lease_seconds:g} s",
            )
        return self

    @property
    def renew_every(self) -> float:
        return self.renew_seconds if self.renew_seconds is not None else self.lease_seconds / 4


class NodeFile(Settings):
    """The whole of node.yaml (with the environment overrides applied)."""

    version: Annotated[int, Expect("1"), BeforeValidator(_version)] = 1
    origin_prefix: Annotated[str, Expect(_ORIGIN_PREFIX_TEXT), BeforeValidator(_origin_prefix)]
    listen: Annotated[str, Expect("HOST:PORT (port 1 to 65535)"), BeforeValidator(_listen)] = (
        "127.0.0.1:8080"
    )
    data_dir: Annotated[ConfigPath, Expect("a directory path")] = Field(
        default=Path("data"), validate_default=True
    )
    node_key: ConfigPath = Field(default=Path("keys/node.key"), validate_default=True)
    namespaces: ConfigPath = Field(default=Path("namespaces.yaml"), validate_default=True)
    storage: Annotated[
        str, Expect("a store URL: sqlite:///<path>, postgresql://... or memory://"),
        BeforeValidator(_store_url),
    ] = "sqlite:///remembrancer.db"  # fmt: skip
    log_format: Literal["text", "json"] = "text"
    admin: Annotated[AdminSettings, NullIsEmpty] = Field(default_factory=AdminSettings)
    witness: Annotated[WitnessSettings, NullIsEmpty] = Field(default_factory=WitnessSettings)
    limits: Annotated[Limits, NullIsEmpty] = Field(default_factory=Limits)
    server: Annotated[ServerSettings, NullIsEmpty] = Field(default_factory=ServerSettings)
    replication: Annotated[ReplicationSettings, NullIsEmpty] = Field(
        default_factory=ReplicationSettings
    )
    scheduler: Annotated[SchedulerSettings, NullIsEmpty] = Field(default_factory=SchedulerSettings)
    anchoring: Annotated[AnchoringSettings, NullIsEmpty] = Field(default_factory=AnchoringSettings)
    witnessing: Annotated[WitnessingSettings, NullIsEmpty] = Field(
        default_factory=WitnessingSettings
    )
    federation: FederationSettings | None = None
    ha: Annotated[HaSettings, NullIsEmpty] = Field(default_factory=HaSettings)

    @model_validator(mode="after")
    def _ha_needs_postgres(self) -> NodeFile:
        if not self.ha.enabled:
            return self
        if self.storage.partition("://")[0].lower() not in ("postgresql", "postgres"):
            raise invalid(
                "storage on PostgreSQL when ha.enabled is true (the processes share it)",
                repr(self.storage.partition("://")[0] + "://"),
                code="ha_needs_postgres",
            )
        if self.federation is not None:
            raise invalid(
                "no federation section when ha.enabled is true (not supported yet)",
                "a federation section",
                code="ha_unsupported",
            )
        return self


# --- the resolved configuration ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WitnessedLog:
    origin: str
    vkeys: tuple[str, ...]
    mirror: bool = False  # keep the log's entries as tiles too (docs/anti-entropy.md)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """node.yaml validated (:attr:`file`), with what follows from it resolved."""

    path: Path
    file: NodeFile
    listen_host: str
    listen_port: int
    storage: str  # a sqlite path made absolute (relative to data_dir)
    admin_token: str | None
    witness_name: str
    witnessed: tuple[WitnessedLog, ...]

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def origin_prefix(self) -> str:
        return self.file.origin_prefix

    @property
    def data_dir(self) -> Path:
        return self.file.data_dir

    @property
    def node_key(self) -> Path:
        return self.file.node_key

    @property
    def namespaces(self) -> Path:
        return self.file.namespaces

    @property
    def admin_token_file(self) -> Path | None:
        return self.file.admin.token_file

    @property
    def limits(self) -> Limits:
        return self.file.limits

    @property
    def server(self) -> ServerSettings:
        return self.file.server

    @property
    def replication(self) -> ReplicationSettings:
        return self.file.replication

    @property
    def log_format(self) -> str:
        return self.file.log_format

    @property
    def anchoring(self) -> AnchoringSettings:
        return self.file.anchoring

    @property
    def witness_peers(self) -> tuple[WitnessPeerSettings, ...]:
        return self.file.witnessing.peers

    @property
    def witness_quorum(self) -> int | None:
        return self.file.witnessing.quorum

    @property
    def federation_file(self) -> Path | None:
        return self.file.federation.file if self.file.federation else None

    @property
    def federation_did(self) -> str | None:
        return self.file.federation.did if self.file.federation else None

    @property
    def heartbeat_seconds(self) -> float:
        fed = self.file.federation
        return fed.heartbeat_seconds if fed else _default(FederationSettings, "heartbeat_seconds")

    @property
    def antientropy_seconds(self) -> float:
        fed = self.file.federation
        return (
            fed.antientropy_seconds if fed else _default(FederationSettings, "antientropy_seconds")
        )

    @property
    def ha(self) -> HaSettings:
        return self.file.ha

    @property
    def federation_budget(self) -> BudgetSettings:
        fed = self.file.federation
        return fed.budget if fed else BudgetSettings()

    @property
    def scheduler_enabled(self) -> bool:
        return self.file.scheduler.enabled

    @property
    def scheduler_tick_s(self) -> float:
        return self.file.scheduler.tick_seconds

    @property
    def scheduler_reverify_s(self) -> float:
        return self.file.scheduler.reverify_seconds


def _default(model: type[Settings], name: str) -> Any:
    return model.model_fields[name].get_default(call_default_factory=True)


def parse_listen(value: str, path: Path, key: str = "listen") -> tuple[str, int]:
    m = _HOSTPORT.match(value) if isinstance(value, str) else None
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise ConfigError(
            f"{path}: {key}: expected HOST:PORT (port 1 to 65535), found {value!r}",
            code="listen_invalid",
            details={"file": str(path), "key": key},
        )
    return m.group(1).strip("[]"), int(m.group(2))


def parse_node_file(
    doc: Any,
    *,
    source: str,
    base: Path,
    env: Mapping[str, str] | None = None,
    options: Mapping[str, tuple[str, str]] | None = None,
) -> NodeFile:
    """Validate a node.yaml document, ``env``'s overrides and then ``options``'
    (key -> (command-line option, value)) applied first."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        kind = "a list" if isinstance(doc, list) else repr(doc)
        raise ConfigError(
            f"{source}: expected a mapping of settings, found {kind}",
            code="config_invalid",
            details={"file": source},
        )
    doc = dict(doc)
    sources: dict[str, str] = {}
    for var, key in ENV_OVERRIDES.items():
        value = (env or {}).get(var)
        if value:
            doc[key] = value
            sources[key] = var
    for key, (option, value) in (options or {}).items():
        doc[key] = value
        sources[key] = option
    try:
        return NodeFile.model_validate(doc, context={"base": base})
    except ValidationError as e:
        raise config_error(
            e, NodeFile, source=source, code=rail_error_code, sources=sources
        ) from None


def load_node_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    listen: str | None = None,
) -> NodeConfig:
    """Read, validate and resolve ``node.yaml``; environment overrides apply,
    and ``listen`` (``serve --listen``) over them."""
    env = os.environ if env is None else env
    p = Path(path).resolve()
    options = {"listen": ("--listen", listen)} if listen else None
    file = parse_node_file(read_yaml(p), source=str(p), base=p.parent, env=env, options=options)
    host, port = parse_listen(file.listen, p)
    storage = file.storage
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        storage = "sqlite:///" + str((file.data_dir / storage[len("sqlite:///") :]).resolve())
    return NodeConfig(
        path=p,
        file=file,
        listen_host=host,
        listen_port=port,
        storage=storage,
        admin_token=_admin_token(file, p, env),
        witness_name=file.witness.name or f"{file.origin_prefix}/witness",
        witnessed=tuple(WitnessedLog(w.log_origin, w.keys, w.mirror) for w in file.witness.logs),
    )


def _admin_token(file: NodeFile, p: Path, env: Mapping[str, str]) -> str | None:
    expected = f"a token of at least {MIN_TOKEN_CHARS} printable characters, no spaces"
    token = env.get(ENV_ADMIN_TOKEN)
    if token:
        if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
            raise ConfigError(
                f"{ENV_ADMIN_TOKEN}: expected {expected}, found {len(token)} characters"
                " (not shown)",
                code="config_invalid",
                details={"source": ENV_ADMIN_TOKEN},
            )
        return token
    token_file = file.admin.token_file
    if token_file is None:
        return None
    try:
        token = token_file.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ConfigError(
            f"{p}: admin.token_file: cannot read {token_file}: {why}",
            code="config_invalid",
            details={"file": str(p), "key": "admin.token_file"},
        ) from e
    if len(token) < MIN_TOKEN_CHARS or not _TOKEN.match(token):
        raise ConfigError(
            f"{p}: admin.token_file: expected {token_file} to hold {expected}, found"
            f" {len(token)} characters (not shown)",
            code="config_invalid",
            details={"file": str(p), "key": "admin.token_file"},
        )
    return token


def check_data_dir(data_dir: Path) -> None:
    """Create the data directory's format marker, or refuse a newer format."""
    data_dir.mkdir(parents=True, exist_ok=True)
    marker = data_dir / DATA_MARKER
    if marker.exists():
        try:
            found = int(loads_strict(marker.read_bytes(), max_bytes=4096)["format"])
        except (OSError, ValueError, KeyError, TypeError, FormatError) as e:
            raise ConfigError(
                f"{marker}: unreadable data format marker", code="data_dir_invalid"
            ) from e
        if found > DATA_FORMAT:
            raise ConfigError(
                f"{data_dir} was written by a newer Remembrancer (data format {found}, this is"
                f" {DATA_FORMAT}); upgrade before starting",
                code="data_format_too_new",
            )
    else:
        marker.write_text(json.dumps({"format": DATA_FORMAT}) + "\n")


def write_initial_config(
    directory: Path, *, demo_keys: Mapping[str, SigningKey] | None = None,
    origin_prefix: str | None = None,
    listen: str = "127.0.0.1:8080",
) -> dict[str, str]:  # fmt: skip
    """``remembrancer init``: a working node directory; returns what it wrote.

    ``demo_keys`` (alias -> key) are written under ``keys/demo/``, marked as demo keys.
    """
    default_name = re.sub(r"[^A-Za-z0-9.-]+", "-", directory.resolve().name).strip(".-")
    prefix = origin_prefix or f"{default_name or 'node'}.remembrancer.local"
    try:  # the values must make a node.yaml that loads: check them before writing anything
        NodeFile.model_validate(
            {"origin_prefix": prefix, "listen": listen}, context={"base": directory}
        )
    except ValidationError as e:
        raise config_error(
            e, NodeFile, sources={"origin_prefix": "--origin-prefix", "listen": "--listen"}
        ) from None
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "node.yaml"
    if config.exists():
        raise ConfigError(
            f"{config} already exists; refusing to overwrite it", code="config_exists"
        )
    keys = directory / "keys"
    keys.mkdir(exist_ok=True)
    node_key = SigningKey.generate()
    write_key_file(keys / "node.key", node_key)
    token = secrets.token_urlsafe(32)
    token_file = keys / "admin.token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    example = resources.files("remembrancer.examples").joinpath("namespaces.yaml").read_text()
    (directory / "namespaces.yaml").write_text(example)
    config.write_text(
        "# Remembrancer node configuration (see docs/node.md).\n"
        "version: 1\n"
        f"origin_prefix: {prefix}\n"
        f"listen: {json.dumps(listen)}\n"
        "data_dir: data\n"
        "node_key: keys/node.key\n"
        "namespaces: namespaces.yaml\n"
        "storage: sqlite:///remembrancer.db     # relative to data_dir; or postgresql://...\n"
        "admin:\n"
        "  token_file: keys/admin.token\n"
        "witness:\n"
        f"  name: {prefix}/witness\n"
        "  logs: []          # logs this node cosigns: - vkey: <origin>+<id>+<key>\n"
        "log_format: text\n"
    )
    out = {"config": str(config), "node_key": str(keys / "node.key"), "node_did": node_key.did,
           "admin_token_file": str(token_file)}  # fmt: skip
    if demo_keys:
        demo = keys / "demo"
        demo.mkdir(exist_ok=True)
        (demo / "README").write_text(
            "DEMO KEYS: these are the PUBLIC, well-known demo keys that the example namespaces\n"
            "accept. Anyone can derive them. Use them only to try Remembrancer out.\n"
        )
        for alias, key in demo_keys.items():
            write_key_file(demo / f"{alias.split(':')[-1]}.key", key)
        out["demo_keys"] = str(demo)
    return out
