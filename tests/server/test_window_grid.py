"""The fixed grid of encoder windows: coverage, overlap, lookups and limits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slidesam.server.engine.window_grid import WindowGrid, WindowIndex
from slidesam.server.errors import InvalidArgument
from slidesam.server.slides.regions import Rect

grids = st.builds(
    WindowGrid,
    bounds=st.builds(
        Rect, st.floats(-5000, 5000), st.floats(-5000, 5000), st.floats(64, 3000), st.floats(64, 3000)
    ),
    downsample=st.sampled_from([0.5, 1.0, 2.004008016032064, 4.0, 16.0]),
    size=st.sampled_from([64, 100, 256]),
    overlap=st.sampled_from([0, 16, 32]),
)


def _edges(grid: WindowGrid, axis: str) -> list[tuple[float, float]]:
    along = [grid.window(WindowIndex(i, 0) if axis == "x" else WindowIndex(0, i)) for i in range(grid.columns if axis == "x" else grid.rows)]
    return [(r.x, r.right) if axis == "x" else (r.y, r.bottom) for r in along]


@settings(max_examples=150, deadline=None)
@given(grids)
def test_windows_lie_inside_cover_the_image_and_overlap_by_at_least_the_overlap(grid):
    bounds, ds = grid.bounds, grid.downsample
    for axis, start, extent in (("x", bounds.x, bounds.width), ("y", bounds.y, bounds.height)):
        spans = _edges(grid, axis)
        whole = math.floor(extent / ds + 1e-9) * ds
        assert spans[0][0] == pytest.approx(start)
        assert spans[-1][1] == pytest.approx(start + whole)
        for low, high in spans:
            assert start - 1e-6 <= low < high <= start + extent + 1e-6
            assert high - low == pytest.approx(min(grid.size, whole / ds) * ds)
        for (low, high), (next_low, next_high) in zip(spans, spans[1:]):
            assert next_low > low and next_high > high
            assert high - next_low >= grid.overlap * ds - 1e-6
        if len(spans) > 1:  # no more windows than needed: dropping the last would leave a gap
            assert spans[-2][1] < start + whole - 1e-6


@settings(max_examples=100, deadline=None)
@given(grids, st.floats(0, 1), st.floats(0, 1), st.floats(0.001, 0.5), st.floats(0.001, 0.5))
def test_overlapping_containing_and_nearest_agree_with_the_window_rectangles(grid, fx, fy, fw, fh):
    b = grid.bounds
    rect = Rect(b.x + fx * b.width, b.y + fy * b.height, fw * b.width, fh * b.height)
    brute = [
        index for index in grid.indices()
        if (w := grid.window(index)).x < rect.right and rect.x < w.right and w.y < rect.bottom and rect.y < w.bottom
    ]
    assert grid.overlapping(rect) == brute
    x, y = rect.x, rect.y
    containing = grid.containing(x, y)
    assert containing == [i for i in grid.indices() if (w := grid.window(i)).x <= x <= w.right and w.y <= y <= w.bottom]
    nearest = grid.nearest(x, y)  # per axis, the window whose centre is nearest
    assert _centre_distance(grid, nearest, x, y) == tuple(
        min(_centre_distance(grid, i, x, y)[axis] for i in grid.indices()) for axis in (0, 1)
    )


def _centre_distance(grid: WindowGrid, index: WindowIndex, x: float, y: float) -> tuple[float, float]:
    window = grid.window(index)
    return abs(window.x + window.width / 2 - x), abs(window.y + window.height / 2 - y)


def test_a_known_grid():
    grid = WindowGrid(Rect(0, 0, 5120, 3584), 2.0)
    assert (grid.columns, grid.rows, grid.stride) == (3, 2, 768)
    assert grid.window(WindowIndex(1, 0)) == Rect(1536, 0, 2048, 2048)
    assert grid.window(WindowIndex(2, 1)) == Rect(3072, 1536, 2048, 2048)  # the last moved inward
    assert grid.key == "ds2-w1024-o256"
    with pytest.raises(InvalidArgument, match="outside the 3 x 2 grid"):
        grid.window(WindowIndex(3, 0))


def test_grid_keys_tell_close_resolutions_apart():
    bounds = Rect(0, 0, 4000, 4000)
    keys = {WindowGrid(bounds, ds).key for ds in (2.0, 2.0000001, 2.0000002, 1 / 0.499)}
    assert len(keys) == 4


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"downsample": 0.0}, "positive finite"),
        ({"downsample": math.nan}, "positive finite"),
        ({"downsample": 5000.0}, "smaller than one pixel"),
        ({"downsample": 1e-4}, "choose a coarser resolution"),
        ({"downsample": 1.0, "size": 32}, "window size"),
        ({"downsample": 1.0, "overlap": 600}, "grid overlap"),
    ],
)
def test_grids_beyond_limits_are_refused(arguments, message):
    with pytest.raises(InvalidArgument, match=message):
        WindowGrid(Rect(0, 0, 4000, 3000), **arguments)
