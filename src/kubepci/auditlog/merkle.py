"""RFC 9162 Merkle tree: hashing, storage-agnostic proof generation and proof verification.

The audit trail is a Merkle log over append order, so a holder of an old tree head can check that
nothing before it was altered, removed or reordered (PCI DSS 10.3.2 / 10.3.4). Hashing follows
RFC 9162 section 2.1.1: leaf ``SHA-256(0x00 || d)``, node ``SHA-256(0x01 || l || r)``, empty tree
``SHA-256("")``.

Proofs are computed through a :class:`SubtreeReader`, which only has to answer for *perfect*
subtrees (power-of-two sized and aligned). Every tree node of RFC 9162 is either such a subtree or
lies on the right edge of the tree, where it is the fold of at most ``log2(n)`` perfect subtrees. A
store that persists the perfect-subtree hashes (a ``nodes(level, index, hash)`` table, or tiles) can
therefore answer any proof with O(log n) reads instead of rehashing the log.

The verifiers reproduce the edge semantics of transparency-dev/merkle ``proof/verify.go`` exactly
(proof length checks, ``size1 == 0`` rejected even for 0 -> 0, a fully consumed second size), because
the published vectors in ``shared/testdata/transparency-dev-merkle`` are the oracle, and because a
lax verifier is the classic way to accept a proof for the wrong tree size.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from kubepci.errors import IntegrityError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemoryTree",
    "MerkleError",
    "ProofError",
    "ProofFailure",
    "SubtreeReader",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "nodes_completed_by_append",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "root_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class MerkleError(IntegrityError):
    """A Merkle-tree operation was asked something impossible (bad size, index or stored hash)."""


class ProofFailure(enum.StrEnum):
    """Why a proof was rejected; callers and tests branch on this rather than on message text."""

    INDEX_OUT_OF_RANGE = "index-out-of-range"
    LEAF_HASH_SIZE = "leaf-hash-size"
    PROOF_LENGTH = "proof-length"
    PROOF_HASH_SIZE = "proof-hash-size"
    ROOT_MISMATCH = "root-mismatch"
    SIZE_DECREASED = "size-decreased"
    EMPTY_OLD_TREE = "empty-old-tree"
    PROOF_NOT_EMPTY = "proof-not-empty"
    EMPTY_PROOF = "empty-proof"
    OLD_ROOT_MISMATCH = "old-root-mismatch"
    NEW_ROOT_MISMATCH = "new-root-mismatch"


class ProofError(MerkleError):
    """An inclusion or consistency proof does not verify; ``failure`` says which rule it broke."""

    def __init__(self, failure: ProofFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 leaf hash; the 0x00 prefix keeps leaves and interior nodes from colliding."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 interior node hash of two child hashes (raw concatenation, any length)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _require_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise MerkleError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """Tree head over ``hashes`` in one pass, keeping only the right-border frontier."""
    frontier: list[bytes] = []  # one perfect-subtree root per set bit of the count, largest first
    count = 0
    for value in hashes:
        _require_hash(value, f"leaf hash {count}")
        node = value
        carry = count
        while carry & 1:
            node = node_hash(frontier.pop(), node)
            carry >>= 1
        frontier.append(node)
        count += 1
    if not frontier:
        return EMPTY_ROOT
    root = frontier.pop()
    while frontier:
        root = node_hash(frontier.pop(), root)
    return root


class SubtreeReader(Protocol):
    """Read access to stored hashes, as needed by the provers in this module.

    ``subtree_hash(start, size)`` is only called with ``size`` a power of two >= 2 and ``start`` a
    multiple of ``size``: the hash of the perfect subtree over leaves ``[start, start + size)``.
    Single leaves are read through ``leaf_hash_at`` so a store may keep them apart from the nodes.
    """

    def subtree_hash(self, start: int, size: int) -> bytes: ...

    def leaf_hash_at(self, index: int) -> bytes: ...


def _perfect_hash(reader: SubtreeReader, start: int, size: int) -> bytes:
    value = reader.leaf_hash_at(start) if size == 1 else reader.subtree_hash(start, size)
    _require_hash(value, f"stored hash of [{start}, {start + size})")
    return value


def _range_hash(reader: SubtreeReader, start: int, end: int) -> bytes:
    """MTH of leaves ``[start, end)`` for a range that is an RFC 9162 tree node.

    Such a node is perfect or on the right edge; ``start`` is then a multiple of a power of two at
    least ``end - start``, so the binary decomposition of the width gives aligned perfect subtrees.
    """
    parts: list[bytes] = []
    position = start
    remaining = end - start
    while remaining:
        width = 1 << (remaining.bit_length() - 1)
        parts.append(_perfect_hash(reader, position, width))
        position += width
        remaining -= width
    node = parts.pop()
    while parts:
        node = node_hash(parts.pop(), node)
    return node


def _split(width: int) -> int:
    """Largest power of two strictly below ``width`` (``width >= 2``): the RFC 9162 ``k``."""
    return 1 << ((width - 1).bit_length() - 1)


def root_hash(reader: SubtreeReader, tree_size: int) -> bytes:
    """Tree head for the first ``tree_size`` leaves, from at most ``log2(n) + 1`` stored hashes."""
    if tree_size < 0:
        raise MerkleError(f"tree size must not be negative, got {tree_size}")
    return EMPTY_ROOT if tree_size == 0 else _range_hash(reader, 0, tree_size)


def inclusion_proof(reader: SubtreeReader, index: int, tree_size: int) -> list[bytes]:
    """RFC 9162 section 2.1.3.1 audit path for leaf ``index``, leaf-side sibling first."""
    if not 0 <= index < tree_size:
        raise MerkleError(f"leaf index {index} is outside a tree of size {tree_size}")
    path: list[bytes] = []
    low, high = 0, tree_size
    while high - low > 1:
        middle = low + _split(high - low)
        if index < middle:
            path.append(_range_hash(reader, middle, high))
            high = middle
        else:
            path.append(_range_hash(reader, low, middle))
            low = middle
    path.reverse()
    return path


def consistency_proof(reader: SubtreeReader, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 section 2.1.4.1 proof that the first ``size1`` leaves are a prefix of ``size2``."""
    if size1 <= 0:
        raise MerkleError(f"a consistency proof needs a non-empty old tree, got size1={size1}")
    if size1 > size2:
        raise MerkleError(f"size1 {size1} exceeds size2 {size2}")
    proof: list[bytes] = []
    low, high = 0, size2
    old_is_whole_subtree = True  # RFC 9162 flag ``b``: the old root need not be sent
    while size1 != high:
        middle = low + _split(high - low)
        if size1 <= middle:
            proof.append(_range_hash(reader, middle, high))
            high = middle
        else:
            proof.append(_range_hash(reader, low, middle))
            low = middle
            old_is_whole_subtree = False
    if not old_is_whole_subtree:
        proof.append(_range_hash(reader, low, high))
    proof.reverse()
    return proof


