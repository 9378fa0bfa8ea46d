"""Windowed polygonisation: seams, statistics, holes, minimum area, nodata, streaming == whole."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import shapely
from affine import Affine

from poppyscan.blend import NODATA
from poppyscan.vectorize import Vectorizer, fill_holes, to_crs


def run(u8: np.ndarray, *, window_rows=256, chunk=37, radius=0, min_area=0.0, max_hole=0.0, thr=50):
    """Feed ``u8`` (percent, 255 = nodata) in uneven chunks, as the blender does."""
    h, w = u8.shape
    vec = Vectorizer(h, w, window_rows=window_rows, threshold_pct=thr, morph_radius_px=radius,
                     min_area_px=min_area, max_hole_px=max_hole)
    for r in range(0, h, chunk):
        part = u8[r:r + chunk]
        vec.push(r, part)
    return vec.finish()


def canvas(h=700, w=300):
    return np.zeros((h, w), np.uint8)


def test_blob_across_two_window_seams_is_one_polygon_with_exact_area_and_merged_stats():
    u8 = canvas()
    u8[200:560, 40:100] = 60  # crosses seams at rows 256 and 512
    u8[530:540, 50:60] = 97  # the maximum sits in the third window
    res = run(u8)
    assert len(res) == 1
    assert res.geoms[0].area == pytest.approx(360 * 60)
    assert res.count[0] == 360 * 60 and res.prob_max[0] == 97
    assert res.prob_sum[0] == 360 * 60 * 60 + 100 * 37


def test_u_shape_joined_only_below_the_seam_is_one_polygon():
    u8 = canvas()
    u8[150:300, 20:40] = 80
    u8[150:300, 100:120] = 80
    u8[280:300, 20:120] = 80  # the bottom of the U is in window 2
    res = run(u8)
    assert len(res) == 1 and res.geoms[0].area == pytest.approx(2 * 150 * 20 + 20 * 60)


def test_separate_blobs_touching_the_same_seam_stay_separate():
    u8 = canvas()
    u8[240:270, 10:30] = 80
    u8[240:270, 31:50] = 80  # one empty column between them
    u8[250:256, 100:120] = 80  # ends exactly at the seam
    u8[256:262, 121:140] = 80  # starts at the seam, diagonal neighbour only
    res = run(u8)
    assert sorted(g.area for g in res.geoms) == [114, 120, 570, 600]


@pytest.mark.parametrize("seed", range(4))
def test_streaming_windows_equal_one_whole_window(seed):
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((600, 260)).astype(np.float32), (0, 0), 6)
    u8 = (np.clip((noise - noise.mean()) / noise.std() * 30 + 40, 0, 100)).astype(np.uint8)
    u8[:, :12] = NODATA
    whole = run(u8, window_rows=4096, radius=1, chunk=600)
    windowed = run(u8, window_rows=256, radius=1, chunk=53)
    assert len(windowed) == len(whole) > 3
    a = shapely.union_all(windowed.geoms)
    b = shapely.union_all(whole.geoms)
    # pixel sets are identical; outlines differ only by where the 0.75 px simplification put vertices
    assert sorted(windowed.count) == sorted(whole.count)
    assert a.symmetric_difference(b).area < 0.01 * b.area
    assert sorted(windowed.prob_max) == sorted(whole.prob_max)


def test_morphology_never_grows_into_nodata():
    u8 = canvas(100, 100)
    u8[20:80, 20:50] = 90
    u8[20:80, 51:80] = 90  # a 1 px gap that closing would fill...
    u8[:, 50] = NODATA  # ...but it is nodata
    res = run(u8, radius=1)
    assert len(res) == 2
    nodata_col = shapely.box(50, 0, 51, 100)
    assert all(g.intersection(nodata_col).area == 0 for g in res.geoms)


def test_small_holes_filled_big_holes_kept_small_pieces_dropped():
    u8 = canvas(200, 200)
    u8[20:120, 20:120] = 90
    u8[40:42, 40:42] = 0  # 4 px hole
    u8[60:90, 60:90] = 0  # 900 px hole
    u8[150:153, 150:153] = 90  # 9 px speck
    res = run(u8, min_area=20, max_hole=10)
    assert len(res) == 1
    assert len(res.geoms[0].interiors) == 1
    assert res.geoms[0].area == pytest.approx(100 * 100 - 900)


def test_fill_holes_threshold():
    ring = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(4, 4), (5, 4), (5, 5), (4, 5)]])
    assert fill_holes(ring, 2).area == 100 and fill_holes(ring, 0.5).area == 99


def test_empty_and_full_rasters():
    assert len(run(canvas(300, 40))) == 0
    full = np.full((300, 40), 70, np.uint8)
    res = run(full)
    assert len(res) == 1 and res.geoms[0].area == 300 * 40


def test_rows_must_arrive_in_order():
    vec = Vectorizer(10, 10, window_rows=256)
    with pytest.raises(ValueError, match="rows must arrive in order"):
        vec.push(3, np.zeros((2, 10), np.uint8))


def test_to_crs_maps_pixel_corners_through_the_geotransform():
    t = Affine(0.05, 0, 400000, 0, -0.05, 2800000)
    (g,) = to_crs([shapely.box(0, 0, 20, 10)], t)
    assert g.bounds == pytest.approx((400000, 2799999.5, 400001, 2800000))


@pytest.mark.parametrize("seed", range(3))
def test_boxes_and_windows_match_a_whole_raster_reference(seed):
    """Scattered blobs (many boxes) + nodata: same components as morphology + labelling on the whole."""
    rng = np.random.default_rng(seed)
    u8 = (rng.random((700, 500)) * 40).astype(np.uint8)
    for _ in range(60):
        y, x, r = rng.integers(0, 700), rng.integers(0, 500), rng.integers(1, 12)
        cv2.circle(u8, (int(x), int(y)), int(r), int(rng.integers(50, 101)), -1)
    u8[rng.random(u8.shape) < 0.01] = 90  # speckle for the opening to remove
    u8[300:320, :] = NODATA
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    ref = cv2.inRange(u8, 50, 100)
    ref = cv2.morphologyEx(cv2.morphologyEx(ref, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    ref &= cv2.compare(u8, NODATA, cv2.CMP_NE)
    n, _, stats, _ = cv2.connectedComponentsWithStats(ref, connectivity=4)
    expected = sorted(int(a) for a in stats[1:, cv2.CC_STAT_AREA] if a >= 5)
    got = run(u8, window_rows=256, radius=1, min_area=5, chunk=61)
    assert sorted(got.count.tolist()) == expected


def band_parts(u8: np.ndarray, bounds: list[int], *, window_rows=256, radius=1, chunk=41, **kw):
    """Vectorise ``u8`` as independent bands ``[bounds[i], bounds[i+1])``, each fed its halo rows."""
    from poppyscan.vectorize import VectorParts

    h, w = u8.shape
    parts = []
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
        vec = Vectorizer(h, w, window_rows=window_rows, threshold_pct=50, morph_radius_px=radius,
                         start=r0, stop=r1, **kw)
        lo = max(0, r0 - vec.halo)
        for r in range(lo, h, chunk):  # rows past the band's halo are ignored by the vectoriser
            vec.push(r, u8[r:r + chunk])
        arrays = vec.partial().to_arrays()  # through the journal's serialisation
        parts.append(VectorParts.from_arrays({k: v.copy() for k, v in arrays.items()}))
    return parts


@pytest.mark.parametrize("seed", range(3))
def test_bands_merged_equal_one_vectoriser_exactly(seed):
    from poppyscan.vectorize import merge_parts

    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((1100, 240)).astype(np.float32), (0, 0), 7)
    u8 = (np.clip((noise - noise.mean()) / noise.std() * 30 + 40, 0, 100)).astype(np.uint8)
    u8[500:530, :] = 90  # a plot across the band seam at row 512
    u8[:, :10] = NODATA
    whole = run(u8, window_rows=256, radius=1, min_area=6, max_hole=3, chunk=600)
    merged = merge_parts(band_parts(u8, [0, 512, 768, 1100], min_area_px=6, max_hole_px=3),
                         min_area_px=6, max_hole_px=3)
    assert len(merged) == len(whole) > 3
    assert merged.count.tolist() == whole.count.tolist()
    assert merged.prob_sum.tolist() == whole.prob_sum.tolist()
    assert merged.prob_max.tolist() == whole.prob_max.tolist()
    for a, b in zip(merged.geoms, whole.geoms, strict=True):
        assert a.equals_exact(b, 0)


def test_band_outside_the_grid_is_refused():
    with pytest.raises(ValueError, match="inside the grid"):
        Vectorizer(100, 10, window_rows=256, start=50, stop=120)
