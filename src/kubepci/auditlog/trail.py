"""The audit trail as a library: append, sign checkpoints, verify, prove, search, prune, import.

:class:`Trail` joins a :class:`~kubepci.auditlog.store.TrailStore` (where leaves live) with a
:class:`~kubepci.auditlog.checkpoint.NoteSigner` (who vouches for tree heads). Verification trusts
nothing it reads back: it re-hashes every envelope and every retained payload, rebuilds the tree,
compares it with the stored tree nodes and with every signed checkpoint -- stored ones and copies
exported elsewhere -- and names the first leaf it can show to be bad. The exported copies are what
catch a rewrite by someone able to bypass the database's append-only guard rails.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import gzip
import hashlib
import json
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubepci.auditlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    NoteError,
    NoteSigner,
    NoteVerifier,
    open_checkpoint,
    parse_skey,
    parse_vkey,
    sign_checkpoint,
    split_note,
)
from kubepci.auditlog.envelope import (
    Envelope,
    EnvelopeError,
    IndexFields,
    NewEntry,
    detect_kind,
    falco_entry,
    format_time,
    k8s_audit_entry,
    parse_json_object,
    record_entry,
)
from kubepci.auditlog.events import gap_entry
from kubepci.auditlog.merkle import (
    HASH_SIZE,
    MerkleError,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_inclusion,
)
from kubepci.auditlog.store import EntryNotFoundError, SearchQuery, TrailStore
from kubepci.auditlog.store._common import MIN_PAYLOAD_RETENTION_DAYS
from kubepci.auditlog.verify import TrailIntegrityError, VerifyResult, verify_store
from kubepci.errors import InputError, UsageError

__all__ = [
    "BUNDLE_FORMAT",
    "CHECKPOINT_SUFFIX",
    "ImportResult",
    "MalformedLine",
    "ProvenEntry",
    "Trail",
    "TrailIntegrityError",
    "VerifyResult",
    "load_signer",
    "load_verifiers",
    "order_rotated",
    "verify_proof_bundle",
]

BUNDLE_FORMAT = "kubepci-inclusion-proof/v1"
CHECKPOINT_SUFFIX = ".checkpoint"
_MAX_LINE = 16 << 20  # one audit event; the apiserver truncates at 100 KB by default
# lumberjack backups: <name>-2006-01-02T15-04-05.000<ext>[.gz]
_ROTATED_RE = re.compile(r"-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3})(?:\.[^./]+)?(?:\.gz)?$")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise TrailIntegrityError(f"proof bundle: {what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise TrailIntegrityError(f"proof bundle: {what} is not valid base64") from None


def load_signer(path: Path) -> NoteSigner:
    """The skey in ``path`` (``PRIVATE+KEY+name+id+key``, as written by ``trail keygen``)."""
    try:
        return parse_skey(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise InputError(f"cannot read signing key {path}: {exc.strerror}") from None
    except NoteError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_verifiers(path: Path) -> list[NoteVerifier]:
    """Every vkey in ``path``, one per line (several lines allow for key rotation)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise InputError(f"cannot read verifier key {path}: {exc.strerror}") from None
    try:
        keys = [parse_vkey(line) for line in lines if line and not line.startswith("#")]
    except NoteError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not keys:
        raise InputError(f"{path}: no verifier key found")
    return keys


@dataclass(frozen=True, slots=True)
class MalformedLine:
    """An input line that could not become a leaf; nothing was stored for it."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What ``import_files`` did: leaves appended, retries recognised, lines rejected."""

    appended: int
    duplicates: int
    malformed: tuple[MalformedLine, ...]
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ProvenEntry:
    """A leaf whose inclusion under a signed checkpoint was verified from a proof bundle."""

    index: int
    tree_size: int
    envelope: Envelope
    payload: bytes | None
    checkpoint: Checkpoint


