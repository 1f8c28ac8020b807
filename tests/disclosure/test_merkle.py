"""The Merkle tree: RFC 6962 known roots, proofs over stored nodes, and RFC 9162 verification (with negatives)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disclosure.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    roots_at,
    verify_consistency,
    verify_inclusion,
)
from disclosure.proofs import (
    MemoryNodes,
    ProofError,
    append_leaves,
    consistency_plan,
    evaluate,
    inclusion_plan,
    node_id,
    node_key,
    plan_keys,
    root_plan,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "notes" / "rfc6962-vectors.md"
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


def tree(n: int) -> tuple[MemoryNodes, list[bytes]]:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    store = MemoryNodes()
    store.append(hashes)
    return store, hashes


def test_known_roots_of_the_rfc6962_example() -> None:
    hashes = [leaf_hash(x) for x in LEAVES]
    for n, root in ROOTS.items():
        assert root_from_leaf_hashes(hashes[:n]).hex() == root
        store = MemoryNodes()
        assert store.append(hashes[:n]).hex() == root
    assert root_from_leaf_hashes([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert {n: r.hex() for n, r in roots_at(hashes, ROOTS).items()} == ROOTS


def test_the_shared_vector_file_says_what_this_test_checks() -> None:
    if not VECTORS.exists():
        pytest.skip("shared notes are not beside this checkout")
    text = VECTORS.read_text("utf-8")
    for root in ROOTS.values():
        assert root in text


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    assert leaf_hash(b"ab") == hashlib.sha256(b"\x00ab").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert leaf_hash(b"\x01" + b"a" * 32 + b"b" * 32) != node_hash(b"a" * 32, b"b" * 32)


def test_appending_in_batches_gives_the_same_nodes_as_one_by_one() -> None:
    _, hashes = tree(100)
    one = MemoryNodes()
    for h in hashes:
        one.append([h])
    batched = MemoryNodes()
    for chunk in (hashes[:1], hashes[1:7], hashes[7:64], hashes[64:]):
        batched.append(chunk)
    assert one.nodes == batched.nodes and one.frontier == batched.frontier
    assert batched.append([]) == root_from_leaf_hashes(hashes)


def test_append_refuses_a_border_that_does_not_fit_the_size() -> None:
    with pytest.raises(ProofError):
        append_leaves(3, {0: b"x" * 32}, [b"y" * 32])


def test_node_ids_round_trip() -> None:
    for key in [(0, 0), (0, 2**40), (20, 5), (63, 1)]:
        assert node_key(node_id(*key)) == key
    assert node_id(63, 1) < 2**63  # fits a signed BIGINT


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8, 9, 31, 64, 100])
def test_every_inclusion_and_consistency_proof_verifies(n: int) -> None:
    store, hashes = tree(n)
    roots = roots_at(hashes, range(n + 1))
    for m in range(n):
        proof = evaluate(inclusion_plan(m, n), store)
        assert verify_inclusion(m, n, hashes[m], proof, roots[n])
    for m in range(n + 1):
        proof = evaluate(consistency_plan(m, n), store)
        assert verify_consistency(m, n, roots[m], roots[n], proof)


def _proof_case(n: int = 13, m: int = 6) -> tuple[list[bytes], list[bytes], dict[int, bytes]]:
    store, hashes = tree(n)
    return evaluate(inclusion_plan(m, n), store), hashes, roots_at(hashes, range(n + 1))


def test_inclusion_proof_with_a_wrong_path_length_fails() -> None:
    proof, hashes, roots = _proof_case()
    assert verify_inclusion(6, 13, hashes[6], proof, roots[13])
    assert not verify_inclusion(6, 13, hashes[6], proof[:-1], roots[13])
    assert not verify_inclusion(6, 13, hashes[6], [*proof, proof[-1]], roots[13])
    assert not verify_inclusion(6, 13, hashes[6], [], roots[13])


def test_inclusion_proof_for_the_wrong_size_or_index_fails() -> None:
    proof, hashes, roots = _proof_case()
    assert not verify_inclusion(6, 12, hashes[6], proof, roots[12])
    assert not verify_inclusion(6, 9, hashes[6], proof, roots[9])
    assert not verify_inclusion(6, 8, hashes[6], proof, roots[8])
    assert not verify_inclusion(7, 13, hashes[6], proof, roots[13])
    assert not verify_inclusion(13, 13, hashes[6], proof, roots[13])
    assert not verify_inclusion(-1, 13, hashes[6], proof, roots[13])


def test_inclusion_proof_with_a_swapped_sibling_fails() -> None:
    proof, hashes, roots = _proof_case()
    swapped = [proof[1], proof[0], *proof[2:]]
    assert not verify_inclusion(6, 13, hashes[6], swapped, roots[13])
    flipped = [*proof[:-1], bytes([proof[-1][0] ^ 1]) + proof[-1][1:]]
    assert not verify_inclusion(6, 13, hashes[6], flipped, roots[13])
    assert not verify_inclusion(6, 13, hashes[5], proof, roots[13])
    assert not verify_inclusion(6, 13, hashes[6], [p[:31] for p in proof], roots[13])


def test_consistency_proof_negatives() -> None:
    store, hashes = tree(21)
    roots = roots_at(hashes, range(22))
    proof = evaluate(consistency_plan(6, 21), store)
    assert verify_consistency(6, 21, roots[6], roots[21], proof)
    assert not verify_consistency(6, 21, roots[6], roots[21], proof[:-1])  # wrong path length
    assert not verify_consistency(6, 21, roots[6], roots[21], [*proof, proof[0]])
    assert not verify_consistency(5, 21, roots[5], roots[21], proof)  # proof for another size
    assert not verify_consistency(6, 20, roots[6], roots[20], proof)
    assert not verify_consistency(6, 21, roots[6], roots[21], [proof[1], proof[0], *proof[2:]])  # swapped
    assert not verify_consistency(6, 21, roots[7], roots[21], proof)  # the old tree was different
    assert not verify_consistency(6, 21, roots[6], roots[20], proof)
    assert not verify_consistency(6, 21, roots[6], roots[21], [])
    assert not verify_consistency(21, 6, roots[21], roots[6], proof)
    assert verify_consistency(21, 21, roots[21], roots[21], [])
    assert not verify_consistency(21, 21, roots[21], roots[20], [])
    assert verify_consistency(0, 21, EMPTY_ROOT, roots[21], [])
    eight = evaluate(consistency_plan(8, 21), store)  # a power of two: its root is implied, not sent
    assert verify_consistency(8, 21, roots[8], roots[21], eight)
    assert not verify_consistency(8, 21, roots[8], roots[21], [roots[8], *eight])


def test_proofs_are_refused_for_sizes_the_tree_lacks() -> None:
    with pytest.raises(ProofError):
        inclusion_plan(5, 5)
    with pytest.raises(ProofError):
        consistency_plan(6, 5)
    store, _ = tree(4)
    with pytest.raises(ProofError):  # a truncated store cannot fake a proof
        evaluate(inclusion_plan(6, 9), store)


@pytest.mark.parametrize("n", [10**3, 10**6, 2**40 + 12345])
def test_proofs_read_a_logarithmic_number_of_nodes(n: int) -> None:
    bound = 2 * n.bit_length() + 2
    assert len(plan_keys(inclusion_plan(n // 3, n))) <= bound
    assert len(plan_keys(inclusion_plan(n - 1, n))) <= bound
    assert len(plan_keys(consistency_plan(n // 3 + 1, n))) <= bound
    assert len(plan_keys(root_plan(n))) <= n.bit_length()


def test_proof_generation_counts_its_reads() -> None:
    store, _ = tree(1000)
    store.reads = 0
    evaluate(inclusion_plan(517, 1000), store)
    evaluate(consistency_plan(300, 1000), store)
    assert 0 < store.reads <= 2 * (2 * 10 + 2)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), n=st.integers(min_value=1, max_value=300))
def test_random_trees_proofs_verify_and_tampering_fails(data: st.DataObject, n: int) -> None:
    store, hashes = tree(n)
    m = data.draw(st.integers(min_value=0, max_value=n - 1), label="index")
    first = data.draw(st.integers(min_value=1, max_value=n), label="first")
    roots = roots_at(hashes, range(n + 1))
    proof = evaluate(inclusion_plan(m, n), store)
    assert verify_inclusion(m, n, hashes[m], proof, roots[n])
    other = data.draw(st.integers(min_value=0, max_value=n - 1), label="other")
    if other != m:
        assert not verify_inclusion(other, n, hashes[m], proof, roots[n]) or hashes[other] == hashes[m]
        assert not verify_inclusion(m, n, hashes[other], proof, roots[n])
    if proof:
        i = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="element")
        bad = [*proof[:i], node_hash(proof[i], proof[i]), *proof[i + 1:]]
        assert not verify_inclusion(m, n, hashes[m], bad, roots[n])
        assert not verify_inclusion(m, n, hashes[m], proof[:i] + proof[i + 1:], roots[n])
    cons = evaluate(consistency_plan(first, n), store)
    assert verify_consistency(first, n, roots[first], roots[n], cons)
    if cons:
        j = data.draw(st.integers(min_value=0, max_value=len(cons) - 1), label="cons_element")
        bad = [*cons[:j], node_hash(cons[j], cons[j]), *cons[j + 1:]]
        assert not verify_consistency(first, n, roots[first], roots[n], bad)
    if first < n:
        assert not verify_consistency(first, n, roots[n], roots[first], cons)
