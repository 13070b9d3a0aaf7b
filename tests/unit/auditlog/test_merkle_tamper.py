"""Named tampering scenarios: each must be rejected, and for the specific reason.

Also covers the prover's contract with storage: only aligned perfect subtrees are read, and only
O(log n) of them, which is what lets a database-backed store answer proofs cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from kubepci.auditlog.merkle import (
    HASH_SIZE,
    MemoryTree,
    MerkleError,
    ProofError,
    ProofFailure,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

ENTRIES = [f"event-{i}".encode() for i in range(13)]
TREE = MemoryTree.from_entries(ENTRIES)


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


def _inclusion_failure(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes | None = None
) -> ProofFailure:
    leaf_value = leaf_hash(ENTRIES[index]) if leaf is None else leaf
    with pytest.raises(ProofError) as caught:
        verify_inclusion(leaf_value, index, size, proof, root)
    return caught.value.failure


def _consistency_failure(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> ProofFailure:
    with pytest.raises(ProofError) as caught:
        verify_consistency(size1, size2, proof, root1, root2)
    return caught.value.failure


# --- inclusion ---------------------------------------------------------------------------------


def test_inclusion_wrong_leaf() -> None:
    proof = inclusion_proof(TREE, 5, 13)
    forged = leaf_hash(b"event-5 but edited")
    assert _inclusion_failure(5, 13, proof, TREE.root(), leaf=forged) is ProofFailure.ROOT_MISMATCH


@pytest.mark.parametrize("element", range(4))
def test_inclusion_flipped_bit_in_proof(element: int) -> None:
    proof = inclusion_proof(TREE, 5, 13)
    assert len(proof) == 4
    proof[element] = _flip(proof[element], 77)
    assert _inclusion_failure(5, 13, proof, TREE.root()) is ProofFailure.ROOT_MISMATCH


def test_inclusion_truncated_proof() -> None:
    proof = inclusion_proof(TREE, 5, 13)[:-1]
    assert _inclusion_failure(5, 13, proof, TREE.root()) is ProofFailure.PROOF_LENGTH


def test_inclusion_extended_proof() -> None:
    proof = [*inclusion_proof(TREE, 5, 13), TREE.root()]
    assert _inclusion_failure(5, 13, proof, TREE.root()) is ProofFailure.PROOF_LENGTH


def test_inclusion_wrong_tree_size() -> None:
    proof = inclusion_proof(TREE, 5, 13)
    assert _inclusion_failure(5, 6, proof, TREE.root()) is ProofFailure.PROOF_LENGTH
    assert _inclusion_failure(5, 7, proof, TREE.root()) is ProofFailure.PROOF_LENGTH


def test_tree_size_is_bound_by_the_checkpoint_not_by_the_path() -> None:
    # Index 5 has the same path shape in every tree of 9..16 leaves, and proof hashes are opaque,
    # so the path alone cannot tell 13 from 16 (same in transparency-dev/merkle). Callers must
    # take the size from the signed checkpoint, never from the requester.
    proof = inclusion_proof(TREE, 5, 13)
    verify_inclusion(leaf_hash(ENTRIES[5]), 5, 16, proof, TREE.root())


def test_inclusion_claimed_for_older_root() -> None:
    proof = inclusion_proof(TREE, 5, 13)
    assert _inclusion_failure(5, 13, proof, TREE.root(12)) is ProofFailure.ROOT_MISMATCH


def test_inclusion_index_beyond_tree() -> None:
    assert _inclusion_failure(12, 12, [], TREE.root(12)) is ProofFailure.INDEX_OUT_OF_RANGE
    with pytest.raises(ProofError) as caught:
        verify_inclusion(leaf_hash(b"x"), -1, 13, [], TREE.root())
    assert caught.value.failure is ProofFailure.INDEX_OUT_OF_RANGE


def test_inclusion_malformed_hash_sizes() -> None:
    proof = inclusion_proof(TREE, 5, 13)
    short_leaf = leaf_hash(ENTRIES[5])[:-1]
    assert _inclusion_failure(5, 13, proof, TREE.root(), leaf=short_leaf) is ProofFailure.LEAF_HASH_SIZE
    proof[2] = proof[2] + b"\x00"
    with pytest.raises(ProofError, match=r"proof\[2\] is 33 bytes"):
        verify_inclusion(leaf_hash(ENTRIES[5]), 5, 13, proof, TREE.root())


# --- consistency -------------------------------------------------------------------------------


def test_consistency_flipped_bit_in_shared_hash_breaks_old_root() -> None:
    proof = consistency_proof(TREE, 6, 13)
    proof[0] = _flip(proof[0], 0)  # hash of leaves [4,6): part of both trees
    assert _consistency_failure(6, 13, proof, TREE.root(6), TREE.root()) is ProofFailure.OLD_ROOT_MISMATCH


def test_consistency_flipped_bit_in_new_only_hash_breaks_new_root() -> None:
    proof = consistency_proof(TREE, 6, 13)
    proof[1] = _flip(proof[1], 255)  # hash of leaves [6,8): only in the new tree
    assert _consistency_failure(6, 13, proof, TREE.root(6), TREE.root()) is ProofFailure.NEW_ROOT_MISMATCH


def test_consistency_truncated_and_extended_proof() -> None:
    proof = consistency_proof(TREE, 6, 13)
    args = (TREE.root(6), TREE.root())
    assert _consistency_failure(6, 13, proof[:-1], *args) is ProofFailure.PROOF_LENGTH
    assert _consistency_failure(6, 13, [*proof, proof[-1]], *args) is ProofFailure.PROOF_LENGTH


def test_consistency_wrong_sizes() -> None:
    proof = consistency_proof(TREE, 6, 13)
    assert _consistency_failure(6, 26, proof, TREE.root(6), TREE.root()) is ProofFailure.PROOF_LENGTH
    assert _consistency_failure(5, 13, proof, TREE.root(6), TREE.root()) is ProofFailure.PROOF_LENGTH
    assert _consistency_failure(7, 13, proof, TREE.root(6), TREE.root()) is ProofFailure.PROOF_LENGTH


def test_consistency_swapped_roots() -> None:
    proof = consistency_proof(TREE, 6, 13)
    assert _consistency_failure(6, 13, proof, TREE.root(), TREE.root(6)) is ProofFailure.OLD_ROOT_MISMATCH


@pytest.mark.parametrize(
    ("exported_size", "failure"), [(6, ProofFailure.OLD_ROOT_MISMATCH), (8, ProofFailure.NEW_ROOT_MISMATCH)]
)
def test_rewritten_history_is_inconsistent_with_exported_checkpoint(
    exported_size: int, failure: ProofFailure
) -> None:
    # Someone edits entry 3 and rebuilds the tree: no proof from the rewritten log links the root
    # exported before the edit to the new root. For a power-of-two old size the exported root is
    # the seed itself, so the break shows on the new-root side.
    rewritten = MemoryTree.from_entries([*ENTRIES[:3], b"event-3 (edited)", *ENTRIES[4:]])
    proof = consistency_proof(rewritten, exported_size, 13)
    exported = TREE.root(exported_size)
    assert _consistency_failure(exported_size, 13, proof, exported, rewritten.root()) is failure


def test_rollback_to_a_smaller_tree_is_rejected() -> None:
    failure = _consistency_failure(13, 8, [], TREE.root(), TREE.root(8))
    assert failure is ProofFailure.SIZE_DECREASED


@pytest.mark.parametrize(("size1", "size2"), [(0, 0), (0, 13)])
def test_consistency_from_empty_tree_is_meaningless(size1: int, size2: int) -> None:
    root = TREE.root(size2)
    assert _consistency_failure(size1, size2, [], TREE.root(0), root) is ProofFailure.EMPTY_OLD_TREE


def test_consistency_equal_sizes() -> None:
    verify_consistency(13, 13, [], TREE.root(), TREE.root())
    assert (
        _consistency_failure(13, 13, [TREE.root()], TREE.root(), TREE.root()) is ProofFailure.PROOF_NOT_EMPTY
    )
    assert _consistency_failure(13, 13, [], TREE.root(), TREE.root(12)) is ProofFailure.ROOT_MISMATCH


def test_consistency_growth_with_empty_proof() -> None:
    assert _consistency_failure(6, 13, [], TREE.root(6), TREE.root()) is ProofFailure.EMPTY_PROOF


# --- prover and storage contract --------------------------------------------------------------


@dataclass
class CountingReader:
    """Wraps a MemoryTree and records every read, rejecting any the contract does not allow."""

    tree: MemoryTree
    reads: list[tuple[int, int]] = field(default_factory=list)

    def subtree_hash(self, start: int, size: int) -> bytes:
        assert size >= 2, "single leaves must be read through leaf_hash_at"
        assert size & (size - 1) == 0, (start, size)
        assert start % size == 0, (start, size)
        self.reads.append((start, size))
        return self.tree.subtree_hash(start, size)

    def leaf_hash_at(self, index: int) -> bytes:
        self.reads.append((index, 1))
        return self.tree.leaf_hash_at(index)


BIG = MemoryTree(leaf_hash(i.to_bytes(4, "big")) for i in range(1000))


def test_inclusion_proof_reads_are_logarithmic() -> None:
    reader = CountingReader(BIG)
    for index in range(BIG.size):
        reader.reads.clear()
        proof = inclusion_proof(reader, index, BIG.size)
        # 10 levels for 1000 leaves; the right-edge sibling adds at most popcount(1000)=6 reads.
        assert len(reader.reads) <= 10 + 6, index
        verify_inclusion(BIG.leaf_hash_at(index), index, BIG.size, proof, BIG.root())


@pytest.mark.parametrize(("size1", "size2"), [(1, 1000), (333, 1000), (512, 1000), (999, 1000), (7, 9)])
def test_consistency_proof_reads_are_logarithmic(size1: int, size2: int) -> None:
    reader = CountingReader(BIG)
    proof = consistency_proof(reader, size1, size2)
    assert len(reader.reads) <= 2 * size2.bit_length() + 1
    verify_consistency(size1, size2, proof, BIG.root(size1), BIG.root(size2))


def test_root_reads_one_subtree_per_set_bit() -> None:
    reader = CountingReader(BIG)
    assert root_hash(reader, 1000) == BIG.root()
    assert reader.reads == [(0, 512), (512, 256), (768, 128), (896, 64), (960, 32), (992, 8)]


def test_prover_rejects_impossible_requests() -> None:
    with pytest.raises(MerkleError, match="outside a tree of size 13"):
        inclusion_proof(TREE, 13, 13)
    with pytest.raises(MerkleError, match="non-empty old tree"):
        consistency_proof(TREE, 0, 13)
    with pytest.raises(MerkleError, match="exceeds size2"):
        consistency_proof(TREE, 13, 12)
    with pytest.raises(MerkleError, match="beyond the tree size 13"):
        inclusion_proof(TREE, 3, 20)


def test_memory_tree_only_serves_aligned_perfect_subtrees() -> None:
    with pytest.raises(MerkleError, match="not an aligned perfect subtree"):
        TREE.subtree_hash(2, 4)
    with pytest.raises(MerkleError, match="not an aligned perfect subtree"):
        TREE.subtree_hash(0, 6)
    with pytest.raises(MerkleError, match="beyond the tree size"):
        TREE.subtree_hash(8, 8)
    with pytest.raises(MerkleError, match="leaf hash must be 32 bytes"):
        MemoryTree().append(b"too short")
    assert TREE.leaf_hash_at(12) == leaf_hash(b"event-12")
    assert len(TREE) == 13


class CorruptReader:
    """A store whose node table returns a truncated hash must not yield a plausible proof."""

    def subtree_hash(self, start: int, size: int) -> bytes:
        return b"\x00" * (HASH_SIZE - 1)

    def leaf_hash_at(self, index: int) -> bytes:
        return b"\x00" * HASH_SIZE


def test_corrupt_stored_hash_is_reported() -> None:
    with pytest.raises(MerkleError, match=r"stored hash of \[0, 8\) must be 32 bytes"):
        inclusion_proof(CorruptReader(), 9, 13)