def order_rotated(paths: Iterable[Path]) -> list[Path]:
    """Rotated backups (``audit-<time>.log[.gz]``) oldest first, then the other files as given."""
    rotated: list[tuple[str, int, Path]] = []
    current: list[Path] = []
    for position, path in enumerate(paths):
        match = _ROTATED_RE.search(path.name)
        if match:
            rotated.append((match.group(1), position, path))
        else:
            current.append(path)
    return [path for _, _, path in sorted(rotated)] + current


def _read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, exact bytes without the newline)``; ``.gz`` (or gzip magic) is decompressed."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if compressed else open
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            yield number, line[:-1] if line.endswith(b"\n") else line


class Trail:
    """One audit trail: a store, an optional signing key, and the log's origin name.

    ``origin`` defaults to the signing key's name, or else to the first verifier's; the C2SP
    convention is that a log's key is named after the log.
    """

    def __init__(
        self,
        store: TrailStore,
        signer: NoteSigner | None = None,
        origin: str | None = None,
        *,
        verifiers: Sequence[NoteVerifier] = (),
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.signer = signer
        self.verifiers = tuple(verifiers) + ((signer.verifier,) if signer else ())
        self.origin = origin or (signer.name if signer else verifiers[0].name if verifiers else None)
        self.clock = clock

    def now(self) -> str:
        return format_time(self.clock())

    # -- writing -----------------------------------------------------------------------------------

    def append(self, entries: Sequence[NewEntry]) -> list[int]:
        """Append durably; a retried delivery returns the index it already has."""
        return self.store.append_batch(entries)

    def checkpoint(self) -> str:
        """Sign the current tree head as a C2SP checkpoint, store it and return the note."""
        if self.signer is None or self.origin is None:
            raise UsageError("signing a checkpoint needs the trail's signing key")
        size = self.store.size()
        root = root_hash(self.store, size)
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
        self.store.add_checkpoint(note, size, root, created_at=self.now())
        return note

    def record_gap(self, source: str, last_seen: dt.datetime, now: dt.datetime | None = None) -> int:
        """Record that ``source`` went silent (PCI DSS 10.7.3: when a control failed, for how long)."""
        return self.append([gap_entry(source, last_seen, now or self.clock())])[0]

    def record_heartbeat(self, source: str, now: dt.datetime | None = None) -> int:
        """Record that ``source`` was seen alive (the other half of gap detection)."""
        moment = format_time(now or self.clock())
        entry = record_entry(
            "heartbeat", {"type": "heartbeat", "source": source, "at": moment},
            source=source, received_at=moment, index=IndexFields(event_time=moment),
        )
        return self.append([entry])[0]

    def prune(self, retention_days: int, now: dt.datetime | None = None) -> int:
        """Drop raw payloads older than the retention period; envelopes and proofs stay."""
        if retention_days < MIN_PAYLOAD_RETENTION_DAYS:
            raise UsageError(
                f"retention of {retention_days} days is below the {MIN_PAYLOAD_RETENTION_DAYS}-day minimum"
                " (PCI DSS 10.5.1 keeps audit history at least 12 months)"
            )
        cutoff = (now or self.clock()) - dt.timedelta(days=retention_days)
        return self.store.prune_payloads(format_time(cutoff))

    def import_files(
        self, paths: Sequence[Path], *, source: str | None = None, kind: str = "auto", batch_size: int = 1000
    ) -> ImportResult:
        """Append every event line of audit log files (JSON lines, rotated, ``.gz``), one leaf each.

        Malformed lines are skipped and reported with file and line; a second import of the same
        files appends nothing (each line is recognised as a retry).
        """
        if kind not in ("auto", "k8s-audit", "falco"):
            raise UsageError(f"cannot import records of kind {kind!r}")
        for path in paths:
            if not path.is_file():
                raise InputError(f"{path}: not a readable file")
        ordered = order_rotated(paths)
        malformed: list[MalformedLine] = []
        batch: list[NewEntry] = []
        before = self.store.size()
        processed = 0
        for path in ordered:
            for entry in self._file_entries(path, source, kind, malformed):
                batch.append(entry)
                if len(batch) >= batch_size:
                    self.append(batch)
                    processed += len(batch)
                    batch = []
        if batch:
            self.append(batch)
            processed += len(batch)
        appended = self.store.size() - before
        return ImportResult(appended, processed - appended, tuple(malformed), tuple(map(str, ordered)))

    def _file_entries(
        self, path: Path, source: str | None, kind: str, malformed: list[MalformedLine]
    ) -> Iterator[NewEntry]:
        number = 0
        try:
            for number, line in _read_lines(path):
                if not line.strip():
                    continue
                try:
                    yield self._line_entry(line, source, kind)
                except EnvelopeError as exc:
                    malformed.append(MalformedLine(str(path), number, str(exc)))
        except (OSError, EOFError, zlib.error) as exc:
            malformed.append(MalformedLine(str(path), number + 1, f"unreadable from here on: {exc}"))

    def _line_entry(self, line: bytes, source: str | None, kind: str) -> NewEntry:
        if len(line) > _MAX_LINE:
            raise EnvelopeError(f"line is {len(line)} bytes, over the {_MAX_LINE}-byte limit")
        obj = parse_json_object(line)
        detected = detect_kind(obj) if kind == "auto" else kind
        if detected is None and "kind" in obj and obj["kind"] != "EventList":
            detected = "k8s-audit"  # let the Event parser say what is wrong with it
        received = self.now()
        if detected == "k8s-audit":
            return k8s_audit_entry(line, source=source or "apiserver", received_at=received, event=obj)
        if detected == "falco":
            return falco_entry(line, source=source or "falco", received_at=received, alert=obj)
        if obj.get("kind") == "EventList":
            raise EnvelopeError("an EventList (a webhook body), not one event per line")
        raise EnvelopeError("neither a Kubernetes audit Event nor a Falco alert")

    # -- reading -----------------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> list[dict[str, Any]]:
        """Matching leaves as ``{"leaf_index": n, **envelope}`` in leaf order."""
        return [{"leaf_index": hit.index, **json.loads(hit.envelope)} for hit in self.store.search(query)]

    def verify(self, exported_dir: Path | None = None) -> VerifyResult:
        """Check the whole trail; raise :class:`TrailIntegrityError` naming the first bad leaf."""
        exported: list[tuple[str, str]] = []
        if exported_dir is not None:
            if not exported_dir.is_dir():
                raise InputError(f"{exported_dir}: not a directory of exported checkpoints")
            for path in sorted(exported_dir.glob(f"*{CHECKPOINT_SUFFIX}")):
                exported.append((str(path), path.read_text(encoding="utf-8")))
        return verify_store(self.store, self.verifiers, self.origin, exported)

    def prove(self, index: int) -> dict[str, Any]:
        """Inclusion proof bundle for leaf ``index`` under the latest signed checkpoint.

        Signs a fresh checkpoint first when none covers the leaf yet (needs the signing key). The
        bundle carries the envelope, the retained payload if any, the audit path and the signed
        note, so :func:`verify_proof_bundle` needs nothing but the log's public key.
        """
        size = self.store.size()
        if not 0 <= index < size:
            raise EntryNotFoundError(f"no leaf {index}: the trail has {size} leaves")
        latest = self.store.latest_checkpoint()
        if latest is None or latest.size <= index:
            if self.signer is None:
                raise UsageError(f"no signed checkpoint covers leaf {index}; create one first")
            self.checkpoint()
            latest = self.store.latest_checkpoint()
            if latest is None:
                raise InputError("the store did not keep the checkpoint just signed")
        item = self.store.entry(index)
        computed = leaf_hash(item.envelope)
        if computed != item.leaf_hash:
            raise TrailIntegrityError("stored leaf hash does not match its envelope", leaf=index)
        path = inclusion_proof(self.store, index, latest.size)
        try:
            verify_inclusion(computed, index, latest.size, path, latest.root)
        except MerkleError as exc:
            raise TrailIntegrityError(f"proof against checkpoint #{latest.ordinal} fails: {exc}", leaf=index) from None
        checkpoint = Checkpoint.parse(split_note(latest.note)[0])
        return {
            "format": BUNDLE_FORMAT,
            "origin": checkpoint.origin,
            "leaf_index": index,
            "tree_size": latest.size,
            "leaf_hash": _b64(computed),
            "envelope": item.envelope.decode("utf-8"),
            "payload": None if item.raw is None else _b64(item.raw),
            "proof": [_b64(node) for node in path],
            "checkpoint": latest.note,
        }

    def export_checkpoints(self, directory: Path) -> list[Path]:
        """Write every stored checkpoint as ``<size>.checkpoint``; never overwrite a different head.

        An existing file for the same size is kept. If its root differs from the store's, the store
        has been rewritten since that export, which is reported as an integrity failure.
        """
        directory.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for record in self.store.checkpoints():
            target = directory / f"{record.size:020d}{CHECKPOINT_SUFFIX}"
            if target.exists():
                existing = target.read_text(encoding="utf-8")
                if existing != record.note and _note_root(existing, target) != record.root:
                    raise TrailIntegrityError(
                        f"{target} holds a different tree head for size {record.size} than the store: "
                        "the stored history was rewritten after that export"
                    )
                continue
            handle, temp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(record.note)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temp, 0o644)
            os.replace(temp, target)
            written.append(target)
        return written


