"""A static tlog-tiles log over HTTP, for the client commands and the monitor.

:class:`TiledLog` reads one log prefix (c2sp.org/tlog-tiles): the
``checkpoint``, tiles and entry bundles.  Every fetch is bounded: a size cap
per resource (a checkpoint at most 1 MiB, a tile exactly ``32 * W`` bytes, a
bundle at most 256 entries of 65,535 bytes), a timeout per request and one
deadline for the whole command (checked between chunks, so a server that
drips bytes cannot hold it past the deadline), at most 3 redirects, and only
``http``/``https``.  Bodies with ``Content-Encoding: gzip`` (which the spec
lets a log send for bundles) are decoded here with an output bound, and
capped after decoding.  A
partial tile or bundle that the log deleted once the full one existed (the
spec allows it) is read as the prefix of the full one.

What the bytes mean is checked elsewhere: the checkpoint's signatures by
:func:`read_head`, tiles and entries against the checkpoint's root by
:class:`~remembrancer.core.tileclient.VerifiedTileReader`.

:func:`log_prefix` finds the prefix from the command's options: ``--tiles
PREFIX``; ``--url URL --namespace NS`` (a Remembrancer node serves each log at
``URL/logs/NS/``); or ``--url PREFIX`` alone, when ``PREFIX/checkpoint`` is a
checkpoint.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit

import httpx

from remembrancer import __version__
from remembrancer.core.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    open_checkpoint,
    require_cosigners,
)
from remembrancer.core.cosignature import Cosignature, CosignatureVerifier
from remembrancer.core.errors import FormatError, NotFoundError, PeerError
from remembrancer.core.note import Note, Verifier
from remembrancer.core.tileclient import VerifiedTileReader
from remembrancer.core.tiles import (
    MAX_BUNDLE_ENTRIES,
    MAX_ENTRY_SIZE,
    TILE_WIDTH,
    Tile,
    decode_entry_bundle,
    encode_entry_bundle,
)

MAX_CHECKPOINT_BYTES: Final = 1 << 20
MAX_BUNDLE_BYTES: Final = MAX_BUNDLE_ENTRIES * (2 + MAX_ENTRY_SIZE)
REQUEST_TIMEOUT: Final = 20.0
PARALLEL_FETCHES: Final = 4
T = TypeVar("T")


class TiledLog:
    """HTTP access to one tlog-tiles prefix; see the module docstring.

    ``deadline`` is the time (``time.monotonic()``) by which every fetch must
    be done; :meth:`extend_deadline` moves it (the monitor does, per round).
    """

    def __init__(self, prefix: str, *, timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        parts = urlsplit(prefix)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise FormatError(
                f"{prefix!r} is not an http(s) URL", code="usage", details={"url": prefix}
            )
        self.prefix = prefix.rstrip("/")
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._client = httpx.Client(
            timeout=httpx.Timeout(min(REQUEST_TIMEOUT, timeout)),
            follow_redirects=True,
            max_redirects=3,
            headers={"Accept-Encoding": "gzip, identity",
                     "User-Agent": f"remembrancer/{__version__}"},
            transport=transport,
        )  # fmt: skip

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TiledLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extend_deadline(self) -> None:
        """Give the next fetches a fresh ``timeout`` from now."""
        self.deadline = time.monotonic() + self.timeout

    def get(self, path: str, cap: int, *, missing_ok: bool = False) -> bytes | None:
        """GET ``prefix/path``: at most ``cap`` bytes (after decoding), by the deadline.

        ``None`` for a 404 when ``missing_ok``; any other non-200 status, an
        oversized body, a timeout or a network error raises PeerError.
        """
        url = f"{self.prefix}/{path}"
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PeerError(f"GET {url}: out of time", code="log_fetch_timeout",
                            details={"url": url})  # fmt: skip
        try:
            with self._client.stream(
                "GET", url, timeout=httpx.Timeout(min(REQUEST_TIMEOUT, left))
            ) as r:
                if r.status_code == 404 and missing_ok:
                    return None
                if r.status_code != 200:
                    raise PeerError(f"GET {url}: HTTP {r.status_code}", code="log_fetch_failed",
                                    details={"url": url, "status": r.status_code})  # fmt: skip
                encoding = r.headers.get("Content-Encoding", "identity").strip().lower()
                if encoding not in ("identity", "gzip"):
                    raise PeerError(f"GET {url}: Content-Encoding {encoding[:40]!r} was not asked for",
                                    code="log_answer_malformed", details={"url": url})  # fmt: skip
                declared = r.headers.get("Content-Length")
                if (
                    encoding == "identity"
                    and declared
                    and declared.isdigit()
                    and int(declared) > cap
                ):
                    raise PeerError(f"GET {url}: {declared} bytes, more than {cap}",
                                    code="log_answer_too_large", details={"url": url})  # fmt: skip
                # Decode gzip here, with an output bound, rather than let a small
                # compressed chunk inflate without one.
                decoder = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
                body, raw = bytearray(), 0
                for chunk in r.iter_raw():
                    raw += len(chunk)
                    if decoder is None:
                        body += chunk
                    else:
                        body += decoder.decompress(chunk, cap + 1 - len(body))
                        if decoder.unconsumed_tail:
                            body += b"\0"  # more output than the cap allows
                    if len(body) > cap or raw > 2 * cap + 4096:
                        raise PeerError(f"GET {url}: more than {cap} bytes",
                                        code="log_answer_too_large", details={"url": url})  # fmt: skip
                    if time.monotonic() > self.deadline:
                        raise PeerError(f"GET {url}: out of time", code="log_fetch_timeout",
                                        details={"url": url})  # fmt: skip
                if decoder is not None and (not decoder.eof or decoder.unused_data):
                    raise PeerError(f"GET {url}: a truncated or trailing gzip stream",
                                    code="log_answer_malformed", details={"url": url})  # fmt: skip
                return bytes(body)
        except httpx.TimeoutException as e:
            raise PeerError(f"GET {url}: timed out", code="log_fetch_timeout",
                            details={"url": url}) from e  # fmt: skip
        except httpx.HTTPError as e:
            raise PeerError(f"GET {url}: {type(e).__name__}: {e}", code="log_unreachable",
                            details={"url": url}) from e  # fmt: skip

    def checkpoint(self) -> bytes:
        """The log's current checkpoint note, as served."""
        data = self.get("checkpoint", MAX_CHECKPOINT_BYTES, missing_ok=True)
        if data is None:
            raise NotFoundError(
                f"no checkpoint at {self.prefix}/checkpoint: not the tlog-tiles prefix of a "
                "log (for a Remembrancer node, give its URL and the --namespace of one of its logs)",
                code="log_checkpoint_missing",
            )
        return data

    def _parallel(self, fn: Callable[[Tile], T], tiles: Sequence[Tile]) -> list[T]:
        if len(tiles) <= 1:
            return [fn(t) for t in tiles]
        with ThreadPoolExecutor(min(PARALLEL_FETCHES, len(tiles))) as pool:
            return list(pool.map(fn, tiles))

    def _tile(self, tile: Tile) -> bytes:
        data = self.get(tile.path(), tile.byte_size, missing_ok=tile.is_partial)
        if data is None:  # a partial tile the log deleted: the full one starts with it
            full = self.get(Tile(tile.level, tile.index).path(), TILE_WIDTH * 32)
            assert full is not None
            return full[: tile.byte_size]
        return data

    def _bundle(self, tile: Tile) -> bytes:
        data = self.get(tile.entries_path(), MAX_BUNDLE_BYTES, missing_ok=tile.is_partial)
        if data is None:
            full = self.get(Tile(0, tile.index).entries_path(), MAX_BUNDLE_BYTES)
            assert full is not None
            return encode_entry_bundle(decode_entry_bundle(full, TILE_WIDTH)[: tile.width])
        return data

    def fetch_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """``FetchTiles`` for :class:`~remembrancer.core.tileclient.VerifiedTileReader`."""
        return self._parallel(self._tile, tiles)

    def fetch_bundles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """``FetchBundles`` for :meth:`~remembrancer.core.tileclient.VerifiedTileReader.read_entries`."""
        return self._parallel(self._bundle, tiles)


