"""The published transparency-dev/merkle vectors are the oracle for our RFC 9162 code.

Every probe file is run (verification semantics, including all the error cases), and the
reference-tree KATs check hashing, roots for every size and that OUR prover emits exactly the
published proof arrays.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from kubepci.auditlog.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    nodes_completed_by_append,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path("../shared/testdata/transparency-dev-merkle")
INCLUSION_FILES = sorted(p.relative_to(VECTORS).as_posix() for p in VECTORS.glob("inclusion/**/*.json"))
CONSISTENCY_FILES = sorted(p.relative_to(VECTORS).as_posix() for p in VECTORS.glob("consistency/**/*.json"))
REFERENCE: dict[str, Any] = json.loads((VECTORS / "reference_tree.json").read_text())
LEAVES = [bytes.fromhex(h) for h in REFERENCE["leaf_inputs_hex"]]


def _b64(value: str) -> bytes:
    return base64.b64decode(value)


def _proof(value: list[str] | None) -> list[bytes]:
    return [_b64(item) for item in value or []]


def _load(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / relative).read_text())
    return data


def test_all_published_probe_files_are_found() -> None:
    # SOURCE.txt: 98 inclusion + 98 consistency files were copied.
    assert len(INCLUSION_FILES) == 98
    assert len(CONSISTENCY_FILES) == 98
    assert "inclusion/single-entry/matching-root-and-leaf.json" in INCLUSION_FILES
    assert "consistency/additional/sizes-are-equal-zero-and-proof-is-empty.json" in CONSISTENCY_FILES


@pytest.mark.parametrize("relative", INCLUSION_FILES)
def test_inclusion_probe(relative: str) -> None:
    case = _load(relative)
    args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], _proof(case["proof"]))
    root = _b64(case["root"])
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args, root)
    else:
        verify_inclusion(*args, root)
        assert root_from_inclusion_proof(*args) == root


@pytest.mark.parametrize("relative", CONSISTENCY_FILES)
def test_consistency_probe(relative: str) -> None:
    case = _load(relative)
    size1, size2 = case["size1"], case["size2"]
    proof = _proof(case["proof"])
    root1, root2 = _b64(case["root1"]), _b64(case["root2"])
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, proof, root1, root2)
    else:
        verify_consistency(size1, size2, proof, root1, root2)
        assert root_from_consistency_proof(size1, size2, proof, root1) == root2


@pytest.mark.parametrize("kat", REFERENCE["hasher_kats"], ids=lambda kat: kat["desc"])
def test_hasher_kat(kat: dict[str, str]) -> None:
    want = bytes.fromhex(kat["want"])
    if kat["op"] == "empty_root":
        assert want == EMPTY_ROOT
        assert root_from_leaf_hashes([]) == EMPTY_ROOT
    elif kat["op"] == "hash_leaf":
        assert leaf_hash(bytes.fromhex(kat["input_hex"])) == want
    else:
        assert node_hash(bytes.fromhex(kat["left_hex"]), bytes.fromhex(kat["right_hex"])) == want


@pytest.mark.parametrize("size", range(len(REFERENCE["root_hashes_by_size_hex"])))
def test_reference_root_for_every_size(size: int) -> None:
    want = bytes.fromhex(REFERENCE["root_hashes_by_size_hex"][size])
    full = MemoryTree.from_entries(LEAVES)
    assert root_from_leaf_hashes(leaf_hash(leaf) for leaf in LEAVES[:size]) == want
    assert root_hash(full, size) == want
    assert MemoryTree.from_entries(LEAVES[:size]).root() == want


def test_reference_node_hashes_are_the_stored_subtrees() -> None:
    tree = MemoryTree.from_entries(LEAVES)
    for level, hashes in enumerate(REFERENCE["node_hashes_by_level_hex"]):
        width = 1 << level
        stored = [tree.subtree_hash(i * width, width).hex() for i in range(len(hashes))]
        assert stored == hashes, f"level {level}"


def test_append_reports_every_completed_subtree() -> None:
    tree = MemoryTree.from_entries(LEAVES[:7])
    levels = REFERENCE["node_hashes_by_level_hex"]
    nodes = nodes_completed_by_append(tree, 7, leaf_hash(LEAVES[7]))
    # The 8th leaf completes the pair (6,7), the quad [4,8) and the whole tree [0,8).
    assert [(level, index, value.hex()) for level, index, value in nodes] == [
        (0, 7, levels[0][7]),
        (1, 3, levels[1][3]),
        (2, 1, levels[2][1]),
        (3, 0, levels[3][0]),
    ]


@pytest.mark.parametrize(
    "case", REFERENCE["inclusion_proofs_hex"], ids=lambda c: f"leaf{c['leaf_index']}-size{c['tree_size']}"
)
def test_prover_emits_published_inclusion_proof(case: dict[str, Any]) -> None:
    tree = MemoryTree.from_entries(LEAVES)
    index, size = case["leaf_index"], case["tree_size"]
    proof = inclusion_proof(tree, index, size)
    assert [item.hex() for item in proof] == case["proof"]
    verify_inclusion(leaf_hash(LEAVES[index]), index, size, proof, tree.root(size))


@pytest.mark.parametrize(
    "case", REFERENCE["consistency_proofs_hex"], ids=lambda c: f"{c['size1']}-to-{c['size2']}"
)
def test_prover_emits_published_consistency_proof(case: dict[str, Any]) -> None:
    tree = MemoryTree.from_entries(LEAVES)
    size1, size2 = case["size1"], case["size2"]
    proof = consistency_proof(tree, size1, size2)
    assert [item.hex() for item in proof] == case["proof"]
    verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))
