"""Reading an archive: every member streamed once, in bounded memory, and checked.

Only the keys the reader names are trusted, never those the archive lists.
Each member's size and SHA-256 must match the manifest; each log's entries,
hashed into an RFC 6962 tree, must give the root of every stored checkpoint
and of the manifest; every checkpoint must be signed by a trusted key; the
replay index must be exactly what the entries give.  Every JSON line goes
through the strict parser under :data:`~.manifest.MAX_LINE_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

from remembrancer.core.checkpoint import open_checkpoint
from remembrancer.core.errors import ConfigError, FormatError, RemembrancerError, VerificationError
from remembrancer.core.jcs import loads_strict
from remembrancer.core.keys import PublicKey
from remembrancer.core.note import Verifier
from remembrancer.core.record import Record
from remembrancer.core.rfc6962 import HASH_SIZE, hash_leaf
from remembrancer.log.tiles import TileWriter
from remembrancer.node.backup.manifest import (
    MANIFEST,
    MAX_LINE_BYTES,
    MAX_MANIFEST_BYTES,
    READ_CHUNK,
    STATE_MEMBER,
    TABLES,
    TABLES_MEMBER,
    BackupLog,
    BackupMember,
    Manifest,
    TableRows,
    bad_manifest,
    expect_count,
    expect_text,
)
from remembrancer.storage.base import (
    BUNDLE_WIDTH,
    AnchorReceiptRow,
    CosignedRow,
    EvidenceRow,
    FederationReceiptRow,
    LogState,
    RecordRow,
    StoredCheckpoint,
    StoreLoader,
)
from remembrancer.storage.legacy import LegacySplitter, Split

_FLUSH_BYTES: Final = 8 << 20  # entry bytes handed to the store per call
_FLUSH_ROWS: Final = 10_000
_TILE_BYTES: Final = 256 * HASH_SIZE


def _corrupt(name: str, why: str) -> VerificationError:
    return VerificationError(
        f"member {name} of the archive is corrupt: {why}",
        code="backup_member_corrupt",
        details={"member": name},
    )


def _malformed(name: str, why: str) -> FormatError:
    return FormatError(f"{name}: {why}", code="backup_malformed", details={"member": name})


class _Member:
    """Reads one member, hashing what it reads; :meth:`finish` checks the hash."""

    def __init__(self, name: str, raw: IO[bytes], expected: BackupMember) -> None:
        self.name = name
        self._raw = raw
        self._expected = expected
        self._sha = hashlib.sha256()
        self._done = False

    def read(self, n: int = READ_CHUNK) -> bytes:
        try:
            data = self._raw.read(n)
        except (OSError, tarfile.TarError, EOFError) as e:
            raise FormatError(
                f"the archive ends inside member {self.name} (truncated?): {e}",
                code="backup_truncated",
                details={"member": self.name},
            ) from e
        self._sha.update(data)
        return data

    def lines(self) -> Iterator[bytes]:
        """Complete lines (each ending in a newline), at most MAX_LINE_BYTES each."""
        pending = b""
        while True:
            chunk = self.read()
            if not chunk:
                if pending:
                    raise _malformed(self.name, "the last line has no newline")
                return
            pending += chunk
            start = 0
            while True:
                end = pending.find(b"\n", start)
                if end < 0:
                    break
                yield pending[start : end + 1]
                start = end + 1
            pending = pending[start:]
            if len(pending) > MAX_LINE_BYTES:
                raise _malformed(self.name, f"a line is longer than {MAX_LINE_BYTES} bytes")

    def finish(self) -> None:
        """Check that the member is fully read and matches the manifest."""
        if self._done:
            return
        if self.read(1):
            raise _malformed(self.name, "data after its last record")
        self._done = True
        if self._sha.digest() != self._expected.sha256:
            raise _corrupt(self.name, "its SHA-256 is not the manifest's")

    def intact(self) -> bool:
        """Drain the member; whether its bytes are the manifest's (used to blame a
        failed check on a corrupt member rather than on its contents)."""
        try:
            while self.read():
                pass
        except RemembrancerError:
            return False
        self._done = True
        return self._sha.digest() == self._expected.sha256


class Archive:
    """An opened archive whose manifest and member list have been checked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._file = path.open("rb")
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}", code="file_unreadable") from e
        try:
            self._tar = tarfile.open(fileobj=self._file, mode="r:")  # noqa: SIM115 (closed by close())
            infos = self._tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            self._file.close()
            if isinstance(e, EOFError) or "unexpected end of data" in str(e):
                raise FormatError(
                    f"{path} ends inside a member: it is truncated", code="backup_truncated"
                ) from e
            raise FormatError(
                f"{path} is not a readable tar archive: {e}", code="backup_malformed"
            ) from e
        try:
            self.manifest = self._read_manifest(infos)
            self._infos = self._match_members(infos[:-1])
        except BaseException:
            self.close()
            raise

    def _read_manifest(self, infos: list[tarfile.TarInfo]) -> Manifest:
        last = infos[-1] if infos else None
        if last is None or last.name != MANIFEST:
            raise FormatError(
                f"{self.path} has no {MANIFEST} at its end: it is truncated, or not a "
                "Remembrancer backup",
                code="backup_truncated",
            )
        if not last.isreg() or last.size > MAX_MANIFEST_BYTES:
            raise bad_manifest("not a regular file of a sensible size")
        raw = self._tar.extractfile(last)
        assert raw is not None
        try:
            data = raw.read()
        except (OSError, tarfile.TarError, EOFError) as e:
            raise FormatError(
                f"{self.path} ends inside {MANIFEST} (truncated?): {e}", code="backup_truncated"
            ) from e
        if len(data) != last.size:
            raise FormatError(f"{self.path} ends inside {MANIFEST}", code="backup_truncated")
        return Manifest.from_bytes(data)

    def _match_members(self, infos: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
        expected = self.manifest.members
        names = [i.name for i in infos]
        if names != [m.name for m in expected]:
            missing = [m.name for m in expected if m.name not in names]
            extra = [n for n in names if n not in {m.name for m in expected}]
            raise VerificationError(
                "the archive's members are not the ones its manifest lists"
                + (f" (missing: {', '.join(missing[:5])})" if missing else "")
                + (f" (unexpected: {', '.join(extra[:5])})" if extra else ""),
                code="backup_members_mismatch",
                details={"missing": missing[:20], "unexpected": extra[:20]},
            )
        for info, member in zip(infos, expected, strict=True):
            if not info.isreg():
                raise _corrupt(info.name, "it is not a regular file")
            if info.size != member.size:
                raise _corrupt(info.name, f"{info.size} bytes, the manifest says {member.size}")
        return {i.name: i for i in infos}

    def member(self, name: str) -> _Member:
        raw = self._tar.extractfile(self._infos[name])
        assert raw is not None
        expected = next(m for m in self.manifest.members if m.name == name)
        return _Member(name, raw, expected)

    def close(self) -> None:
        self._tar.close()
        self._file.close()


@contextmanager
def _blame(*members: _Member) -> Iterator[None]:
    """A failed check in these members is reported as the corruption of the first
    one whose bytes are not the manifest's, if there is one."""
    try:
        yield
    except RemembrancerError as e:
        if e.code in ("backup_member_corrupt", "backup_truncated"):
            raise
        for m in members:
            if not m.intact():
                raise _corrupt(m.name, f"its SHA-256 is not the manifest's ({e.message})") from e
        raise


def trusted_keys(trust: Sequence[str]) -> list[str]:
    """The did:keys checkpoints and the manifest may be signed by (``backup_trust_missing``
    when there are none: an archive's own key list is never one)."""
    out: list[str] = []
    for did in trust:
        try:
            PublicKey.from_did(did)
        except FormatError as e:
            raise ConfigError(
                f"--trust {did!r} is not an Ed25519 did:key", code="backup_trust_invalid"
            ) from e
        if did not in out:
            out.append(did)
    if not out:
        raise ConfigError(
            "no key to check the archive with: name the node's key (--config node.yaml, or"
            " --trust did:key:...); the keys an archive lists itself prove nothing",
            code="backup_trust_missing",
        )
    return out


def read_archive(
    path: Path, loader: StoreLoader | None, trust: Sequence[str], allow_unsigned: bool
) -> Manifest:
    """Check the whole archive, streaming; with a loader, load every row into it."""
    trusted = trusted_keys(trust)
    archive = Archive(path)
    try:
        manifest = archive.manifest
        manifest.check_signature(trusted, allow_unsigned=allow_unsigned)
        for f in manifest.files:
            m = archive.member(f.member)
            while m.read():
                pass
            m.finish()
        verifiers = [PublicKey.from_did(did) for did in trusted]
        for log in manifest.logs:
            _read_log(archive, log, verifiers, loader, manifest.log_keys)
        # Before v3 the typed tables' rows were named state: they move on the way in.
        legacy = manifest.table_rows is None
        _read_state(archive, manifest.state_rows, loader, legacy=legacy)
        if manifest.table_rows is not None:
            _read_tables(archive, manifest.table_rows, loader)
        return manifest
    finally:
        archive.close()


def _read_log(
    archive: Archive,
    log: BackupLog,
    keys: Sequence[PublicKey],
    loader: StoreLoader | None,
    claimed: Sequence[str] = (),
) -> None:
    ns = log.namespace
    if loader is not None:
        loader.add_log(LogState(ns, log.size, log.root_hash, log.checkpoint))
    cp_member, rec_member, ent_member = (archive.member(n) for n in log.members)
    verifiers = [Verifier(log.origin, k) for k in keys]
    with _blame(cp_member, rec_member, ent_member):
        checkpoints = _checkpoints(cp_member, log, verifiers, claimed)
        replay = _ReplayIndex(rec_member, log)
        records: list[RecordRow] = []
        writer = TileWriter.empty()
        partial: dict[tuple[int, int], bytes] = {}
        chunk: list[tuple[int, bytes]] = []
        cps: list[StoredCheckpoint] = []
        tiles: list[tuple[int, int, bytes]] = []
        held = 0
        upcoming = next(checkpoints, None)

        def passed(size: int) -> None:
            nonlocal upcoming
            while upcoming is not None and upcoming[0].size == size:
                cp, root = upcoming
                if root != writer.root():
                    raise _root_mismatch(log, cp.size, "a stored checkpoint's root hash")
                cps.append(cp)
                upcoming = next(checkpoints, None)

        def flush() -> None:
            nonlocal held
            if loader is not None:
                loader.add_bundles(ns, chunk)
                loader.add_tiles(ns, tiles)
                loader.add_checkpoints(ns, cps)
                loader.add_records(ns, records)
            chunk.clear()
            tiles.clear()
            cps.clear()
            records.clear()
            held = 0

        passed(0)
        for index, data, entries in _bundles(ent_member, log.size):
            records.extend(replay.entries(index * BUNDLE_WIDTH, entries))
            hashes = [hash_leaf(e) for e in entries]
            done = 0
            while done < len(hashes):
                step = len(hashes) - done
                if upcoming is not None:
                    step = min(step, upcoming[0].size - writer.size)
                for level, tile_index, tile in writer.append(hashes[done : done + step]):
                    if len(tile) == _TILE_BYTES:
                        partial.pop((level, tile_index), None)
                        tiles.append((level, tile_index, tile))
                    else:
                        partial[(level, tile_index)] = tile
                done += step
                passed(writer.size)
            chunk.append((index, data))
            held += len(data)
            if held >= _FLUSH_BYTES or len(records) >= _FLUSH_ROWS:
                flush()
        if upcoming is not None:
            raise _malformed(
                cp_member.name, f"a checkpoint at size {upcoming[0].size} lies beyond the log"
            )
        if writer.root() != log.root_hash:
            raise _root_mismatch(log, log.size, "the manifest's root hash")
        tiles.extend((lv, ix, t) for (lv, ix), t in sorted(partial.items()))
        replay.finish()
        flush()
        ent_member.finish()
        cp_member.finish()
        rec_member.finish()


def _root_mismatch(log: BackupLog, size: int, what: str) -> VerificationError:
    return VerificationError(
        f"the entries of {log.namespace} do not hash to {what} at size {size}",
        code="backup_root_mismatch",
        details={"namespace": log.namespace, "size": size},
    )


def _checkpoints(
    member: _Member, log: BackupLog, verifiers: Sequence[Verifier], claimed: Sequence[str] = ()
) -> Iterator[tuple[StoredCheckpoint, bytes]]:
    """The checkpoint rows, each checked (signed under the log's origin by a key the
    reader trusts, sizes increasing, the last one the head), with its root hash.
    ``claimed`` (the keys the archive lists) appear in the error message only."""
    count = 0
    last = -1
    head_seen = False
    for line in member.lines():
        try:
            row = loads_strict(line, max_bytes=MAX_LINE_BYTES)
            note, size, when = (
                expect_text(row["note"]).encode(),
                expect_count(row["size"]),
                expect_count(row["time"]),
            )
        except (ValueError, KeyError, TypeError, FormatError) as e:
            raise _malformed(member.name, f"row {count + 1} is not a checkpoint row ({e!r})") from e
        if size <= last or size > log.size:
            raise _malformed(
                member.name, f"checkpoint sizes are not increasing within the log ({size})"
            )
        last = size
        signed = None
        for verifier in verifiers:
            try:
                signed = open_checkpoint(note, verifier)
                break
            except RemembrancerError:
                continue
        if signed is None or signed.checkpoint.size != size:
            untrusted = [k for k in claimed if k not in {v.public_key.did for v in verifiers}]
            raise VerificationError(
                f"the checkpoint of {log.origin} at size {size} is not signed by a key this "
                f"node trusts ({len(verifiers)}: its node key and --trust); after a node key "
                "rotation, name the earlier keys (--log-key when creating, --trust when "
                "verifying or restoring)"
                + (f"; the archive names, unverified: {', '.join(untrusted)}" if untrusted else ""),
                code="backup_checkpoint_invalid",
                details={"namespace": log.namespace, "size": size},
            )
        if size == log.size:
            if note != log.checkpoint:
                raise VerificationError(
                    f"the stored checkpoint of {log.namespace} at its size {size} is not the "
                    "manifest's head checkpoint",
                    code="backup_checkpoint_invalid",
                    details={"namespace": log.namespace, "size": size},
                )
            head_seen = True
        count += 1
        yield StoredCheckpoint(log.namespace, size, note, when), signed.checkpoint.root_hash
    if count != log.checkpoints or not head_seen:
        raise _malformed(
            member.name,
            f"{count} checkpoints, the manifest says {log.checkpoints}"
            + ("" if head_seen else f", and none at the log's size {log.size}"),
        )


def _bundles(member: _Member, size: int) -> Iterator[tuple[int, bytes, list[bytes]]]:
    """``(index, bundle bytes, entries)`` for each entry bundle of a log of ``size``."""
    buf = bytearray()
    pos = 0  # the next unread byte of buf
    mark = 0  # where the current bundle starts in buf

    def need(n: int) -> None:
        nonlocal pos, mark
        if len(buf) - pos >= n:
            return
        del buf[:mark]  # keep only the current bundle's bytes
        pos -= mark
        mark = 0
        while len(buf) - pos < n:
            chunk = member.read()
            if not chunk:
                raise _malformed(member.name, f"the entries end before entry {size} of the log")
            buf.extend(chunk)

    for index in range((size + BUNDLE_WIDTH - 1) // BUNDLE_WIDTH):
        mark = pos
        entries: list[bytes] = []
        for _ in range(min(BUNDLE_WIDTH, size - index * BUNDLE_WIDTH)):
            need(2)
            n = (buf[pos] << 8) | buf[pos + 1]
            need(2 + n)
            entries.append(bytes(buf[pos + 2 : pos + 2 + n]))
            pos += 2 + n
        yield index, bytes(buf[mark:pos]), entries


def _record_row(index: int, entry: bytes, namespace: str) -> RecordRow | None:
    """The replay-index row a node keeps for ``entry``: one for a record of
    ``namespace`` stored in its canonical form (what admission appends), none
    for anything else (raw entries are not indexed)."""
    if entry[:1] != b"{":
        return None
    try:
        rec = Record.from_bytes(entry)
    except FormatError:
        return None
    if rec.namespace != namespace or rec.leaf != entry:
        return None
    return RecordRow(index, rec.event_hash, rec.event_id, rec.actor, rec.nonce)


class _ReplayIndex:
    """``records.jsonl`` checked against the entries as they stream past.

    The replay index (admission rule 7) is what stops an already-logged record
    from being admitted again.  Every record in the entries must have exactly
    the row its own bytes give, and no other entry may have one; the rows
    loaded are those derived from the (checkpoint-authenticated) entries.  So
    an index that was emptied, thinned or forged is refused
    (``backup_records_mismatch``), whatever the manifest says.  The first
    mismatch is raised by :meth:`finish`, after the log's Merkle checks: an
    entry that was changed is reported as that (``backup_root_mismatch``)."""

    def __init__(self, member: _Member, log: BackupLog) -> None:
        self._log = log
        self._member = member
        self._count = 0
        self._error: VerificationError | None = None
        self._rows = self._parse()
        self._next = next(self._rows, None)

    def _parse(self) -> Iterator[RecordRow]:
        last = -1
        for line in self._member.lines():
            try:
                doc = loads_strict(line, max_bytes=MAX_LINE_BYTES)
                index = expect_count(doc["index"])
                digest = doc["event_hash"]
                event_hash = None if digest is None else bytes.fromhex(expect_text(digest))
                keys = [doc[k] for k in ("event_id", "actor", "nonce")]
                if any(k is not None and not isinstance(k, str) for k in keys):
                    raise TypeError("a key is not text")
            except (ValueError, KeyError, TypeError, FormatError) as e:
                raise _malformed(
                    self._member.name, f"row {self._count + 1} is not a record row ({e!r})"
                ) from e
            if index <= last or index >= self._log.size:
                raise _malformed(
                    self._member.name, f"record indexes are not increasing within the log ({index})"
                )
            if event_hash is not None and len(event_hash) != HASH_SIZE:
                raise _malformed(
                    self._member.name, f"the event hash of record {index} is not 32 bytes"
                )
            last = index
            self._count += 1
            yield RecordRow(index, event_hash, keys[0], keys[1], keys[2])

    def _mismatch(self, index: int, why: str) -> VerificationError:
        error = VerificationError(
            f"the replay index of {self._log.namespace} ({self._member.name}) does not match"
            f" its entries at index {index}: {why}",
            code="backup_records_mismatch",
            details={"namespace": self._log.namespace, "index": index},
        )
        self._error = self._error or error
        return error

    def entries(self, start: int, entries: Sequence[bytes]) -> list[RecordRow]:
        """Check the rows of entries ``start, start + 1, ...``; their derived rows."""
        out: list[RecordRow] = []
        ns = self._log.namespace
        for offset, entry in enumerate(entries):
            index = start + offset
            derived = _record_row(index, entry, ns)
            row = self._next
            if row is not None and row.index == index:
                if derived is None:
                    self._mismatch(index, "it has a row, but the entry is no record of " + ns)
                elif row != derived:
                    self._mismatch(index, "its row does not hold the record's keys")
                self._next = next(self._rows, None)
            elif derived is not None:
                self._mismatch(
                    index,
                    f"the record {derived.event_id!r} has no row, so once restored it could be"
                    " admitted again",
                )
            if derived is not None:
                out.append(derived)
        return out

    def finish(self) -> None:
        if self._error is not None:
            raise self._error
        if self._next is not None:
            raise self._mismatch(self._next.index, "a row beyond the entries read")
        if self._count != self._log.records:
            raise _malformed(
                self._member.name, f"{self._count} records, the manifest says {self._log.records}"
            )


def _add_split(loader: StoreLoader, split: Split) -> None:
    loader.add_state(split.state)
    loader.add_anchor_receipts(split.anchor_receipts)
    loader.add_cosigned(split.cosigned)
    loader.add_federation_receipts(split.federation_receipts)
    loader.add_evidence(split.evidence)


def _read_state(
    archive: Archive, expected: int, loader: StoreLoader | None, *, legacy: bool
) -> None:
    member = archive.member(STATE_MEMBER)
    rows: list[tuple[str, str, bytes]] = []
    count = 0
    splitter = LegacySplitter() if legacy else None

    def add(rows: list[tuple[str, str, bytes]]) -> None:
        if loader is None:
            return
        if splitter is None:
            loader.add_state(rows)
        else:
            _add_split(loader, splitter.feed(rows))

    with _blame(member):
        for line in member.lines():
            try:
                doc = loads_strict(line, max_bytes=MAX_LINE_BYTES)
                scope, key, text = doc["scope"], doc["key"], doc["value"]
                if not all(isinstance(v, str) for v in (scope, key, text)):
                    raise TypeError("scope, key and value are text")
                value = base64.b64decode(text, validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error, FormatError) as e:
                raise _malformed(member.name, f"row {count + 1} is not a state row ({e!r})") from e
            rows.append((scope, key, value))
            count += 1
            if len(rows) >= _FLUSH_ROWS:
                add(rows)
                rows = []
        if rows:
            add(rows)
        if splitter is not None and loader is not None:
            _add_split(loader, splitter.finish())
        if count != expected:
            raise _malformed(member.name, f"{count} state rows, the manifest says {expected}")
        member.finish()


def _table_row(
    doc: object,
) -> AnchorReceiptRow | CosignedRow | FederationReceiptRow | EvidenceRow:
    """One line of ``tables.jsonl`` (ValueError, KeyError, TypeError if malformed)."""
    if not isinstance(doc, dict):
        raise TypeError("not an object")
    table = doc["table"]
    fields = {
        "anchor_receipts": {"table", "namespace", "size", "finished", "receipt"},
        "witness_cosigned": {"table", "origin", "size", "root_hash", "note", "cosignature",
                             "time"},
        "federation_receipts": {"table", "namespace", "receipt_id", "receipt"},
        "federation_evidence": {"table", "ref", "subject", "incident", "data"},
    }.get(table)  # fmt: skip
    if fields is None or set(doc) != fields:
        raise ValueError(f"not a row of {', '.join(TABLES)}")

    def b64(name: str) -> bytes:
        return base64.b64decode(expect_text(doc[name]), validate=True)

    if table == "anchor_receipts":
        if not isinstance(doc["finished"], bool):
            raise TypeError("finished is true or false")
        return AnchorReceiptRow(expect_text(doc["namespace"]), expect_count(doc["size"]),
                                b64("receipt"), doc["finished"])  # fmt: skip
    if table == "witness_cosigned":
        root = b64("root_hash")
        if len(root) != HASH_SIZE:
            raise ValueError("root_hash is not 32 bytes")
        return CosignedRow(expect_text(doc["origin"]), expect_count(doc["size"]), root,
                           b64("note"), expect_text(doc["cosignature"]), expect_count(doc["time"]))  # fmt: skip
    if table == "federation_evidence":
        return EvidenceRow(expect_text(doc["ref"]), expect_text(doc["subject"]),
                           expect_text(doc["incident"]), b64("data"))  # fmt: skip
    return FederationReceiptRow(expect_text(doc["namespace"]), expect_text(doc["receipt_id"]),
                                b64("receipt"))  # fmt: skip


def _read_tables(archive: Archive, expected: TableRows, loader: StoreLoader | None) -> None:
    """``tables.jsonl`` (v3): typed rows, checked strictly, counted per table."""
    member = archive.member(TABLES_MEMBER)
    anchors: list[AnchorReceiptRow] = []
    cosigned: list[CosignedRow] = []
    receipts: list[FederationReceiptRow] = []
    evidence: list[EvidenceRow] = []
    counts = dict.fromkeys(TABLES, 0)

    def flush() -> None:
        if loader is not None:
            loader.add_anchor_receipts(anchors)
            loader.add_cosigned(cosigned)
            loader.add_federation_receipts(receipts)
            loader.add_evidence(evidence)
        evidence.clear()
        anchors.clear()
        cosigned.clear()
        receipts.clear()

    with _blame(member):
        for n, line in enumerate(member.lines(), 1):
            try:
                row = _table_row(loads_strict(line, max_bytes=MAX_LINE_BYTES))
            except (ValueError, KeyError, TypeError, binascii.Error, FormatError) as e:
                raise _malformed(member.name, f"row {n} is not a table row ({e!r})") from e
            if isinstance(row, AnchorReceiptRow):
                anchors.append(row)
                counts["anchor_receipts"] += 1
            elif isinstance(row, CosignedRow):
                cosigned.append(row)
                counts["witness_cosigned"] += 1
            elif isinstance(row, EvidenceRow):
                evidence.append(row)
                counts["federation_evidence"] += 1
            else:
                receipts.append(row)
                counts["federation_receipts"] += 1
            if len(anchors) + len(cosigned) + len(receipts) + len(evidence) >= _FLUSH_ROWS:
                flush()
        flush()
        if counts != expected.to_dict():
            raise _malformed(member.name, f"rows per table {counts}, the manifest says"
                                          f" {expected.to_dict()}")  # fmt: skip
        member.finish()
