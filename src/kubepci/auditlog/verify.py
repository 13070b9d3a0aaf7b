"""Full verification of a stored trail (PCI DSS 10.3.4: detect any change to audit logs).

Nothing read back is trusted. The check rebuilds the tree from the stored envelopes, so it never
relies on the stored leaf hashes or nodes, and then asks four questions:

1. does every stored leaf hash equal ``H(0x00 || envelope)``, and every retained payload the
   ``payload_sha256`` its envelope records? (catches naive edits, names the exact leaf)
2. are the leaf indices gapless and as many as the log head says? (catches deleted rows)
3. does every stored tree node equal the rebuilt one, and is there none beyond the tree?
   (catches reordering and rewrites that fixed up the leaf hashes, to within one node's span,
   and a removed tail whose nodes were left behind)
4. is every signed checkpoint -- stored, or exported elsewhere -- validly signed and a prefix of
   the rebuilt tree, shown with a consistency proof served from the stored nodes? (catches a
   history rewritten by someone able to re-sign, and a database rolled back to an old snapshot)

Problems are collected and the one at the lowest leaf index is raised, because the first bad leaf
is where an investigation starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from kubepci.auditlog.checkpoint import Checkpoint, CheckpointError, NoteError, NoteVerifier, open_checkpoint
from kubepci.auditlog.envelope import Envelope, EnvelopeError
from kubepci.auditlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MemoryTree,
    MerkleError,
    consistency_proof,
    leaf_hash,
    verify_consistency,
)
from kubepci.auditlog.store import TrailStore
from kubepci.errors import IntegrityError, UsageError

__all__ = ["TrailIntegrityError", "VerifyResult", "verify_store"]


class TrailIntegrityError(IntegrityError):
    """The trail, a checkpoint or a proof failed verification; ``leaf_index`` is the first bad leaf."""

    def __init__(self, reason: str, *, leaf: int | None = None) -> None:
        super().__init__(reason if leaf is None else f"leaf {leaf}: {reason}")
        self.leaf_index = leaf
        self.reason = reason


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What a successful verification covered."""

    size: int
    root: bytes
    payloads_checked: int
    payloads_pruned: int
    nodes_checked: int
    checkpoints_checked: int
    exported_checked: int
    latest_checkpoint_size: int | None


@dataclass(frozen=True, slots=True)
class _Problem:
    """Some leaf in ``[leaf, end)`` is bad (``leaf`` None: a problem not tied to leaves)."""

    leaf: int | None
    end: int
    reason: str


class _Findings:
    def __init__(self) -> None:
        self.items: list[_Problem] = []

    def add(self, leaf: int | None, reason: str, end: int | None = None) -> None:
        self.items.append(_Problem(leaf, (leaf or 0) + 1 if end is None else end, reason))

    def raise_first(self) -> None:
        """Raise the problem that bounds the first bad leaf most tightly.

        Problems are ranges: an exact leaf, a tree node's span, the leaves between two checkpoints.
        The range that ends first contains the earliest provably bad leaf; among ranges ending
        together the narrowest wins, so a node-level finding beats a checkpoint-level one.
        """
        if not self.items:
            return
        located = [p for p in self.items if p.leaf is not None]
        first = min(located, key=lambda p: (p.end, -(p.leaf or 0))) if located else self.items[0]
        more = len(self.items) - 1
        suffix = f" ({more} further problem{'s' if more > 1 else ''} found)" if more else ""
        raise TrailIntegrityError(f"audit trail verification failed: {first.reason}{suffix}", leaf=first.leaf)


@dataclass(frozen=True, slots=True)
class _Scan:
    tree: MemoryTree
    complete: bool  # every leaf up to the head was read and checked without a problem
    payloads_checked: int
    payloads_pruned: int


def _scan_entries(store: TrailStore, head: int, findings: _Findings) -> _Scan:
    """Re-hash leaves and payloads in index order, stopping at the first bad leaf."""
    tree = MemoryTree()
    checked = pruned = 0
    for item in store.iter_entries():
        index = tree.size
        if item.index != index:
            findings.add(index, f"leaf {index} is missing (the next stored leaf is {item.index})")
            return _Scan(tree, False, checked, pruned)
        if index >= head:
            findings.add(index, f"leaf {index} is stored beyond the log head ({head} leaves)")
            return _Scan(tree, False, checked, pruned)
        computed = leaf_hash(item.envelope)
        if computed != item.leaf_hash:
            findings.add(index, "stored leaf hash is not H(0x00 || envelope): the envelope was altered")
            return _Scan(tree, False, checked, pruned)
        try:
            envelope = Envelope.parse(item.envelope)
        except EnvelopeError as exc:
            findings.add(index, f"envelope is not a valid kubepci envelope: {exc}")
            return _Scan(tree, False, checked, pruned)
        if item.raw is None:
            pruned += 1
        elif hashlib.sha256(item.raw).hexdigest() != envelope.payload_sha256:
            findings.add(index, "raw payload does not match the envelope's payload_sha256: the payload was altered")
            return _Scan(tree, False, checked, pruned)
        else:
            checked += 1
        tree.append(computed)
    if tree.size != head:
        findings.add(tree.size, f"the log head says {head} leaves but only {tree.size} are stored")
        return _Scan(tree, False, checked, pruned)
    return _Scan(tree, True, checked, pruned)