def _note_root(note: str, where: Path) -> bytes:
    try:
        return Checkpoint.parse(split_note(note)[0]).root_hash
    except NoteError as exc:
        raise TrailIntegrityError(f"{where}: not a checkpoint note: {exc}") from None


def verify_proof_bundle(bundle: Mapping[str, Any], vkey: str | NoteVerifier) -> ProvenEntry:
    """Check a bundle from :meth:`Trail.prove` with only the log's public key.

    Verifies the checkpoint signature, that the checkpoint is for the bundle's tree size, that the
    audit path leads from H(0x00 || envelope) to the signed root, and that a payload, if included,
    has the hash the envelope records.
    """
    verifier = parse_vkey(vkey) if isinstance(vkey, str) else vkey
    if bundle.get("format") != BUNDLE_FORMAT:
        raise TrailIntegrityError(f"not a {BUNDLE_FORMAT} bundle")
    index, size, note, origin = (bundle.get(k) for k in ("leaf_index", "tree_size", "checkpoint", "origin"))
    if type(index) is not int or type(size) is not int or not isinstance(note, str) or not isinstance(origin, str):
        raise TrailIntegrityError("proof bundle: leaf_index, tree_size, checkpoint and origin are required")
    try:
        checkpoint, _ = open_checkpoint(note, [verifier], origin=origin, hash_size=HASH_SIZE)
    except (NoteError, CheckpointError) as exc:
        raise TrailIntegrityError(f"proof bundle checkpoint: {exc}", leaf=index) from None
    if checkpoint.size != size:
        raise TrailIntegrityError(f"bundle tree size {size} != signed size {checkpoint.size}", leaf=index)
    envelope_text = bundle.get("envelope")
    if not isinstance(envelope_text, str):
        raise TrailIntegrityError("proof bundle: envelope is required", leaf=index)
    envelope_bytes = envelope_text.encode("utf-8")
    computed = leaf_hash(envelope_bytes)
    proof_items = bundle.get("proof")
    if not isinstance(proof_items, list):
        raise TrailIntegrityError("proof bundle: proof must be a list", leaf=index)
    path = [_unb64(item, "proof hash") for item in proof_items]
    try:
        verify_inclusion(computed, index, size, path, checkpoint.root_hash)
    except MerkleError as exc:
        raise TrailIntegrityError(f"inclusion proof does not verify: {exc}", leaf=index) from None
    try:
        envelope = Envelope.parse(envelope_bytes)
    except EnvelopeError as exc:
        raise TrailIntegrityError(f"proven envelope is unreadable: {exc}", leaf=index) from None
    payload = None
    if bundle.get("payload") is not None:
        payload = _unb64(bundle["payload"], "payload")
        if hashlib.sha256(payload).hexdigest() != envelope.payload_sha256:
            raise TrailIntegrityError("payload does not match the envelope's payload_sha256", leaf=index)
    return ProvenEntry(index, size, envelope, payload, checkpoint)