def log_prefix(url: str | None, namespace: str | None, tiles: str | None) -> str:
    """The tlog-tiles prefix the options name (see the module docstring)."""
    if tiles is not None:
        if url is not None or namespace is not None:
            raise FormatError(
                "give --tiles PREFIX, or --url URL [--namespace NS], not both", code="usage"
            )
        return tiles.rstrip("/")
    if url is None:
        raise FormatError("give --tiles PREFIX or --url URL [--namespace NS]", code="usage")
    if namespace is not None:
        return f"{url.rstrip('/')}/logs/{namespace}"
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class Head:
    """A log's current checkpoint and a reader of its verified tiles.

    ``signed`` is ``None`` when no log key was given (nothing about the
    signature is then known); ``cosigners`` holds one verified cosignature per
    distinct witness key.
    """

    note: bytes
    checkpoint: Checkpoint
    signed: SignedCheckpoint | None
    cosigners: tuple[Cosignature, ...]
    reader: VerifiedTileReader


def check_cosigners(
    signed: SignedCheckpoint, log_verifier: Verifier, quorum: int
) -> tuple[Cosignature, ...]:
    """The distinct witness keys that cosigned (the log's own key never counts);
    VerificationError ``cosigner_quorum_not_met`` below ``quorum``."""
    return require_cosigners(signed, log_verifier.public_key, quorum)


def open_head(note: bytes, log: TiledLog, log_verifier: Verifier | None,
              cosigners: Sequence[CosignatureVerifier] = (), quorum: int = 0) -> Head:  # fmt: skip
    """Verify ``note`` (signature by ``log_verifier`` and ``quorum`` cosigners,
    when given) and open a reader of ``log``'s tiles for it."""
    counted: tuple[Cosignature, ...] = ()
    signed: SignedCheckpoint | None = None
    if log_verifier is None:
        if cosigners or quorum:
            raise FormatError("checking cosignatures needs the log's --vkey", code="usage")
        cp = Checkpoint.parse(Note.from_bytes(note).text)
    else:
        signed = open_checkpoint(note, log_verifier, cosigners)
        counted = check_cosigners(signed, log_verifier, quorum)
        cp = signed.checkpoint
    reader = VerifiedTileReader(log.fetch_tiles, cp.size, cp.root_hash)
    return Head(note, cp, signed, counted, reader)


def read_head(log: TiledLog, log_verifier: Verifier | None,
              cosigners: Sequence[CosignatureVerifier] = (), quorum: int = 0) -> Head:  # fmt: skip
    """Fetch the log's checkpoint and :func:`open_head` it."""
    return open_head(log.checkpoint(), log, log_verifier, cosigners, quorum)
