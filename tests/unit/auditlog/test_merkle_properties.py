"""Property tests: the storage-agnostic prover agrees with a literal transcription of RFC 9162's
recursive definitions, everything it emits verifies, and no single-bit change slips through."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from kubepci.auditlog.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    ProofFailure,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

# --- RFC 9162 section 2.1, written as recursively as the RFC states it (test oracle only) --------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = _k(len(leaves))
    return node_hash(rfc_mth(leaves[:k]), rfc_mth(leaves[k:]))


def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _k(len(leaves))
    if m < k:
        return [*rfc_path(m, leaves[:k]), rfc_mth(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), rfc_mth(leaves[:k])]


def rfc_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [rfc_mth(leaves)]
    k = _k(n)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], whole), rfc_mth(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), rfc_mth(leaves[:k])]


# --- strategies ----------------------------------------------------------------------------------

# Distinct entries, with the tree size drawn directly so that large, odd-shaped trees are common.
entry_lists = st.builds(
    lambda count, salt: [salt + i.to_bytes(2, "big") for i in range(count)],
    st.integers(1, 400),
    st.binary(max_size=4),
)


def _failure(check: Callable[..., None], *args: object) -> ProofFailure | None:
    try:
        check(*args)
    except ProofError as exc:
        return exc.failure
    return None


def _flip(value: bytes, bit: int) -> bytes:
    data = bytearray(value)
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


@settings(deadline=None)
@given(entry_lists)
def test_roots_agree_with_rfc_definition(entries: list[bytes]) -> None:
    tree = MemoryTree.from_entries(entries)
    for size in {0, 1, len(entries) // 2, len(entries) - 1, len(entries)}:
        want = rfc_mth(entries[:size])
        assert tree.root(size) == want
        assert root_from_leaf_hashes(leaf_hash(e) for e in entries[:size]) == want


@settings(deadline=None)
@given(entry_lists, st.data())
def test_inclusion_proofs_verify_and_resist_any_bit_flip(entries: list[bytes], data: st.DataObject) -> None:
    tree = MemoryTree.from_entries(entries)
    size = data.draw(st.integers(1, len(entries)), label="tree_size")
    index = data.draw(st.integers(0, size - 1), label="index")
    root = tree.root(size)
    proof = inclusion_proof(tree, index, size)
    assert proof == rfc_path(index, entries[:size])
    verify_inclusion(leaf_hash(entries[index]), index, size, proof, root)
    for element in range(len(proof)):
        bit = data.draw(st.integers(0, 255), label=f"bit in proof[{element}]")
        tampered = [*proof[:element], _flip(proof[element], bit), *proof[element + 1 :]]
        failure = _failure(verify_inclusion, leaf_hash(entries[index]), index, size, tampered, root)
        assert failure is ProofFailure.ROOT_MISMATCH, f"bit {bit} of proof[{element}]"


@settings(deadline=None)
@given(entry_lists, st.data())
def test_consistency_proofs_verify_and_resist_any_bit_flip(entries: list[bytes], data: st.DataObject) -> None:
    tree = MemoryTree.from_entries(entries)
    size2 = data.draw(st.integers(1, len(entries)), label="size2")
    size1 = data.draw(st.integers(1, size2), label="size1")
    root1, root2 = tree.root(size1), tree.root(size2)
    proof = consistency_proof(tree, size1, size2)
    assert proof == rfc_subproof(size1, entries[:size2], True)
    verify_consistency(size1, size2, proof, root1, root2)
    for element in range(len(proof)):
        bit = data.draw(st.integers(0, 255), label=f"bit in proof[{element}]")
        tampered = [*proof[:element], _flip(proof[element], bit), *proof[element + 1 :]]
        failure = _failure(verify_consistency, size1, size2, tampered, root1, root2)
        assert failure in {ProofFailure.OLD_ROOT_MISMATCH, ProofFailure.NEW_ROOT_MISMATCH}, (
            f"bit {bit} of proof[{element}]"
        )


def test_every_bit_of_every_proof_of_a_small_tree_matters() -> None:
    """Exhaustive companion to the sampled properties above, on an 11-leaf tree."""
    entries = [bytes([i]) for i in range(11)]
    tree = MemoryTree.from_entries(entries)
    undetected: list[str] = []
    for size in range(1, 12):
        root = tree.root(size)
        for index in range(size):
            proof = inclusion_proof(tree, index, size)
            for element in range(len(proof)):
                for bit in range(256):
                    tampered = [*proof[:element], _flip(proof[element], bit), *proof[element + 1 :]]
                    try:
                        verify_inclusion(leaf_hash(entries[index]), index, size, tampered, root)
                    except ProofError:
                        continue
                    undetected.append(f"inclusion {index}/{size} proof[{element}] bit {bit}")
        for size1 in range(1, size):
            proof = consistency_proof(tree, size1, size)
            for element in range(len(proof)):
                for bit in range(256):
                    tampered = [*proof[:element], _flip(proof[element], bit), *proof[element + 1 :]]
                    try:
                        verify_consistency(size1, size, tampered, tree.root(size1), root)
                    except ProofError:
                        continue
                    undetected.append(f"consistency {size1}->{size} proof[{element}] bit {bit}")
    assert undetected == []
