"""Node configuration (``node.yaml``), environment overrides, and ``init``.

Relative paths in the file are relative to the file's own directory, so a
node directory can be moved as a whole.  Environment variables override the
file: ``REMEMBRANCER_LISTEN``, ``REMEMBRANCER_STORAGE``,
``REMEMBRANCER_ORIGIN_PREFIX``, ``REMEMBRANCER_LOG_FORMAT``,
``REMEMBRANCER_ADMIN_TOKEN`` (the token itself, instead of a token file).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from remembrancer.core.errors import ConfigError, FormatError
from remembrancer.core.jcs import loads_strict
from remembrancer.core.keys import SigningKey
from remembrancer.core.note import parse_vkey
from remembrancer.node.keyfile import write_key_file

DATA_FORMAT = 1
DATA_MARKER = "remembrancer-data.json"
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")
_ORIGIN_PREFIX = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~-]+)*$")
_TOP = {"version", "origin_prefix", "listen", "data_dir", "node_key", "namespaces", "storage",
        "admin", "witness", "limits", "log_format", "anchoring", "scheduler", "witnessing", "federation"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int = 256 * 1024
    client_rate: float = 2000.0  # requests per second per client address
    client_burst: int = 4000
    namespace_rate: float = 50_000.0  # records per second per namespace
    namespace_burst: int = 100_000
    max_pending: int = 20_000  # records waiting per namespace before 503
    batch_size: int = 1024
    batch_wait_ms: float = 0.0
    request_timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class WitnessedLog:
    origin: str
    vkeys: tuple[str, ...]
    mirror: bool = False  # keep the log's entries as tiles too (docs/anti-entropy.md)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    path: Path
    origin_prefix: str
    listen_host: str
    listen_port: int
    data_dir: Path
    node_key: Path
    namespaces: Path
    storage: str
    admin_token: str | None
    witness_name: str
    witnessed: tuple[WitnessedLog, ...] = ()
    limits: Limits = field(default_factory=Limits)
    log_format: str = "text"
    anchoring: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    witness_peers: tuple[Mapping[str, Any], ...] = ()
    federation_file: Path | None = None
    federation_did: str | None = None
    heartbeat_seconds: float = 2.0
    antientropy_seconds: float = 5.0
    witness_quorum: int | None = None
    scheduler_enabled: bool = True
    scheduler_tick_s: float = 1.0
    scheduler_reverify_s: float = 10.0

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


def _err(path: Path, key: str, message: str, code: str = "config_invalid") -> ConfigError:
    return ConfigError(
        f"{path}: {key}: {message}", code=code, details={"file": str(path), "key": key}
    )


def parse_listen(value: str, path: Path, key: str = "listen") -> tuple[str, int]:
    m = _HOSTPORT.match(value) if isinstance(value, str) else None
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise _err(path, key, f"{value!r} is not HOST:PORT", "listen_invalid")
    return m.group(1).strip("[]"), int(m.group(2))


def load_node_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> NodeConfig:
    """Read, validate and resolve ``node.yaml``; environment overrides apply."""
    env = os.environ if env is None else env
    p = Path(path).resolve()
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}", code="config_unreadable") from e
    if len(raw) > 1 << 20:
        raise ConfigError(f"{p}: larger than 1 MiB", code="config_too_large")
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}", code="config_yaml_invalid") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{p}: must be a mapping", code="config_invalid")
    unknown = sorted(k for k in doc if k not in _TOP)
    if unknown:
        raise _err(p, unknown[0], "unknown key", "config_key_unknown")
    if doc.get("version", 1) != 1:
        raise _err(p, "version", "only version 1 is supported", "config_version_unsupported")
    base = p.parent

    def path_of(key: str, default: str) -> Path:
        value = doc.get(key, default)
        if not isinstance(value, str) or not value:
            raise _err(p, key, "must be a path")
        return (base / value).resolve()

    origin_prefix = env.get("REMEMBRANCER_ORIGIN_PREFIX") or doc.get("origin_prefix")
    if not isinstance(origin_prefix, str) or not _ORIGIN_PREFIX.match(origin_prefix):
        raise _err(p, "origin_prefix", "must be a host name with an optional path, e.g. node.example.org",
                   "origin_prefix_invalid")  # fmt: skip
    host, port = parse_listen(
        env.get("REMEMBRANCER_LISTEN") or doc.get("listen", "127.0.0.1:8080"), p
    )
    data_dir = path_of("data_dir", "data")
    storage = env.get("REMEMBRANCER_STORAGE") or doc.get("storage") or "sqlite:///remembrancer.db"
    if not isinstance(storage, str):
        raise _err(p, "storage", "must be a store URL")
    if storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        storage = "sqlite:///" + str((data_dir / storage[len("sqlite:///") :]).resolve())

    admin = doc.get("admin") or {}
    if not isinstance(admin, dict) or any(k not in ("token_file",) for k in admin):
        raise _err(p, "admin", "holds only token_file")
    token = env.get("REMEMBRANCER_ADMIN_TOKEN")
    if not token and admin.get("token_file"):
        token_path = (base / admin["token_file"]).resolve()
        try:
            token = token_path.read_text().strip()
        except OSError as e:
            raise _err(p, "admin.token_file", f"cannot read {token_path}: {e.strerror}") from e
        if len(token) < 16:
            raise _err(p, "admin.token_file", "the token must be at least 16 characters")

    witness = doc.get("witness") or {}
    if not isinstance(witness, dict) or any(k not in ("name", "logs") for k in witness):
        raise _err(p, "witness", "holds only name and logs")
    witness_name = witness.get("name") or f"{origin_prefix}/witness"
    witnessed = []
    for i, entry in enumerate(witness.get("logs") or []):
        if not isinstance(entry, dict) or not isinstance(
            entry.get("vkeys", entry.get("vkey")), list | str
        ):
            raise _err(p, f"witness.logs[{i}]", "needs vkey (or vkeys) and optionally origin")
        vkeys = entry.get("vkeys") or [entry.get("vkey")]
        names = set()
        for v in vkeys:
            try:
                names.add(parse_vkey(v).name)
            except Exception as e:
                raise _err(p, f"witness.logs[{i}]", f"bad vkey: {e}", "vkey_invalid") from e
        origin = entry.get("origin") or next(iter(names))
        if names != {origin}:
            raise _err(p, f"witness.logs[{i}]", "every vkey's name must be the log's origin")
        unknown_keys = sorted(set(entry) - {"vkey", "vkeys", "origin", "mirror"})
        if unknown_keys:
            raise _err(
                p, f"witness.logs[{i}].{unknown_keys[0]}", "unknown key", "config_key_unknown"
            )
        mirror = entry.get("mirror", False)
        if not isinstance(mirror, bool):
            raise _err(p, f"witness.logs[{i}].mirror", "must be true or false")
        witnessed.append(WitnessedLog(origin, tuple(vkeys), mirror))

    limits_raw = doc.get("limits") or {}
    defaults = Limits()
    if not isinstance(limits_raw, dict):
        raise _err(p, "limits", "must be a mapping")
    values: dict[str, Any] = {}
    for key, value in limits_raw.items():
        if not hasattr(defaults, key):
            raise _err(p, f"limits.{key}", "unknown limit", "config_key_unknown")
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise _err(p, f"limits.{key}", "must be a number >= 0")
        values[key] = type(getattr(defaults, key))(value)
    log_format = env.get("REMEMBRANCER_LOG_FORMAT") or doc.get("log_format", "text")
    if log_format not in ("text", "json"):
        raise _err(p, "log_format", "must be text or json")
    anchoring = _parse_anchoring(doc.get("anchoring"), p, base)
    witnessing = doc.get("witnessing") or {}
    if not isinstance(witnessing, dict) or any(k not in ("peers", "quorum") for k in witnessing):
        raise _err(p, "witnessing", "holds only peers (url, vkey) and quorum")
    peers = witnessing.get("peers") or []
    if not isinstance(peers, list) or not all(
        isinstance(x, dict) and {"url", "vkey"} <= set(x) for x in peers
    ):
        raise _err(p, "witnessing.peers", "must be a list of {url, vkey}")
    fed = doc.get("federation") or {}
    if not isinstance(fed, dict) or any(
        k not in ("file", "did", "heartbeat_seconds", "antientropy_seconds") for k in fed
    ):
        raise _err(
            p, "federation", "holds only file, did, heartbeat_seconds and antientropy_seconds"
        )
    antientropy = fed.get("antientropy_seconds", 5.0)
    if (
        isinstance(antientropy, bool)
        or not isinstance(antientropy, int | float)
        or not (0.1 <= antientropy <= 3600)
    ):
        raise _err(p, "federation.antientropy_seconds", "must be a number of seconds, 0.1 to 3600")
    if fed and not isinstance(fed.get("file"), str):
        raise _err(p, "federation.file", "must name the federation.yaml file")
    wq = witnessing.get("quorum")
    if wq is not None and (type(wq) is not int or not 0 <= wq <= len(peers)):
        raise _err(p, "witnessing.quorum", "must be an integer between 0 and the number of peers")
    sched = doc.get("scheduler") or {}
    if not isinstance(sched, dict) or any(
        k not in ("enabled", "tick_seconds", "reverify_seconds") for k in sched
    ):
        raise _err(p, "scheduler", "holds only enabled, tick_seconds and reverify_seconds")
    return NodeConfig(
        path=p,
        anchoring=anchoring,
        witness_peers=tuple(peers),
        federation_file=(base / fed["file"]).resolve() if fed else None,
        federation_did=fed.get("did"),
        heartbeat_seconds=float(fed.get("heartbeat_seconds", 2.0)),
        antientropy_seconds=float(antientropy),
        witness_quorum=wq,
        scheduler_enabled=bool(sched.get("enabled", True)),
        scheduler_tick_s=float(sched.get("tick_seconds", 1.0)),
        scheduler_reverify_s=float(sched.get("reverify_seconds", 10.0)),
        origin_prefix=origin_prefix,
        listen_host=host,
        listen_port=port,
        data_dir=data_dir,
        node_key=path_of("node_key", "keys/node.key"),
        namespaces=path_of("namespaces", "namespaces.yaml"),
        storage=storage,
        admin_token=token,
        witness_name=witness_name,
        witnessed=tuple(witnessed),
        limits=Limits(**values) if values else defaults,
        log_format=log_format,
    )


_PATH_SETTINGS = {"trust_bundle", "pinned_cert", "key_file", "headers_file", "dir"}


def _parse_anchoring(raw: Any, p: Path, base: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``anchoring: {rfc3161|eip155|btc: {<name>: {settings}}}``; path settings
    are resolved relative to node.yaml.  Each rail validates its own settings
    when first used (and the node checks every configured rail at start)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _err(p, "anchoring", "must be a mapping of rail schemes")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for scheme, targets in raw.items():
        if scheme not in ("rfc3161", "eip155", "btc"):
            raise _err(
                p, f"anchoring.{scheme}", "is not rfc3161, eip155 or btc", "config_key_unknown"
            )
        if not isinstance(targets, dict):
            raise _err(p, f"anchoring.{scheme}", "must map target names to settings")
        for name, settings in targets.items():
            if not isinstance(settings, dict):
                raise _err(p, f"anchoring.{scheme}.{name}", "must be a mapping of settings")
            resolved = dict(settings)
            for key in _PATH_SETTINGS & set(resolved):
                resolved[key] = str((base / str(resolved[key])).resolve())
            out.setdefault(scheme, {})[str(name)] = resolved
    return out


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
    prefix = origin_prefix or f"{directory.resolve().name or 'node'}.remembrancer.local"
    config.write_text(
        "# Remembrancer node configuration (see docs/node.md).\n"
        "version: 1\n"
        f"origin_prefix: {prefix}\n"
        f"listen: {listen}\n"
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
