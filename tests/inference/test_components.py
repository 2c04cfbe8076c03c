"""Connected components (8-connected) against a flood-fill reference, and small-component removal."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from brainseg_core.inference import keep_largest_component, label_components, remove_small_components


def _flood_fill_labels(mask: np.ndarray) -> np.ndarray:
    """Reference: BFS labelling with 8-connectivity, labels in raster order of first pixel."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    n = 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not labels[y, x]:
                n += 1
                labels[y, x] = n
                queue = deque([(y, x)])
                while queue:
                    cy, cx = queue.popleft()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not labels[ny, nx]:
                                labels[ny, nx] = n
                                queue.append((ny, nx))
    return labels


@pytest.mark.parametrize("density", [0.05, 0.3, 0.45, 0.6])
def test_labels_match_flood_fill(density: float) -> None:
    rng = np.random.default_rng(int(density * 100))
    for shape in [(1, 1), (1, 17), (17, 1), (23, 31), (40, 40)]:
        mask = rng.random(shape) < density
        labels, n = label_components(mask)
        expected = _flood_fill_labels(mask)
        np.testing.assert_array_equal(labels, expected)
        assert n == expected.max()


def test_diagonal_touch_joins_and_gap_separates() -> None:
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal: one component
    mask[3, 3:5] = True  # separate
    labels, n = label_components(mask)
    assert n == 2 and labels[0, 0] == labels[1, 1] == 1 and labels[3, 4] == 2


def test_empty_and_full_masks() -> None:
    assert label_components(np.zeros((4, 6), bool))[1] == 0
    labels, n = label_components(np.ones((4, 6), bool))
    assert n == 1 and (labels == 1).all()
    with pytest.raises(ValueError, match="2-D or 3-D"):
        label_components(np.zeros((2, 2, 2, 2), bool))


def test_3d_components_join_across_slices_including_diagonals() -> None:
    vol = np.zeros((3, 6, 6), bool)
    vol[0, 1, 1] = vol[1, 2, 2] = True  # diagonal neighbours in 3-D: one component
    vol[2, 5, 5] = True  # separate
    labels, n = label_components(vol)
    assert n == 2 and labels[0, 1, 1] == labels[1, 2, 2] == 1 and labels[2, 5, 5] == 2


def test_keep_largest_component_keeps_the_biggest_3d_region() -> None:
    vol = np.zeros((4, 8, 8), bool)
    vol[0:3, 1:3, 1:3] = True  # 12 voxels over three slices
    vol[3, 5:8, 5:8] = True  # 9 voxels on one slice
    kept = keep_largest_component(vol)
    assert kept.sum() == 12 and kept[0:3, 1:3, 1:3].all() and not kept[3].any()
    assert not keep_largest_component(np.zeros((2, 3, 3), bool)).any()


def test_remove_small_components_keeps_at_least_min_area() -> None:
    mask = np.zeros((10, 10), bool)
    mask[0, 0:3] = True  # 3 px
    mask[5:7, 5:7] = True  # 4 px
    assert remove_small_components(mask, 4).sum() == 4
    assert remove_small_components(mask, 3).sum() == 7
    assert remove_small_components(mask, 5).sum() == 0
    kept = remove_small_components(mask, 0)
    np.testing.assert_array_equal(kept, mask)
    assert kept is not mask


def test_the_most_confident_region_outweighs_a_larger_faint_one() -> None:
    masks = np.zeros((2, 12, 12), bool)
    prob = np.zeros((2, 12, 12))
    masks[0, :6, :6] = True  # 36 px at p = 0.5: the largest
    prob[0, :6, :6] = 0.5
    masks[1, 8:12, 8:12] = True  # 16 px at p = 0.95: the most confident (16 * 0.95**4 > 36 * 0.5**4)
    prob[1, 8:12, 8:12] = 0.95
    np.testing.assert_array_equal(keep_largest_component(masks), masks & (np.arange(2) == 0)[:, None, None])
    confident = keep_largest_component(masks, prob)
    np.testing.assert_array_equal(confident, masks & (np.arange(2) == 1)[:, None, None])
    # the stores' uint8 scale chooses the same region, where p ** 4 in uint8 would wrap and choose
    # the other (255 ** 4 = 1, 102 ** 4 = 16 modulo 256: 16 * 1 < 36 * 16)
    prob[0, :6, :6], prob[1, 8:12, 8:12] = 0.4, 1.0
    stored = np.round(prob * 255).astype(np.uint8)
    assert (stored[0, 0, 0], stored[1, 8, 8]) == (102, 255)
    np.testing.assert_array_equal(keep_largest_component(masks, stored), confident)
    np.testing.assert_array_equal(keep_largest_component(masks, prob), confident)
    # a linear weight (the most probability) would still keep the larger one: the power matters
    assert 36 * 0.5 > 16 * 0.95
    with pytest.raises(ValueError, match="do not match"):
        keep_largest_component(masks, prob[:1])
