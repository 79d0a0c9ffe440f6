"""Reading regions of synthetic slides and arrays at a requested resolution; the slide-id jail."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from slidesam.server.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from slidesam.server.slides.array_source import ArrayImageSource
from slidesam.server.slides.read_plan import resolve_downsample
from slidesam.server.slides.regions import Rect, Resolution
from slidesam.server.slides.store import SlideStore
from slidesam.lab.synthetic.slide_writer import SyntheticSlide, write_synthetic_slide

WIDTH, HEIGHT = 4096, 3072


@pytest.fixture(scope="module")
def slide_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="module")
def synthetic(slide_root: Path) -> SyntheticSlide:
    (slide_root / "cases").mkdir()
    return write_synthetic_slide(
        slide_root / "cases" / "case1.svs",
        width=WIDTH,
        height=HEIGHT,
        levels=(1, 4),
        object_center=(2600.0, 1650.0),
        object_radii=(500.0, 320.0),
        seed=3,
    )


@pytest.fixture
def store(slide_root: Path, synthetic: SyntheticSlide) -> SlideStore:
    return SlideStore(slide_root)


def _object_iou(synthetic: SyntheticSlide, region) -> float:
    dark = region.pixels[..., 1] < 125
    expected = synthetic.object_mask(region.rect, region.downsample)
    assert expected.shape == dark.shape
    return (dark & expected).sum() / (dark | expected).sum()


def test_slide_opens_with_vendor_mpp_and_objective_power(store: SlideStore) -> None:
    source = store.open("cases/case1.svs")
    assert source.vendor == "aperio"
    assert (source.width, source.height) == (WIDTH, HEIGHT)
    assert source.mpp == pytest.approx(0.25)
    assert source.objective_power == pytest.approx(40)
    assert source.level_downsamples == pytest.approx((1.0, 4.0))
    assert store.open("cases/case1.svs") is source


def test_object_mask_rasterises_the_object_geometry(synthetic: SyntheticSlide) -> None:
    geometry = synthetic.object_geometry
    assert geometry.is_valid
    left, top, right, bottom = geometry.bounds
    rect = Rect(left - 10, top - 10, right - left + 20, bottom - top + 20)
    assert synthetic.object_mask(rect, 1.0).sum() == pytest.approx(geometry.area, rel=0.005)
    assert synthetic.object_mask(rect, 8.0).sum() * 64 == pytest.approx(geometry.area, rel=0.03)


def test_a_changed_file_is_reopened_with_a_new_cache_key(tmp_path: Path) -> None:
    write_synthetic_slide(tmp_path / "s.svs", 512, 512, levels=(1,), object_center=(256, 256),
                          object_radii=(100, 80))
    store = SlideStore(tmp_path)
    first = store.open("s.svs")
    stat = (tmp_path / "s.svs").stat()
    os.utime(tmp_path / "s.svs", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = store.open("s.svs")
    assert second is not first and second.cache_key != first.cache_key
    assert str(stat.st_size) in second.cache_key


def test_open_handles_are_bounded_and_shared_between_threads(tmp_path: Path) -> None:
    for name in ("a.svs", "b.svs"):
        write_synthetic_slide(tmp_path / name, 512, 512, levels=(1,), object_center=(256, 256),
                              object_radii=(100, 80))
    store = SlideStore(tmp_path, max_open=1)

    def read(index: int) -> tuple[int, ...]:
        source = store.open("ab"[index % 2] + ".svs")
        return source.read_region(Rect(100, 100, 300, 300), 2).pixels.shape

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(read, range(16))) == {(150, 150, 3)}


@pytest.mark.parametrize(
    ("resolution", "expected"),
    [
        (Resolution("mpp", 1.0), 4.0),
        (Resolution("magnification", 10), 4.0),
        (Resolution("downsample", 3.5), 3.5),
        (Resolution("fit"), 4000 / 1024),
    ],
)
def test_resolve_downsample(store: SlideStore, resolution: Resolution, expected: float) -> None:
    source = store.open("cases/case1.svs")
    rect = Rect(10, 20, 4000, 2000)
    assert resolve_downsample(source, rect, resolution, 1024) == pytest.approx(expected)


def test_fit_never_enlarges(store: SlideStore) -> None:
    source = store.open("cases/case1.svs")
    assert resolve_downsample(source, Rect(0, 0, 300, 200), Resolution("fit"), 1024) == 1.0


@pytest.mark.parametrize("kind", ["mpp", "magnification", "downsample"])
@pytest.mark.parametrize("value", [math.nan, math.inf, 0.0, -2.0])
def test_resolve_downsample_refuses_bad_values(store: SlideStore, kind: str, value: float) -> None:
    source = store.open("cases/case1.svs")
    with pytest.raises(InvalidArgument, match=kind):
        resolve_downsample(source, Rect(0, 0, 100, 100), Resolution(kind, value), 1024)


def test_resolve_downsample_needs_known_mpp_or_objective_power() -> None:
    source = ArrayImageSource(np.zeros((10, 10, 3), np.uint8), "sha256:" + "0" * 64)
    rect = Rect(0, 0, 10, 10)
    with pytest.raises(InvalidArgument, match="downsample or a magnification"):
        resolve_downsample(source, rect, Resolution("mpp", 0.5), 1024)
    with pytest.raises(InvalidArgument, match="downsample or a resolution in µm/px"):
        resolve_downsample(source, rect, Resolution("magnification", 5), 1024)
    with pytest.raises(InvalidArgument, match="unknown resolution kind"):
        resolve_downsample(source, rect, Resolution("zoom", 2), 1024)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="width"):
        resolve_downsample(source, Rect(0, 0, 0, 10), Resolution("fit"), 1024)


def test_read_at_full_resolution_shows_the_object_where_it_is(
    store: SlideStore, synthetic: SyntheticSlide
) -> None:
    region = store.open("cases/case1.svs").read_region(Rect(1900.0, 1200.0, 1000.0, 700.0), 1.0)
    assert region.pixels.shape == (700, 1000, 3) and region.pixels.dtype == np.uint8
    assert region.rect == Rect(1900, 1200, 1000, 700)
    assert region.downsample == 1.0
    assert _object_iou(synthetic, region) > 0.9


def test_read_between_pyramid_levels(store: SlideStore, synthetic: SyntheticSlide) -> None:
    requested = Rect(1501.5, 1003.25, 2400.0, 1500.0)
    region = store.open("cases/case1.svs").read_region(requested, 6.0)
    rect = region.rect
    # snapped outward to the grid of the level read (downsample 4)
    assert rect.x <= requested.x and rect.right >= requested.right
    assert rect.y <= requested.y and rect.bottom >= requested.bottom
    assert rect.x % 4 == 0 and rect.width % 4 == 0 and rect.width - requested.width <= 8
    assert region.pixels.shape == (round(rect.height / 6), round(rect.width / 6), 3)
    assert region.downsample == pytest.approx(rect.width / region.pixels.shape[1])
    assert region.downsample == pytest.approx(6.0, rel=0.01)
    assert _object_iou(synthetic, region) > 0.9


@pytest.mark.parametrize("downsample", [0.5, 1.0, 3.0, 4.0, 6.0, 10.0])
def test_plan_read_predicts_the_read_and_is_stable(store: SlideStore, downsample: float) -> None:
    source = store.open("cases/case1.svs")
    requested = Rect(1000.7, 900.2, 1203.3, 801.9)
    rect, shape = source.plan_read(requested, downsample)
    region = source.read_region(requested, downsample)
    assert (rect, shape) == (region.rect, region.pixels.shape[:2])
    assert source.plan_read(rect, downsample) == (rect, shape)


def test_plan_read_raises_what_read_region_raises(store: SlideStore) -> None:
    source = store.open("cases/case1.svs")
    with pytest.raises(InvalidArgument, match="outside the slide"):
        source.plan_read(Rect(WIDTH, 0, 100, 100), 1.0)
    with pytest.raises(ResourceExhausted):
        source.plan_read(Rect(0, 0, WIDTH, HEIGHT), 0.5)


def test_read_enlarging(store: SlideStore, synthetic: SyntheticSlide) -> None:
    region = store.open("cases/case1.svs").read_region(Rect(2000, 1400, 400, 300), 0.5)
    assert region.pixels.shape == (600, 800, 3)
    assert _object_iou(synthetic, region) > 0.9


def test_a_far_edge_rounded_by_a_pixel_is_clamped(store: SlideStore) -> None:
    region = store.open("cases/case1.svs").read_region(Rect(WIDTH - 100, HEIGHT - 50, 100.8, 50.6), 1)
    assert region.rect == Rect(WIDTH - 100, HEIGHT - 50, 100, 50)
    assert region.pixels.shape == (50, 100, 3)


@pytest.mark.parametrize(
    ("rect", "message"),
    [
        (Rect(WIDTH + 10, 0, 100, 100), "outside the slide"),
        (Rect(WIDTH - 50, 100, 100, 100), r"outside the slide \(4096 x 3072\)"),
        (Rect(-5, 100, 100, 100), "outside the slide"),
        (Rect(100, HEIGHT - 10, 100, 20), "outside the slide"),
        (Rect(100, 100, 0, 100), "width must be positive"),
        (Rect(100, 100, 100, -1), "height must be positive"),
        (Rect(math.nan, 100, 100, 100), "x must be a finite number"),
        (Rect(100, 100, math.inf, 100), "width must be a finite number"),
    ],
)
def test_bad_rects_are_refused(store: SlideStore, rect: Rect, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        store.open("cases/case1.svs").read_region(rect, 2.0)


@pytest.mark.parametrize("downsample", [0.0, -1.0, math.nan])
def test_bad_downsamples_are_refused(store: SlideStore, downsample: float) -> None:
    with pytest.raises(InvalidArgument, match="downsample"):
        store.open("cases/case1.svs").read_region(Rect(0, 0, 100, 100), downsample)


def test_too_large_an_output_is_refused(store: SlideStore) -> None:
    with pytest.raises(ResourceExhausted, match="coarser resolution or a smaller region"):
        store.open("cases/case1.svs").read_region(Rect(0, 0, WIDTH, HEIGHT), 0.5)


def test_too_large_a_read_is_refused(slide_root: Path, synthetic: SyntheticSlide) -> None:
    source = SlideStore(slide_root, max_read_pixels=1000 * 1000).open("cases/case1.svs")
    assert source.read_region(Rect(0, 0, WIDTH, HEIGHT), 4.0).pixels.shape == (768, 1024, 3)
    with pytest.raises(ResourceExhausted, match=r"levels \(1, 4\)"):
        source.read_region(Rect(0, 0, WIDTH, HEIGHT), 3.5)


@pytest.mark.parametrize(
    "slide_id", ["../x", "/etc/passwd", "a/../../b", "a\\b", "", "a\0b", "a" * 5000]
)
def test_malformed_slide_ids_are_refused(store: SlideStore, slide_id: str) -> None:
    with pytest.raises(InvalidArgument):
        store.resolve(slide_id)


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside.svs"
    root.mkdir()
    outside.write_bytes(b"x")
    (root / "escape.svs").symlink_to(outside)
    (root / "dir").symlink_to(tmp_path)
    store = SlideStore(root)
    for slide_id in ("escape.svs", "dir/outside.svs"):
        with pytest.raises(PermissionDenied):
            store.open(slide_id)
    assert store.list_slides() == []


def test_a_symlink_loop_is_refused_without_revealing_the_root(tmp_path: Path) -> None:
    (tmp_path / "one.svs").symlink_to("two.svs")
    (tmp_path / "two.svs").symlink_to("one.svs")
    store = SlideStore(tmp_path)
    with pytest.raises(InvalidArgument, match="cannot be resolved") as caught:
        store.open("one.svs")
    assert str(tmp_path) not in str(caught.value)
    assert store.list_slides() == []


def test_a_missing_slide_is_not_found_without_revealing_the_root(store: SlideStore) -> None:
    with pytest.raises(NotFound, match="relative to the server's slide root") as caught:
        store.open("cases/missing.svs")
    assert str(store.root) not in str(caught.value)


def test_files_openslide_cannot_read_are_invalid(slide_root: Path, store: SlideStore) -> None:
    (slide_root / "notes").mkdir(exist_ok=True)
    (slide_root / "notes" / "x.svs").write_text("not a slide")
    with pytest.raises(InvalidArgument, match="not a slide OpenSlide can read"):
        store.open("notes/x.svs")
    with pytest.raises(InvalidArgument, match="directory"):
        store.open("notes")


def test_list_slides(slide_root: Path, store: SlideStore) -> None:
    (slide_root / "notes").mkdir(exist_ok=True)
    (slide_root / "notes" / "readme.txt").write_text("hello")
    (slide_root / "notes" / "x.svs").write_text("not a slide")
    assert store.list_slides() == ["cases/case1.svs", "notes/x.svs"]


def _coded_pixels(rows: int, columns: int) -> np.ndarray:
    """Pixels that say where they are: R = column, G = row, B = 7."""
    r, c = np.mgrid[0:rows, 0:columns]
    return np.stack([c, r, np.full_like(r, 7)], axis=-1).astype(np.uint8)


def test_array_source_places_its_pixels_in_level0() -> None:
    source = ArrayImageSource(
        _coded_pixels(50, 100), "sha256:" + "a" * 64, origin_x=1000.0, origin_y=500.0, downsample=4.0
    )
    assert (source.width, source.height) == (1400, 700)
    region = source.read_region(Rect(1040.0, 520.0, 80.0, 40.0), 4.0)
    np.testing.assert_array_equal(region.pixels, _coded_pixels(50, 100)[5:15, 10:30])
    assert region.rect == Rect(1040, 520, 80, 40) and region.downsample == 4.0
    snapped = source.read_region(Rect(1041.0, 521.0, 78.0, 38.0), 8.0)
    assert snapped.rect == Rect(1040, 520, 80, 40) and snapped.pixels.shape == (5, 10, 3)
    assert source.plan_read(Rect(1041.0, 521.0, 78.0, 38.0), 8.0) == (snapped.rect, (5, 10))


def test_array_source_refuses_regions_outside_its_pixels() -> None:
    source = ArrayImageSource(_coded_pixels(50, 100), "k", origin_x=1000.0, origin_y=500.0, downsample=4.0)
    with pytest.raises(InvalidArgument, match="covers x from 1000 to 1400"):
        source.read_region(Rect(900.0, 520.0, 80.0, 40.0), 4.0)
    with pytest.raises(InvalidArgument, match="outside the uploaded image"):
        source.read_region(Rect(1300.0, 520.0, 200.0, 40.0), 4.0)
    with pytest.raises(InvalidArgument, match="HxWx3 uint8"):
        ArrayImageSource(np.zeros((5, 5), np.uint8), "k")
    with pytest.raises(InvalidArgument, match="downsample"):
        ArrayImageSource(np.zeros((5, 5, 3), np.uint8), "k", downsample=0.0)
