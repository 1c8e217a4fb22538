"""A naive static tlog-tiles log writer, for tests only.

Written from the specs alone (c2sp.org/tlog-tiles, tlog-checkpoint,
signed-note, tlog-cosignature) with ``hashlib`` and PyNaCl, sharing no code
with ``remembrancer.core`` (no tiles, Merkle, note or checkpoint code): the
client commands read what it writes as a foreign log, the way they would read
one written by Tessera or copied to a CDN bucket.  Like
:mod:`remembrancer.testing.naive_merkle`, it favours the spec's formulas over
speed: tile ``n`` at level ``l`` holds, for ``i`` in 0..255,
``MTH(D[(n * 256 + i) * 256**l : (n * 256 + i + 1) * 256**l])``.

Example::

    log = NaiveLog("log.example.org/foreign", seed=b"\\x01" * 32)
    log.append([b"hello", b"world"])
    log.publish(directory)        # checkpoint, tile/0/000.p/2, tile/entries/000.p/2, ...
    log.vkey                      # log.example.org/foreign+<key id>+<base64(0x01 || key)>
"""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import nacl.signing


def _mth(
    leaves: Sequence[bytes], start: int, end: int, memo: dict[tuple[int, int], bytes]
) -> bytes:
    """RFC 6962 section 2.1 MTH over the leaf hashes ``leaves[start:end]``."""
    key = (start, end)
    if key in memo:
        return memo[key]
    n = end - start
    if n == 0:
        value = hashlib.sha256(b"").digest()
    elif n == 1:
        value = leaves[start]
    else:
        k = 1
        while k * 2 < n:
            k *= 2
        left = _mth(leaves, start, start + k, memo)
        value = hashlib.sha256(b"\x01" + left + _mth(leaves, start + k, end, memo)).digest()
    memo[key] = value
    return value


def _index_path(n: int) -> str:
    """``<N>`` of tlog-tiles: zero-padded 3-digit elements, all but the last prefixed ``x``."""
    text = str(n)
    while len(text) % 3:
        text = "0" + text
    parts = [text[i : i + 3] for i in range(0, len(text), 3)]
    return "/".join(["x" + p for p in parts[:-1]] + [parts[-1]])


def tile_path(level: int, n: int, width: int) -> str:
    """``tile/<L>/<N>[.p/<W>]``."""
    return f"tile/{level}/{_index_path(n)}" + (f".p/{width}" if width < 256 else "")


def bundle_path(n: int, width: int) -> str:
    """``tile/entries/<N>[.p/<W>]``."""
    return f"tile/entries/{_index_path(n)}" + (f".p/{width}" if width < 256 else "")