def nodes_completed_by_append(
    reader: SubtreeReader, tree_size: int, new_leaf_hash: bytes
) -> list[tuple[int, int, bytes]]:
    """``(level, index, hash)`` of the leaf appended at ``tree_size`` and each subtree it completes.

    A store calls this inside its append transaction and persists the result, which is what later
    lets :func:`inclusion_proof` and friends run with O(log n) reads. Reads O(log n) left siblings.
    """
    _require_hash(new_leaf_hash, "leaf hash")
    nodes = [(0, tree_size, new_leaf_hash)]
    node = new_leaf_hash
    level, index = 0, tree_size
    while index & 1:
        width = 1 << level
        node = node_hash(_perfect_hash(reader, (index - 1) * width, width), node)
        level += 1
        index >>= 1
        nodes.append((level, index, node))
    return nodes


class MemoryTree:
    """Append-only in-memory log keeping every perfect-subtree hash, so reads are O(1).

    Level ``l`` is a flat ``bytearray`` of 32-byte hashes for subtrees of ``2**l`` leaves, which
    costs about 64 bytes per leaf in total (a million leaves fit in ~64 MiB).
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._size = 0
        self.extend(leaf_hashes)

    @classmethod
    def from_entries(cls, entries: Iterable[bytes]) -> MemoryTree:
        """Tree whose leaves are the RFC 9162 leaf hashes of ``entries``."""
        return cls(leaf_hash(entry) for entry in entries)

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: bytes) -> MemoryTree:
        """Tree over concatenated 32-byte leaf hashes, built level by level (bulk verification).

        Several times faster than appending one leaf at a time: each level is one list
        comprehension of hash calls over slices of the level below.
        """
        if len(leaf_hashes) % HASH_SIZE:
            raise MerkleError(f"leaf hashes must be a multiple of {HASH_SIZE} bytes")
        tree = cls()
        tree._size = len(leaf_hashes) // HASH_SIZE
        level = bytes(leaf_hashes)
        tree._levels = [bytearray(level)]
        sha256 = hashlib.sha256
        while len(level) >= 2 * HASH_SIZE:
            pairs = len(level) // (2 * HASH_SIZE)
            level = b"".join([sha256(_NODE_PREFIX + level[i : i + 64]).digest() for i in range(0, pairs * 64, 64)])
            tree._levels.append(bytearray(level))
        return tree

    @classmethod
    def from_levels(cls, levels: Sequence[bytes], size: int) -> MemoryTree:
        """Tree from precomputed levels (level ``l``: the ``size >> l`` perfect-subtree hashes).

        For verification that hashed parts of the tree in parallel; the shape is checked, the
        hashes are taken as given (the caller computed them).
        """
        for level in range(max(1, size.bit_length())):
            have = len(levels[level]) if level < len(levels) else 0
            if have != (size >> level) * HASH_SIZE:
                raise MerkleError(
                    f"level {level} holds {have // HASH_SIZE} hashes, a tree of {size} leaves needs {size >> level}"
                )
        tree = cls()
        tree._size = size
        tree._levels = [bytearray(level) for level in levels[: max(1, size.bit_length())]]
        return tree

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    def append(self, new_leaf_hash: bytes) -> int:
        """Append one leaf hash and return its index."""
        index = self._size
        for level, _position, value in nodes_completed_by_append(self, index, new_leaf_hash):
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += value
        self._size = index + 1
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for value in leaf_hashes:
            self.append(value)

    def subtree_hash(self, start: int, size: int) -> bytes:
        if size <= 0 or size & (size - 1) or start < 0 or start % size:
            raise MerkleError(f"[{start}, {start + size}) is not an aligned perfect subtree")
        if start + size > self._size:
            raise MerkleError(f"[{start}, {start + size}) is beyond the tree size {self._size}")
        level = size.bit_length() - 1
        offset = (start >> level) * HASH_SIZE
        return bytes(self._levels[level][offset : offset + HASH_SIZE])

    def leaf_hash_at(self, index: int) -> bytes:
        return self.subtree_hash(index, 1)

    def level_bytes(self, level: int) -> bytearray:
        """All perfect-subtree hashes of ``level``, concatenated in index order (do not modify)."""
        return self._levels[level] if level < len(self._levels) else bytearray()

    def root(self, tree_size: int | None = None) -> bytes:
        """Tree head of the whole tree, or of its first ``tree_size`` leaves."""
        return root_hash(self, self._size if tree_size is None else tree_size)


def _decompose(index: int, size: int) -> tuple[int, int]:
    """Split an audit path into the ``inner`` part (below the fork with the right edge) and ``border``."""
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, value in enumerate(proof):
        if len(value) != HASH_SIZE:
            raise ProofError(
                ProofFailure.PROOF_HASH_SIZE, f"proof[{position}] is {len(value)} bytes, want {HASH_SIZE}"
            )


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    node = seed
    for level, sibling in enumerate(proof):
        node = node_hash(sibling, node) if (index >> level) & 1 else node_hash(node, sibling)
    return node


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    """Like :func:`_chain_inner` but only left siblings count: recomputes the *old* root."""
    node = seed
    for level, sibling in enumerate(proof):
        if (index >> level) & 1:
            node = node_hash(sibling, node)
    return node


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    node = seed
    for sibling in proof:
        node = node_hash(sibling, node)
    return node


def root_from_inclusion_proof(leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    """Root implied by an audit path (RFC 9162 section 2.1.3.2), after all structural checks."""
    if not 0 <= index < tree_size:
        raise ProofError(ProofFailure.INDEX_OUT_OF_RANGE, f"index {index} >= tree size {tree_size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(ProofFailure.LEAF_HASH_SIZE, f"leaf hash is {len(leaf_hash)} bytes")
    inner, border = _decompose(index, tree_size)
    if len(proof) != inner + border:
        raise ProofError(ProofFailure.PROOF_LENGTH, f"proof has {len(proof)} hashes, want {inner + border}")
    _check_proof_hashes(proof)
    return _chain_border_right(_chain_inner(leaf_hash, proof[:inner], index), proof[inner:])


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf ``index`` is in the tree with ``root``."""
    computed = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)
    if computed != root:
        raise ProofError(
            ProofFailure.ROOT_MISMATCH, f"computed root {computed.hex()} != expected {root.hex()}"
        )


