"""The tree stored as tiles: every node and proof read from tiles equals the one from all nodes, batches write
the same tiles as single appends, proofs read few tiles, and missing or damaged tiles are refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from disclosure.merkle import leaf_hash, root_from_leaf_hashes, verify_consistency, verify_inclusion
from disclosure.proofs import (
    MemoryNodes,
    ProofError,
    append_leaves,
    consistency_plan,
    evaluate,
    frontier_keys,
    inclusion_plan,
    root_plan,
)
from disclosure.tiles import TILE_HEIGHT, TILE_WIDTH, MemoryTiles, TiledNodes, changed_tiles, locate


def _hashes(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _stores(hashes: list[bytes], chunks: list[int]) -> tuple[MemoryNodes, MemoryTiles]:
    nodes, tiles = MemoryNodes(), MemoryTiles()
    at = 0
    for size in [*chunks, len(hashes)]:
        batch = hashes[at:at + size] if size else []
        done = append_leaves(nodes.size, nodes.frontier, batch)
        nodes.nodes.update(done.nodes)
        nodes.size, nodes.frontier = done.size, done.frontier
        tiles.store(done.nodes)
        at += len(batch)
        if at >= len(hashes):
            break
    return nodes, tiles


def test_only_every_fourth_level_is_stored_sixteen_hashes_to_a_row() -> None:
    hashes = _hashes(1000)
    nodes, tiles = _stores(hashes, [])
    assert len(nodes.nodes) == 1994  # every perfect subtree: about two per leaf
    assert len(tiles.tiles) == 68  # 63 tiles of leaves (the last partial), 4 of level 4, 1 of level 8
    assert {len(v) for k, v in tiles.tiles.items() if k[0] == 0} == {TILE_WIDTH * 32, 8 * 32}
    assert locate((5, 3)) == ((1, 0), 6, 1) and locate((0, 17)) == ((0, 1), 1, 0)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 700), st.lists(st.integers(0, 90), max_size=6), st.data())
def test_nodes_and_proofs_read_from_tiles_equal_those_from_all_nodes(n: int, chunks: list[int],
                                                                      data: st.DataObject) -> None:
    hashes = _hashes(n)
    nodes, tiles = _stores(hashes, chunks)
    reader = TiledNodes(tiles)
    assert reader.read_nodes(list(nodes.nodes)) == nodes.nodes
    size = data.draw(st.integers(1, n))
    index = data.draw(st.integers(0, size - 1))
    first = data.draw(st.integers(0, size))
    root = root_from_leaf_hashes(hashes[:size])
    assert evaluate(root_plan(size), TiledNodes(tiles)) == [root]
    tiles.reads = 0
    proof = evaluate(inclusion_plan(index, size), TiledNodes(tiles))
    assert proof == evaluate(inclusion_plan(index, size), nodes)
    assert verify_inclusion(index, size, hashes[index], proof, root)
    assert tiles.reads <= 2 * (size.bit_length() // TILE_HEIGHT + 1)
    tiles.reads = 0
    proof = evaluate(consistency_plan(first, size), TiledNodes(tiles))
    assert verify_consistency(first, size, root_from_leaf_hashes(hashes[:first]), root, proof)
    assert tiles.reads <= 2 * (size.bit_length() // TILE_HEIGHT + 1)


def test_the_right_border_comes_from_the_partial_tiles_alone() -> None:
    for n in (1, 15, 16, 17, 255, 256, 257, 4097, 70000):
        _, tiles = _stores(_hashes(n), [])
        reader = TiledNodes(tiles)
        border = reader.read_nodes(frontier_keys(n))
        assert len(border) == len(frontier_keys(n))
        assert all(len(v) < TILE_WIDTH * 32 for v in reader.tiles.values())


def test_a_truncated_or_missing_tile_is_refused_not_folded() -> None:
    hashes = _hashes(100)
    _, tiles = _stores(hashes, [])
    tiles.tiles[(0, 6)] = tiles.tiles[(0, 6)][:-64]  # drop leaves 98 and 99: 99's sibling is gone
    with pytest.raises(ProofError):
        evaluate(inclusion_plan(99, 100), TiledNodes(tiles))
    del tiles.tiles[(1, 0)]
    with pytest.raises(ProofError):
        evaluate(inclusion_plan(3, 100), TiledNodes(tiles))


def test_an_append_that_does_not_follow_the_stored_tile_is_refused() -> None:
    hashes = _hashes(40)
    done = append_leaves(0, {}, hashes[:20])
    stored = changed_tiles(done.nodes, {})
    later = append_leaves(20, done.frontier, hashes[20:])
    shortened = {k: v[:-32] for k, v in stored.items()}
    with pytest.raises(ProofError):
        changed_tiles(later.nodes, shortened)
    assert changed_tiles(later.nodes, stored)[(0, 1)] == b"".join(hashes[16:32])