def _check_nodes(store: TrailStore, scan: _Scan, findings: _Findings) -> int:
    """Compare stored interior nodes with the rebuilt tree.

    A changed leaf also changes every ancestor, so a mismatching node whose child mismatches too is
    only an echo; the reported node is the lowest-level one, which brackets the bad leaf most tightly
    (a level-1 node: one of two leaves). A mismatch whose children all match means the stored node
    itself was edited.
    """
    size = scan.tree.size
    expected_next: dict[int, int] = {}
    mismatched: set[tuple[int, int]] = set()
    causes: list[_Problem] = []
    checked = 0

    def span(level: int, index: int) -> str:
        width = 1 << level
        return f"(level {level}, index {index}) over leaves {index * width}..{index * width + width - 1}"

    for level, index, value in store.iter_nodes():
        width = 1 << level
        want = expected_next.get(level, 0)
        if index > want and (want + 1) * width <= size:
            causes.append(_Problem(want * width, (want + 1) * width, f"tree node {span(level, want)} is missing"))
        expected_next[level] = index + 1
        if (index + 1) * width <= size:
            checked += 1
            if scan.tree.subtree_hash(index * width, width) != value:
                mismatched.add((level, index))
        elif scan.complete:
            causes.append(_Problem(size, size + 1, f"stored tree node {span(level, index)} exists but only"
                                   f" {size} leaves are stored: the tail of the trail was removed"))
    for level in range(1, size.bit_length()):
        have = expected_next.get(level, 0)
        if have < size >> level:
            causes.append(_Problem(have << level, (have + 1) << level, f"tree node {span(level, have)} is missing"))
    for level, index in mismatched:
        if level > 1 and ((level - 1, 2 * index) in mismatched or (level - 1, 2 * index + 1) in mismatched):
            continue
        what = (
            "a leaf in that range was altered, reordered, inserted or removed" if level == 1
            else "its leaves match their own nodes, so the stored node itself was altered"
        )
        reason = f"stored tree node {span(level, index)} does not match: {what}"
        causes.append(_Problem(index << level, (index + 1) << level, reason))
    findings.items += causes
    return checked


@dataclass(frozen=True, slots=True)
class _Anchor:
    label: str
    checkpoint: Checkpoint


def _open(label: str, note: str, verifiers: Sequence[NoteVerifier], origin: str, findings: _Findings) -> _Anchor | None:
    try:
        checkpoint, _ = open_checkpoint(note, verifiers, origin=origin, hash_size=HASH_SIZE)
    except (NoteError, CheckpointError) as exc:
        findings.add(None, f"{label} does not verify: {exc}")
        return None
    return _Anchor(label, checkpoint)


def _check_anchors(
    store: TrailStore, anchors: Sequence[_Anchor], scan: _Scan, nodes_ok: bool, findings: _Findings
) -> None:
    """Each checkpoint must be a prefix of the rebuilt tree; bound the first bad leaf between anchors."""
    size = scan.tree.size
    root = scan.tree.root()
    good_sizes = [0]
    bad: list[_Anchor] = []
    for anchor in anchors:
        cp = anchor.checkpoint
        if cp.size > size:
            if scan.complete:
                findings.add(size, f"{anchor.label} covers {cp.size} leaves but the trail has only {size}:"
                             " leaves were removed or the store was rolled back", end=cp.size)
            continue
        expected = EMPTY_ROOT if cp.size == 0 else scan.tree.root(cp.size)
        if expected != cp.root_hash:
            bad.append(anchor)
            continue
        good_sizes.append(cp.size)
        if 0 < cp.size and scan.complete and nodes_ok:
            try:  # the proof a third party would get, served from the stored nodes
                verify_consistency(cp.size, size, consistency_proof(store, cp.size, size), cp.root_hash, root)
            except MerkleError as exc:
                findings.add(None, f"consistency proof from {anchor.label} (size {cp.size}) fails: {exc}")
    for anchor in bad:
        cp = anchor.checkpoint
        lower = max(s for s in good_sizes if s < cp.size) if any(s < cp.size for s in good_sizes) else 0
        findings.add(lower, f"{anchor.label} (size {cp.size}) does not match the stored leaves: history between"
                     f" leaf {lower} and leaf {cp.size - 1} was rewritten", end=cp.size)


def verify_store(
    store: TrailStore,
    verifiers: Sequence[NoteVerifier],
    origin: str | None,
    exported: Sequence[tuple[str, str]] = (),
) -> VerifyResult:
    """Verify ``store`` against its own checkpoints and the ``(label, note)`` exported copies."""
    records = store.checkpoints()
    if (records or exported) and (not verifiers or origin is None):
        raise UsageError("checkpoints exist: verification needs the log's public key (vkey)")
    findings = _Findings()
    head = store.size()
    scan = _scan_entries(store, head, findings)
    before = len(findings.items)
    nodes_checked = _check_nodes(store, scan, findings)
    nodes_ok = len(findings.items) == before
    anchors: list[_Anchor] = []
    for record in records:
        anchor = _open(f"stored checkpoint #{record.ordinal}", record.note, verifiers, origin or "", findings)
        if anchor is None:
            continue
        if anchor.checkpoint.size != record.size or anchor.checkpoint.root_hash != record.root:
            findings.add(None, f"stored checkpoint #{record.ordinal}: its columns disagree with its signed note")
        anchors.append(anchor)
    exported_anchors = [a for label, note in exported if (a := _open(label, note, verifiers, origin or "", findings))]
    _check_anchors(store, [*anchors, *exported_anchors], scan, nodes_ok, findings)
    findings.raise_first()
    return VerifyResult(
        size=scan.tree.size,
        root=scan.tree.root(),
        payloads_checked=scan.payloads_checked,
        payloads_pruned=scan.payloads_pruned,
        nodes_checked=nodes_checked,
        checkpoints_checked=len(anchors),
        exported_checked=len(exported_anchors),
        latest_checkpoint_size=records[-1].size if records else None,
    )