def root_from_consistency_proof(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> bytes:
    """Check ``proof`` against the old root and return the new root it implies (RFC 9162 2.1.4.2)."""
    if size2 < size1:
        raise ProofError(ProofFailure.SIZE_DECREASED, f"size2 {size2} < size1 {size1}")
    if size1 <= 0:
        raise ProofError(ProofFailure.EMPTY_OLD_TREE, "consistency with an empty tree proves nothing")
    if size1 == size2:
        if proof:
            raise ProofError(
                ProofFailure.PROOF_NOT_EMPTY, f"sizes are equal but proof has {len(proof)} hashes"
            )
        return root1
    if not proof:
        raise ProofError(ProofFailure.EMPTY_PROOF, f"sizes {size1} -> {size2} need a non-empty proof")
    shift = (size1 & -size1).bit_length() - 1  # levels below the old tree's last perfect subtree
    mask = (size1 - 1) >> shift
    inner, border = _decompose(mask, ((size2 - 1) >> shift) + 1)
    if size1 == 1 << shift:
        seed, path = root1, proof
    else:
        seed, path = proof[0], proof[1:]
    if len(path) != inner + border:
        want = inner + border + len(proof) - len(path)
        raise ProofError(ProofFailure.PROOF_LENGTH, f"proof has {len(proof)} hashes, want {want}")
    _check_proof_hashes(proof)
    old_root = _chain_border_right(_chain_inner_right(seed, path[:inner], mask), path[inner:])
    if old_root != root1:
        raise ProofError(
            ProofFailure.OLD_ROOT_MISMATCH, f"computed old root {old_root.hex()} != expected {root1.hex()}"
        )
    return _chain_border_right(_chain_inner(seed, path[:inner], mask), path[inner:])


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise :class:`ProofError` unless the tree ``(size1, root1)`` is a prefix of ``(size2, root2)``."""
    computed = root_from_consistency_proof(size1, size2, proof, root1)
    if computed != root2:
        failure = ProofFailure.ROOT_MISMATCH if size1 == size2 else ProofFailure.NEW_ROOT_MISMATCH
        raise ProofError(failure, f"computed root {computed.hex()} != expected {root2.hex()}")
