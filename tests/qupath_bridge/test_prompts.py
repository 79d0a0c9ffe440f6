"""The prompt convention, fields of view and tissue detection, without a server."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import numpy as np
import pytest
import shapely

from slidesam.qupath_bridge.fov import FovSettings, region_around_group
from slidesam.qupath_bridge.pixels import LocalSlides, SlideMap
from slidesam.qupath_bridge.project import Annotation, ImageEntry
from slidesam.qupath_bridge.prompts import PromptClasses, PromptGroup, find_prompt_groups, outside_image
from slidesam.qupath_bridge.tissue import TissueSettings, tissue_boxes, tissue_mask
from slidesam.qupath_bridge.wire_requests import Click

CLASSES = PromptClasses()


def _annotation(number: int, geometry, path_class: str, name: str | None = None) -> Annotation:
    return Annotation(f"00000000-0000-0000-0000-{number:012d}", geometry, path_class, name)


def test_groups_by_name_in_order_with_unnamed_prompts_as_one_group():
    annotations = [
        _annotation(1, shapely.MultiPoint([(10, 10), (20, 20)]), "SAM positive", "lesion 1"),
        _annotation(2, shapely.Point(5, 5), "SAM positive"),
        _annotation(3, shapely.MultiPoint([(30, 30)]), "SAM negative", " lesion 1 "),
        _annotation(4, shapely.box(0, 0, 50, 40), "SAM box", "lesion 1"),
        _annotation(5, shapely.box(0, 0, 99, 99), "Tumor", "lesion 1"),
        _annotation(6, shapely.Point(7, 8), "SAM negative"),
    ]
    groups, problems = find_prompt_groups(annotations, CLASSES)
    assert problems == []
    assert groups == [
        PromptGroup("lesion 1", (Click(10, 10), Click(20, 20), Click(30, 30, False)), (0, 0, 50, 40)),
        PromptGroup("", (Click(5, 5), Click(7, 8, False))),
    ]
    assert [g.result_name for g in groups] == ["SAM: lesion 1", "SAM"]


def test_class_names_are_configurable():
    classes = PromptClasses("pos", "neg", "rect")
    groups, problems = find_prompt_groups([_annotation(1, shapely.Point(1, 1), "pos", "a")], classes)
    assert groups == [PromptGroup("a", (Click(1, 1),))] and problems == []


@pytest.mark.parametrize("annotations, message", [
    ([_annotation(1, shapely.Point(1, 1), "SAM negative", "a")], "no positive point and no box"),
    ([_annotation(1, shapely.MultiPoint(), "SAM positive", "a")], "holds no points"),
    ([_annotation(1, shapely.box(0, 0, 5, 5), "SAM positive", "a")], "must be a Points annotation"),
    ([_annotation(1, shapely.Point(1, 1), "SAM box", "a")], "must be a rectangle"),
    ([_annotation(1, shapely.box(0, 0, 5, 5), "SAM box", "a"), _annotation(2, shapely.box(1, 1, 5, 5), "SAM box", "a")], "at most one"),
    ([_annotation(1, shapely.Point(1, 1), "sam  Positive", "a")], "unknown class 'sam  Positive'.*did you mean 'SAM positive'"),
    ([_annotation(1, shapely.Point(float("nan"), 1), "SAM positive", "a")], "not finite"),
])
def test_bad_groups_are_reported_and_left_out(annotations, message):
    groups, problems = find_prompt_groups(annotations, CLASSES)
    assert groups == []
    assert len(problems) == 1 and problems[0].startswith("prompt group 'a': ")
    assert re.search(message, problems[0])


def test_prompts_outside_the_image_are_named():
    group = PromptGroup("a", (Click(10, 10), Click(5000, 10)))
    assert "(5000, 10) lies outside the image (0..4096 x 0..3072" in outside_image(group, 4096, 3072)
    assert outside_image(PromptGroup("a", (Click(4096, 3072),)), 4096, 3072) is None


def test_hash_changes_with_prompts_and_settings():
    group = PromptGroup("a", (Click(1, 2),))
    assert group.sha256({"model": ""}) == PromptGroup("a", (Click(1, 2),)).sha256({"model": ""})
    assert group.sha256({"model": ""}) != PromptGroup("a", (Click(1, 2, False),)).sha256({"model": ""})
    assert group.sha256({"model": ""}) != group.sha256({"model": "sam_vit_b"})


@pytest.mark.parametrize("group, expected", [
    (PromptGroup("a", (Click(2000, 1500),)), (976, 476, 2048, 2048)),                  # min size around a click
    (PromptGroup("a", (Click(10, 10),)), (0, 0, 2048, 2048)),                          # moved inside the image
    (PromptGroup("a", box=(100, 100, 3000, 1000)), (0, 0, 4096, 2500)),                 # margin 0.25 x 3000 each side, clipped
    (PromptGroup("a", box=(0, 0, 4096, 3072)), (0, 0, 4096, 3072)),                     # never beyond the image
])
def test_field_of_view(group, expected):
    assert region_around_group(group, 4096, 3072, FovSettings()) == expected


def test_field_of_view_settings_are_checked():
    with pytest.raises(ValueError, match="at most one"):
        FovSettings(mpp=1, magnification=10)
    with pytest.raises(ValueError, match="positive"):
        FovSettings(downsample=-2)


def test_slide_map_longest_prefix_wins():
    slide_map = SlideMap.parse(["/data=", "/data/lab-b/=cases/b/"])
    image = ImageEntry("x", "file:///data/lab-b/x.svs", PurePosixPath("/data/lab-b/x.svs"))
    assert slide_map.slide_id(image) == "cases/b/x.svs"
    assert slide_map.slide_id(ImageEntry("y", "/data/y.svs", None)) == "y.svs"
    assert slide_map.slide_id(ImageEntry("z", "/elsewhere/z.svs", None)) is None
    with pytest.raises(ValueError, match="LOCAL_PREFIX=SERVER_PREFIX"):
        SlideMap.parse(["/data"])


def test_tissue_boxes_find_the_object(served_slide):
    local = LocalSlides()
    thumbnail, scale = local.thumbnail(served_slide.path, 1024)
    (box,) = tissue_boxes(tissue_mask(thumbnail, TissueSettings()), scale, TissueSettings())
    minx, miny, maxx, maxy = served_slide.object_geometry.bounds
    assert box == pytest.approx((minx, miny, maxx - minx, maxy - miny), abs=3 * scale)
    blank = np.full((300, 400, 3), 240, dtype=np.uint8)
    assert tissue_boxes(tissue_mask(blank, TissueSettings()), 1.0, TissueSettings()) == []
    local.close()
