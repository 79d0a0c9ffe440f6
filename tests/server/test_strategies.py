"""Prompt strategies: `plain` reproduces SAM's own predictor exactly; `consistent` honours every click."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import openslide
import pytest
import shapely
from support.predictor_parity import assert_plain_matches_predictor

from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, SlideImage

REGION = (900.0, 1300.0, 1200.0, 1200.0)
CLICKS = [Click(1350.0, 1920.0), Click(1175.0, 1850.0), Click(1560.0, 2070.0, False), Click(1245.0, 2085.0, False),
          Click(1230.0, 2234.0), Click(966.0, 1849.0, False)]


@pytest.fixture(scope="module")
def region_pixels(cmu_slide) -> np.ndarray:
    x, y, w, h = REGION
    with openslide.OpenSlide(str(cmu_slide)) as slide:
        rgb = np.asarray(slide.read_region((int(x), int(y)), 0, (int(w), int(h))).convert("RGB"))
    return cv2.resize(rgb, (600, 600), interpolation=cv2.INTER_AREA)


def test_plain_matches_sams_predictor_click_by_click(model_registry, region_pixels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import SamPredictor
    _, model = model_registry.get("mobile_sam")
    predictor = SamPredictor(model.sam)
    predictor.set_image(region_pixels)
    embedding = model.encode(region_pixels)
    points = np.array([[(c.x - REGION[0]) / 2 - 0.5, (c.y - REGION[1]) / 2 - 0.5] for c in CLICKS])
    labels = np.array([1 if c.positive else 0 for c in CLICKS])
    assert_plain_matches_predictor(model, embedding, predictor, points, labels)


def test_consistent_honours_every_click_on_real_tissue(client, cmu_slide):
    fov = FieldOfView(SlideImage(cmu_slide.name), *REGION, magnification=10)
    with client.open_object(fov, strategy="consistent") as session:
        for number, click in enumerate(CLICKS, start=1):
            result = session.click(click.x, click.y, click.positive)
            for earlier in CLICKS[:number]:
                inside = result.geometry.buffer(2.5).contains(shapely.Point(earlier.x, earlier.y))
                outside = not result.geometry.buffer(-2.5).contains(shapely.Point(earlier.x, earlier.y))
                assert inside if earlier.positive else outside, f"after click {number}, click {earlier} is not honoured"
    assert result.raw.strategy == 2  # PROMPT_STRATEGY_CONSISTENT


def test_unknown_strategy_is_refused(client, cmu_slide):
    import grpc

    from slidesam.v1 import slidesam_pb2 as pb

    request = pb.SegmentRequest(field_of_view=FieldOfView(SlideImage(cmu_slide.name), *REGION).to_pb(),
                                clicks=[pb.Click(x=1350, y=1920, positive=True)], strategy=7)
    with pytest.raises(grpc.RpcError) as error:
        client._stub.Segment(request)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "strategy" in error.value.details()