def _key_id(name: str, sig_type: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


class NaiveLog:
    """An append-only list of entries, published as a static tlog-tiles directory.

    ``seed`` is the 32-byte Ed25519 seed of the log key, named ``origin``
    (or ``key_name``).  ``cosigners`` are ``(name, seed, timestamp)`` of
    witnesses whose cosignature/v1 lines :meth:`checkpoint` adds;
    ``extensions`` are checkpoint extension lines (opaque, signed with the rest).
    """

    def __init__(self, origin: str, seed: bytes, *, key_name: str | None = None,
                 cosigners: Iterable[tuple[str, bytes, int]] = (),
                 extensions: Iterable[str] = ()) -> None:  # fmt: skip
        self.origin = origin
        self.key_name = key_name or origin
        self._key = nacl.signing.SigningKey(seed)
        self.cosigners = list(cosigners)
        self.extensions = list(extensions)
        self.entries: list[bytes] = []
        self.leaves: list[bytes] = []
        self._memo: dict[tuple[int, int], bytes] = {}

    @property
    def vkey(self) -> str:
        public = bytes(self._key.verify_key)
        kid = _key_id(self.key_name, 0x01, public).hex()
        material = base64.b64encode(bytes([0x01]) + public).decode()
        return f"{self.key_name}+{kid}+{material}"

    @staticmethod
    def cosigner_vkey(name: str, seed: bytes) -> str:
        public = bytes(nacl.signing.SigningKey(seed).verify_key)
        kid = _key_id(name, 0x04, public).hex()
        material = base64.b64encode(bytes([0x04]) + public).decode()
        return f"{name}+{kid}+{material}"

    def append(self, entries: Iterable[bytes]) -> None:
        for e in entries:
            assert len(e) <= 0xFFFF, "an entry bundle length prefix is a uint16"
            self.entries.append(bytes(e))
            self.leaves.append(hashlib.sha256(b"\x00" + e).digest())

    def root(self, size: int) -> bytes:
        return _mth(self.leaves, 0, size, self._memo)

    def tile(self, level: int, n: int, width: int) -> bytes:
        """The spec's formula, hash by hash."""
        span = 256**level
        out = b""
        for i in range(width):
            first = (n * 256 + i) * span
            out += _mth(self.leaves, first, first + span, self._memo)
        return out

    def checkpoint(self, size: int | None = None) -> bytes:
        """The signed checkpoint note (with cosignatures) at ``size`` (default: all)."""
        size = len(self.entries) if size is None else size
        body = f"{self.origin}\n{size}\n{base64.b64encode(self.root(size)).decode()}\n"
        body += "".join(line + "\n" for line in self.extensions)
        sig = self._key.sign(body.encode()).signature
        kid = _key_id(self.key_name, 0x01, bytes(self._key.verify_key))
        lines = [f"\u2014 {self.key_name} {base64.b64encode(kid + sig).decode()}\n"]
        for name, seed, timestamp in self.cosigners:
            key = nacl.signing.SigningKey(seed)
            message = b"cosignature/v1\ntime %d\n" % timestamp + body.encode()
            blob = _key_id(name, 0x04, bytes(key.verify_key)) + timestamp.to_bytes(8, "big")
            blob += key.sign(message).signature
            lines.append(f"\u2014 {name} {base64.b64encode(blob).decode()}\n")
        return (body + "\n" + "".join(lines)).encode()

    def files(self, sizes: Iterable[int]) -> dict[str, bytes]:
        """Every resource of the log for checkpoints at ``sizes`` (the last one is
        served as ``checkpoint``): full tiles and bundles, and the partial ones of
        each size (tlog-tiles: "Logs MUST serve partial tiles corresponding to tree
        sizes for which a checkpoint was produced")."""
        sizes = list(sizes)
        out: dict[str, bytes] = {}
        for size in sizes:
            level = 0
            while size // 256**level > 0:
                count = size // 256**level  # hashes at this tile level
                for n in range((count + 255) // 256):
                    width = min(256, count - n * 256)
                    out[tile_path(level, n, width)] = self.tile(level, n, width)
                    if level == 0:
                        bundle = b""
                        for e in self.entries[n * 256 : n * 256 + width]:
                            bundle += len(e).to_bytes(2, "big") + e
                        out[bundle_path(n, width)] = bundle
                level += 1
        out["checkpoint"] = self.checkpoint(sizes[-1])
        return out

    def publish(self, directory: Path, sizes: Iterable[int] | None = None, *,
                drop_partials: bool = False) -> dict[str, bytes]:  # fmt: skip
        """Write the log into ``directory`` (replacing what was there, as one rename).

        ``drop_partials`` removes every partial tile and bundle whose full
        version exists (the spec allows a log to), so clients must fall back to
        the full one.
        """
        files = self.files([len(self.entries)] if sizes is None else sizes)
        if drop_partials:
            for path in list(files):
                if ".p/" in path and path.split(".p/")[0] in files:
                    del files[path]
        staging = directory.with_name(directory.name + ".staging")
        shutil.rmtree(staging, ignore_errors=True)
        for path, data in files.items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        staging.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
        return files
