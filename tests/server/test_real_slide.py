"""The real Aperio slide CMU-1-Small-Region through the server: by slide id and as uploaded pixels."""

from __future__ import annotations

import cv2
import numpy as np
import openslide
import pytest

from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, SlideImage, UploadedRegion

REGION = (900.0, 1300.0, 1200.0, 1200.0)  # squamous epithelium with a small vessel inside
CLICKS = [Click(1350.0, 1920.0), Click(1175.0, 1850.0), Click(1560.0, 2070.0, False), Click(1245.0, 2085.0, False)]


def test_real_slide_metadata_drives_the_resolution(client, cmu_slide):
    fov = FieldOfView(SlideImage(cmu_slide.name), *REGION, magnification=10)
    result = client.segment(fov, CLICKS[:1])
    assert result.raw.downsample == pytest.approx(2.0)  # 20x slide read at x10
    assert result.raw.mpp_known and result.area_um2 == pytest.approx(result.area_px * 0.499**2, rel=1e-6)


def test_negative_click_on_the_vessel_makes_a_hole(client, cmu_slide):
    fov = FieldOfView(SlideImage(cmu_slide.name), *REGION, magnification=10)
    result = client.segment(fov, CLICKS)
    vessel = Click(1245.0, 2085.0)
    import shapely

    assert not result.geometry.contains(shapely.Point(vessel.x, vessel.y))
    assert result.geometry.contains(shapely.Point(CLICKS[0].x, CLICKS[0].y))
    assert any(len(part.interiors) for part in result.geometry.geoms), "the vessel should be a hole in the epithelium"


def test_uploaded_pixels_give_the_same_polygons_as_the_slide_id(client, cmu_slide):
    x, y, w, h = REGION
    with openslide.OpenSlide(str(cmu_slide)) as slide:
        rgb = np.asarray(slide.read_region((int(x), int(y)), 0, (int(w), int(h))).convert("RGB"))
    half = cv2.resize(rgb, (int(w) // 2, int(h) // 2), interpolation=cv2.INTER_AREA)
    png = cv2.imencode(".png", cv2.cvtColor(half, cv2.COLOR_RGB2BGR))[1].tobytes()
    uploaded = FieldOfView(UploadedRegion(png, origin_x=x, origin_y=y, downsample=2.0, mpp=0.499), *REGION, downsample=2.0)
    by_slide = client.segment(FieldOfView(SlideImage(cmu_slide.name), *REGION, magnification=10), CLICKS)
    by_upload = client.segment(uploaded, CLICKS)
    assert by_upload.raw.downsample == pytest.approx(2.0)
    assert by_upload.raw.polygons == by_slide.raw.polygons and by_upload.score == pytest.approx(by_slide.score)
