"""The stored form of the Merkle tree: tiles of hashes, in the manner of Go's tlog (sumdb) tiles.

Only nodes at levels that are multiples of `TILE_HEIGHT` are stored, `TILE_WIDTH` to a tile: tile (t, n) holds
the hashes of nodes (t·H, n·W) … (t·H, n·W + w − 1) concatenated, w ≤ W (the last tile of a level is partial
and is rewritten as it fills). Any perfect-subtree node (L, i) is the fold of 2^(L mod H) ≤ W/2 consecutive
hashes of one tile, so a proof that needs O(log n) nodes reads O(log n) tiles (at most two per tile level in
practice) and hashes at most W/2 − 1 extra pairs per node. A batch of appends writes about one row per W
leaves instead of two rows per leaf. H = 4 keeps a proof's extra hashing (≤ 7 per element) well under the
1 ms proof budget in Python; tlog's H = 8 would cost up to 127 per element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from disclosure.merkle import HASH_BYTES, node_hash
from disclosure.proofs import NodeKey, ProofError

TILE_HEIGHT = 4
TILE_WIDTH = 1 << TILE_HEIGHT
TileKey = tuple[int, int]
"""(tile level t, tile index n): the tile of nodes at level t·TILE_HEIGHT, indices n·W … n·W + W − 1."""


class TileReader(Protocol):
    """Reads stored tiles; one call per proof."""

    def read_tiles(self, keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]: ...


def locate(key: NodeKey) -> tuple[TileKey, int, int]:
    """Where node (level, index) lives: its tile, the offset of its first hash there, and how many levels above
    the tile's stored level it sits (it folds 2^rise hashes)."""
    level, index = key
    t, rise = divmod(level, TILE_HEIGHT)
    first = index << rise
    return (t, first >> TILE_HEIGHT), first & (TILE_WIDTH - 1), rise


def tiles_for(keys: Iterable[NodeKey]) -> list[TileKey]:
    """The distinct tiles that hold `keys`."""
    seen: dict[TileKey, None] = {}
    for key in keys:
        seen.setdefault(locate(key)[0], None)
    return list(seen)


def node_from_tiles(key: NodeKey, tiles: Mapping[TileKey, bytes]) -> bytes | None:
    """The hash of node `key` from the tiles read, or None when its tile is missing or too short."""
    tile, offset, rise = locate(key)
    data = tiles.get(tile)
    count = 1 << rise
    if data is None or len(data) < (offset + count) * HASH_BYTES:
        return None
    hashes = [data[i * HASH_BYTES:(i + 1) * HASH_BYTES] for i in range(offset, offset + count)]
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


class TiledNodes:
    """A `NodeReader` over stored tiles: one tile read per proof (or per batch's right border)."""

    def __init__(self, reader: TileReader) -> None:
        self.reader = reader
        self.tiles: dict[TileKey, bytes] = {}

    def read_nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """The hashes of `keys` that the stored tiles hold (the tiles read are kept in `tiles`)."""
        self.tiles.update(self.reader.read_tiles(tiles_for(keys)))
        out = {}
        for key in keys:
            value = node_from_tiles(key, self.tiles)
            if value is not None:
                out[key] = value
        return out


def changed_tiles(new_nodes: Sequence[tuple[NodeKey, bytes]], last: Mapping[TileKey, bytes]
                  ) -> dict[TileKey, bytes]:
    """The full new content of every tile an append changes, from the nodes it produced (in append order,
    as `disclosure.proofs.append_leaves` gives them) and the partial tiles stored before it (`last`)."""
    out: dict[TileKey, bytearray] = {}
    for (level, index), value in new_nodes:
        t, rise = divmod(level, TILE_HEIGHT)
        if rise:
            continue
        key = (t, index >> TILE_HEIGHT)
        data = out.get(key)
        if data is None:
            data = out[key] = bytearray(last.get(key, b""))
        if len(data) != (index & (TILE_WIDTH - 1)) * HASH_BYTES:
            raise ProofError(f"node {(level, index)} does not follow tile {key}'s {len(data) // HASH_BYTES} hashes; "
                             "the stored tiles are truncated or damaged")
        data += value
    return {key: bytes(data) for key, data in out.items()}


class MemoryTiles:
    """Tiles in a dict (tests and the benchmark). Counts tile reads."""

    def __init__(self) -> None:
        self.tiles: dict[TileKey, bytes] = {}
        self.reads = 0

    def read_tiles(self, keys: Sequence[TileKey]) -> Mapping[TileKey, bytes]:
        """The stored tiles among `keys` (counted)."""
        self.reads += len(keys)
        return {k: self.tiles[k] for k in keys if k in self.tiles}

    def store(self, new_nodes: Sequence[tuple[NodeKey, bytes]]) -> None:
        """Write the tiles an append changed."""
        self.tiles.update(changed_tiles(new_nodes, self.tiles))
