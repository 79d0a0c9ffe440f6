"""Where the load test's users click: synthetic slides whose object is known (positives land inside it,
negatives outside) and a copy of the real CMU-1-Small-Region, in a folder of their own under a slide root,
and fresh or shared fields of view on them."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from slidesam.lab.demo_object import CLICKS, demo_fov
from slidesam.lab.synthetic.slide_writer import SyntheticSlide, write_synthetic_slide
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, SlideImage
from slidesam.server.models.checkpoints import default_model_dir
from slidesam.server.slides.samples import fetch_cmu_small_region

SLIDE_SIZE = (4096, 3072)
OBJECT_CENTER = (2048.0, 1536.0)
OBJECT_RADII = (600.0, 400.0)
FOV_SIDE = 2048.0           # level-0 side of a synthetic field of view (read to fit SAM's 1024-px input)
REGION_STEP = 4.0           # level-0 shift between successive distinct fields of view
REGION_GRID = 128           # REGION_GRID² distinct shifts, within ±256 px of the centred field of view
CLICK_MARGIN = 40.0         # level-0 px kept between a synthetic click and the object's outline
CMU_CLICK_RADIUS = 15.0     # CMU clicks land within this many px of the demo's hand-placed ones


def sample_point(area: BaseGeometry, rng: np.random.Generator) -> tuple[float, float]:
    """A uniformly random point of `area` (rejection sampling in its bounding box)."""
    x0, y0, x1, y1 = area.bounds
    while True:
        xs, ys = rng.uniform(x0, x1, 256), rng.uniform(y0, y1, 256)
        hits = np.flatnonzero(shapely.contains_xy(area, xs, ys))
        if hits.size:
            return float(xs[hits[0]]), float(ys[hits[0]])


@dataclass(frozen=True)
class Target:
    """A field of view and where clicks on it land: positives in `inside`, negatives in `outside` (level-0)."""

    fov: FieldOfView
    inside: BaseGeometry
    outside: BaseGeometry

    def click(self, positive: bool, rng: np.random.Generator) -> Click:
        return Click(*sample_point(self.inside if positive else self.outside, rng), positive)


@dataclass
class Slides:
    """The slides of one run, in their own folder under the server's slide root."""

    root: Path
    folder: Path
    synthetic: list[SyntheticSlide]
    cmu: Path
    _regions: Iterator[int] = field(default_factory=itertools.count)

    def slide_id(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def fresh_target(self) -> Target:
        """A synthetic field of view no other target of this run has (an encode on first use)."""
        index = next(self._regions)  # atomic under the GIL, so batch threads may share it
        slide = self.synthetic[index % len(self.synthetic)]
        shift = index // len(self.synthetic)
        dx = (shift % REGION_GRID - REGION_GRID / 2) * REGION_STEP
        dy = (shift // REGION_GRID % REGION_GRID - REGION_GRID / 2) * REGION_STEP
        x, y = OBJECT_CENTER[0] - FOV_SIDE / 2 + dx, OBJECT_CENTER[1] - FOV_SIDE / 2 + dy
        rect = shapely.box(x, y, x + FOV_SIDE, y + FOV_SIDE)
        fov = FieldOfView(SlideImage(self.slide_id(slide.path)), x, y, FOV_SIDE, FOV_SIDE)
        inside = slide.object_geometry.buffer(-CLICK_MARGIN) & rect
        outside = rect - slide.object_geometry.buffer(CLICK_MARGIN)
        return Target(fov, prepared(inside), prepared(outside))

    def cmu_target(self) -> Target:
        """The demo's field of view over the epithelium of the real slide, clicks near the demo's clicks."""
        def near(positive: bool) -> BaseGeometry:
            return shapely.union_all([shapely.Point(c.x, c.y).buffer(CMU_CLICK_RADIUS) for c in CLICKS if c.positive == positive])

        fov = demo_fov(self.slide_id(self.cmu))
        return Target(fov, prepared(near(True)), prepared(near(False)))


def prepared(geometry: BaseGeometry) -> BaseGeometry:
    shapely.prepare(geometry)
    return geometry


def write_slides(slide_root: Path, count: int) -> Slides:
    """`count` synthetic slides and a copy of CMU-1-Small-Region in a new folder under `slide_root`."""
    folder = Path(tempfile.mkdtemp(prefix="loadtest-", dir=slide_root))
    synthetic = [
        write_synthetic_slide(folder / f"synthetic-{index}.svs", *SLIDE_SIZE, levels=(1, 4),
                              object_center=OBJECT_CENTER, object_radii=OBJECT_RADII, seed=index)
        for index in range(count)
    ]
    cmu = folder / "CMU-1-Small-Region.svs"
    shutil.copyfile(fetch_cmu_small_region(default_model_dir().parent / "samples"), cmu)
    return Slides(slide_root, folder, synthetic, cmu)
