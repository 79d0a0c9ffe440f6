"""Small whole-slide datasets in the PAIP 2019 and CAMELYON16 formats, generated with known tumour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import shapely
import tifffile

from slidesam.server.engine.geometry import RegionTransform, geometry_to_mask
from slidesam.lab.synthetic.slide_writer import SyntheticSlide, write_synthetic_slide

SIZE = (4096, 3072)
LEVELS = (1, 4)


def _slide(path: Path, index: int) -> SyntheticSlide:
    centre = (1500.0 + 900.0 * index, 1400.0 + 200.0 * index)
    return write_synthetic_slide(path, *SIZE, levels=LEVELS, object_center=centre, object_radii=(650.0, 480.0), seed=index)


def write_mask_tiff(path: Path, geometry: shapely.Geometry, width: int, height: int, levels=LEVELS) -> None:
    """A tiled, pyramidal 8-bit TIFF (0 background, 255 tumour) as OpenSlide's generic reader expects it."""
    with tifffile.TiffWriter(path) as tif:
        for index, downsample in enumerate(levels):
            shape = (height // downsample, width // downsample)
            mask = geometry_to_mask(geometry, RegionTransform(0, 0, width / shape[1], height / shape[0]), shape)
            tif.write(mask.astype(np.uint8) * 255, tile=(256, 256), compression="zlib", photometric="minisblack",
                      subfiletype=1 if index else 0, metadata=None)


def write_paip_dataset(directory: Path, count: int = 2) -> list[SyntheticSlide]:
    """NAME.svs + NAME_whole.tif (whole-tumour mask), PAIP 2019's layout."""
    directory.mkdir(parents=True, exist_ok=True)
    slides = []
    for index in range(count):
        slide = _slide(directory / f"case_{index:02d}.svs", index)
        write_mask_tiff(directory / f"case_{index:02d}_whole.tif", slide.object_geometry, *SIZE)
        slides.append(slide)
    return slides


def exclusion_of(slide: SyntheticSlide) -> shapely.Polygon:
    """The non-tumour island the CAMELYON-style annotation cuts out of the tumour (group `_2`)."""
    centre = slide.object_geometry.centroid
    return shapely.Point(centre.x, centre.y).buffer(120.0, quad_segs=8)


def _coordinates(polygon: shapely.Polygon) -> str:
    return "".join(f'<Coordinate Order="{i}" X="{x:.2f}" Y="{y:.2f}" />' for i, (x, y) in enumerate(polygon.exterior.coords[:-1]))


def write_camelyon_dataset(directory: Path, count: int = 2) -> list[SyntheticSlide]:
    """NAME.tif + NAME.xml (ASAP): tumour polygon in group `_0`, an exclusion inside it in group `_2`."""
    directory.mkdir(parents=True, exist_ok=True)
    slides = []
    for index in range(count):
        slide = _slide(directory / f"tumor_{index:03d}.tif", index)
        xml = (
            '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
            f'<Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58"><Coordinates>{_coordinates(slide.object_geometry)}</Coordinates></Annotation>'
            f'<Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E"><Coordinates>{_coordinates(exclusion_of(slide))}</Coordinates></Annotation>'
            '</Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None" Color="#FF0000"><Attributes /></Group>'
            '<Group Name="_2" PartOfGroup="None" Color="#00FF00"><Attributes /></Group></AnnotationGroups></ASAP_Annotations>'
        )
        (directory / f"tumor_{index:03d}.xml").write_text(xml)
        slides.append(slide)
    return slides
