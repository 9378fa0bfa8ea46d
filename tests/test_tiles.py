"""Tile grid geometry (property tests) and the rolling-band blender."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from poppyscan.blend import Blender, to_percent
from poppyscan.tiles import axis_starts, overlap_px, taper, tile_grid

sizes = st.integers(1, 3000)
tile_sizes = st.sampled_from([32, 64, 96, 128, 256, 512, 1024])
overlaps = st.floats(0, 0.49)


@settings(max_examples=300, deadline=None)
@given(length=sizes, tile=tile_sizes, frac=overlaps)
def test_axis_tiles_cover_stay_inside_and_overlap_as_asked(length, tile, frac):
    ov = overlap_px(tile, frac)
    starts = axis_starts(length, tile, ov)
    size = min(tile, length)
    assert starts[0] == 0
    assert starts == sorted(set(starts))
    assert all(0 <= s and s + size <= length for s in starts)  # inside
    assert starts[-1] + size == length  # reaches the end
    for a, b in zip(starts, starts[1:], strict=False):
        assert a + size - b >= ov  # neighbours share at least the asked overlap: no gaps
    if len(starts) > 1:  # and no more tiles than needed at that stride
        assert len(starts) == -(-(length - tile) // (tile - ov)) + 1


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 400), w=st.integers(1, 400), tile=st.sampled_from([32, 64, 128]), frac=overlaps)
def test_grid_covers_every_pixel_in_row_major_order(h, w, tile, frac):
    ov = overlap_px(tile, frac)
    tiles = tile_grid(h, w, tile_size=tile, overlap=ov)
    cover = np.zeros((h, w), np.int32)
    for t in tiles:
        assert t.row >= 0 and t.col >= 0 and t.row + t.height <= h and t.col + t.width <= w
        cover[t.slices] += 1
    assert cover.min() >= 1
    assert [(t.row, t.col) for t in tiles] == sorted((t.row, t.col) for t in tiles)
    edges = {t.index: t.edges for t in tiles}
    assert all(e[0] for (i, _), e in edges.items() if i == 0)


def test_bad_overlap_is_refused_by_name():
    with pytest.raises(ValueError, match="'overlap' must be in"):
        overlap_px(512, 0.6)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(2, 300), ov=st.integers(0, 64))
def test_taper_ramps_sum_to_one_where_neighbours_overlap_exactly(n, ov):
    ov = min(ov, n // 2)
    w = taper(n, ov, False, False)
    assert w.min() > 0 and w.max() <= 1
    if ov:
        np.testing.assert_allclose(w[n - ov:] + w[:ov], 1.0, atol=1e-6)
    assert (taper(n, ov, True, True) == 1).all()  # raster borders are not tapered


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), tile=st.sampled_from([32, 64]), frac=overlaps,
       value=st.floats(0, 1))
def test_blender_reproduces_a_constant_and_emits_each_row_once_in_order(h, w, tile, frac, value):
    ov = overlap_px(tile, frac)
    rows = []

    def sink(row, prob, valid):
        rows.append(row)
        assert prob.shape == (len(prob), w) and valid.all()
        np.testing.assert_allclose(prob, value, atol=1e-5)
        rows.extend(range(row + 1, row + len(prob)))

    blender = Blender(h, w, tile_size=tile, overlap=ov, sink=sink)
    for t in tile_grid(h, w, tile_size=tile, overlap=ov):
        blender.add(t, np.full((tile, tile), value, np.float32), np.ones((tile, tile), bool))
    blender.finish()
    assert rows == list(range(h))


def test_blender_is_seamless_for_a_smooth_field_and_marks_uncovered_rows_invalid():
    h, w, tile, ov = 200, 150, 64, 16
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = 0.5 + 0.4 * np.sin(xx / 30) * np.cos(yy / 40)
    footprint = (yy < 130) & (xx + yy > 20)  # valid data: above row 130, minus the top-left corner
    out = np.full((h, w), -1.0, np.float32)
    valid_out = np.zeros((h, w), bool)

    def sink(row, prob, valid):
        out[row:row + len(prob)] = prob
        valid_out[row:row + len(prob)] = valid

    blender = Blender(h, w, tile_size=tile, overlap=ov, sink=sink)
    for t in tile_grid(h, w, tile_size=tile, overlap=ov):
        if not footprint[t.slices].any():  # as the reader does: tiles without a valid pixel are skipped
            continue
        blender.add(t, field[t.slices], footprint[t.slices])
    blender.finish()
    assert (valid_out == footprint).all()
    np.testing.assert_allclose(out[footprint], field[footprint], atol=1e-5)


def test_blender_refuses_a_tile_off_its_grid():
    from poppyscan.tiles import Tile

    blender = Blender(300, 300, tile_size=64, overlap=16, sink=lambda *a: None)
    with pytest.raises(ValueError, match="not on this blender's tile grid"):
        blender.add(Tile(10, 0, 64, 64, (0, 0), (False,) * 4), np.zeros((64, 64), np.float32))


def test_blender_memory_is_one_band_not_the_raster():
    blender = Blender(100_000, 3000, tile_size=512, overlap=64, sink=lambda *a: None)
    assert blender._acc.shape == (512, 3000)


def test_to_percent():
    p = np.array([[0.0, 0.004, 0.996, 1.0]], np.float32)
    assert to_percent(p, np.ones_like(p, bool)).tolist() == [[0, 0, 100, 100]]
    assert p.tolist() == [[0.0, 0.004000000189989805, 0.9959999918937683, 1.0]]  # input untouched
