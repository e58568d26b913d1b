"""Near-duplicate finder across splits by perceptual hash (``imagehash.phash``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

from pulmo.cxr.preprocess import to_uint8


@dataclass(frozen=True)
class DuplicatePair:
    """Two images whose 64-bit perceptual hashes differ in ``distance`` bits."""

    a: str
    b: str
    distance: int


def phash(gray: np.ndarray, hash_size: int = 8) -> imagehash.ImageHash:
    """Perceptual (DCT) hash of a grayscale ``(H, W)`` image in [0, 1]."""
    return imagehash.phash(Image.fromarray(to_uint8(gray)), hash_size=hash_size)


def find_duplicates(ids: Sequence[str], grays: Sequence[np.ndarray] | Callable[[int], np.ndarray],
                    max_distance: int = 4) -> list[DuplicatePair]:
    """All pairs of images whose hashes differ in at most ``max_distance`` bits (of 64).

    ``grays`` is a list of images or a function ``i -> image`` (so large sets need not sit
    in memory). Pairs are ordered as in ``ids``. A resized, re-encoded or slightly
    brightened copy stays within a few bits. Chest X-rays resemble each other, so unrelated
    images can come within 6-10 bits: on covid19_3class, 4 finds exactly the manifest's 8
    train->val leaks and nothing across classes.
    """
    get = grays if callable(grays) else grays.__getitem__
    hashes = np.stack([phash(get(i)).hash.reshape(-1) for i in range(len(ids))]).astype(np.uint8)
    dist = (hashes[:, None, :] != hashes[None, :, :]).sum(-1)
    i, j = np.nonzero(np.triu(dist <= max_distance, k=1))
    return [DuplicatePair(ids[a], ids[b], int(dist[a, b])) for a, b in zip(i, j)]


def leaked(pairs: Sequence[DuplicatePair], split_of: dict[str, str], held_out: str = "val") -> set[str]:
    """Ids in the ``held_out`` split with a near-duplicate in another split (the leaks to drop)."""
    out = set()
    for p in pairs:
        sa, sb = split_of[p.a], split_of[p.b]
        if sa != sb:
            if sa == held_out:
                out.add(p.a)
            if sb == held_out:
                out.add(p.b)
    return out
