"""End to end over a real loopback gRPC server with the real MobileSAM weights on a generated slide."""

from __future__ import annotations

import cv2
import grpc
import numpy as np
import pytest
import shapely

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ServerError
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, SlideImage, UploadedRegion
from slidesam.server.engine.geometry import geometry_iou
from tests.conftest import SLIDE_ID, make_server

IOU_THRESHOLD = 0.90


def object_fov(slide, **resolution) -> FieldOfView:
    """An offset level-0 region that holds the whole known object."""
    minx, miny, maxx, maxy = slide.object_geometry.bounds
    return FieldOfView(SlideImage(SLIDE_ID), minx - 700.5, miny - 450.25, maxx - minx + 1300, maxy - miny + 1000, **resolution)


def centre(slide) -> tuple[float, float]:
    point = slide.object_geometry.representative_point()
    return point.x, point.y


def known_iou(result, slide) -> float:
    return geometry_iou(result.geometry, slide.object_geometry)


@pytest.mark.parametrize("resolution", [{"magnification": 5}, {"mpp": 1.5}], ids=["x5", "mpp1.5"])
def test_clicks_map_back_to_the_known_object_in_level0(client, synthetic_slide, resolution):
    fov = object_fov(synthetic_slide, **resolution)
    with client.open_object(fov) as session:
        opened = session.result
        expected_downsample = 8.0 if "magnification" in resolution else 6.0
        assert opened.raw.downsample == pytest.approx(expected_downsample)
        assert not opened.geometry.geoms and opened.step == 0
        result = session.click(*centre(synthetic_slide))
    iou = known_iou(result, synthetic_slide)
    assert iou >= IOU_THRESHOLD, f"IoU with the known object in level-0 space: {iou:.3f}"
    assert result.raw.mpp_known and result.area_um2 == pytest.approx(result.area_px * synthetic_slide.mpp**2)
    assert result.model_id.startswith("mobile_sam@6dbb90523a35")


def test_second_click_reuses_the_cached_embedding(client, synthetic_slide):
    fov = object_fov(synthetic_slide, downsample=7.0)
    with client.open_object(fov) as session:
        opened = session.result.timings
        assert not opened.cache_hit and opened.encode_ms > 0 and opened.read_ms > 0
        first = session.click(*centre(synthetic_slide)).timings
        minx, miny, _, _ = synthetic_slide.object_geometry.bounds
        second = session.click(minx - 200, miny - 200, positive=False).timings
    for timings in (first, second):
        assert timings.cache_hit and timings.encode_ms == 0 and timings.read_ms == 0
        assert timings.decode_ms > 0 and timings.postprocess_ms > 0


def test_undo_redo_reset_and_finish(client, synthetic_slide):
    cx, cy = centre(synthetic_slide)
    with client.open_object(object_fov(synthetic_slide, magnification=5)) as session:
        with pytest.raises(ServerError) as nothing:
            session.undo()
        assert nothing.value.code is grpc.StatusCode.FAILED_PRECONDITION
        one = session.click(cx, cy)
        two = session.click(cx - 300, cy)
        undone = session.undo()
        assert undone.raw.polygons == one.raw.polygons and undone.score == one.score and undone.step == 1
        assert undone.can_redo and undone.can_undo
        redone = session.redo()
        assert redone.raw.polygons == two.raw.polygons and not redone.can_redo
        with pytest.raises(ServerError) as no_redo:
            session.redo()
        assert no_redo.value.code is grpc.StatusCode.FAILED_PRECONDITION
        cleared = session.reset()
        assert not cleared.geometry.geoms and cleared.clicks == [] and cleared.can_undo
        assert session.undo().raw.polygons == two.raw.polygons
        final = session.finish()
    assert final.raw.polygons == two.raw.polygons and len(final.clicks) == 2


def test_box_then_negative_click(client, synthetic_slide):
    minx, miny, maxx, maxy = synthetic_slide.object_geometry.bounds
    with client.open_object(object_fov(synthetic_slide, magnification=5)) as session:
        boxed = session.box(minx - 40, miny - 40, maxx - minx + 80, maxy - miny + 80)
        assert known_iou(boxed, synthetic_slide) >= IOU_THRESHOLD, known_iou(boxed, synthetic_slide)
        assert boxed.raw.HasField("box")
        cut = session.click(minx + 60, (miny + maxy) / 2, positive=False)
    assert cut.area_px < boxed.area_px


def test_several_clicks_in_one_message_are_one_step(client, synthetic_slide):
    cx, cy = centre(synthetic_slide)
    with client.open_object(object_fov(synthetic_slide, magnification=5)) as session:
        result = session.add_clicks([Click(cx, cy), Click(cx + 200, cy + 100), Click(cx - 1000, cy - 700, False)])
    assert result.step == 1 and len(result.clicks) == 3
    assert known_iou(result, synthetic_slide) >= IOU_THRESHOLD


def test_batch_segment_equals_the_interactive_result(client, synthetic_slide):
    fov = object_fov(synthetic_slide, magnification=5)
    clicks = [Click(*centre(synthetic_slide)), Click(centre(synthetic_slide)[0] + 250, centre(synthetic_slide)[1])]
    batch = client.segment(fov, clicks)
    with client.open_object(fov) as session:
        for click in clicks:
            interactive = session.click(click.x, click.y, click.positive)
    assert batch.raw.polygons == interactive.raw.polygons and batch.score == interactive.score


def _uploaded_region(synthetic_slide, downsample: float) -> tuple[UploadedRegion, tuple[float, float, float, float]]:
    """The client reads a region itself (here: OpenSlide on the same file) and uploads it as PNG."""
    import openslide

    minx, miny, maxx, maxy = synthetic_slide.object_geometry.bounds
    x0, y0 = int(minx) - 600, int(miny) - 400
    w, h = int(maxx - minx) + 1200, int(maxy - miny) + 800
    with openslide.OpenSlide(str(synthetic_slide.path)) as slide:
        level = slide.get_best_level_for_downsample(downsample)
        scale = slide.level_downsamples[level]
        tile = np.asarray(slide.read_region((x0, y0), level, (int(w / scale), int(h / scale))).convert("RGB"))
    out = cv2.resize(tile, (round(w / downsample), round(h / downsample)), interpolation=cv2.INTER_AREA)
    png = cv2.imencode(".png", cv2.cvtColor(out, cv2.COLOR_RGB2BGR))[1].tobytes()
    actual_downsample = w / out.shape[1]
    region = UploadedRegion(png, origin_x=x0, origin_y=y0, downsample=actual_downsample, mpp=synthetic_slide.mpp)
    return region, (x0, y0, out.shape[1] * actual_downsample, out.shape[0] * actual_downsample)


def test_uploaded_region_is_sent_once_and_placed_in_level0(client, synthetic_slide):
    region, (x, y, w, h) = _uploaded_region(synthetic_slide, downsample=4.0)
    fov = FieldOfView(region, x, y, w, h)
    with client.open_object(fov) as session:
        result = session.click(*centre(synthetic_slide))
    assert known_iou(result, synthetic_slide) >= IOU_THRESHOLD, known_iou(result, synthetic_slide)
    again = client.upload(region)
    assert again.already_present and again.sha256 == region.sha256
    batch = client.segment(fov, [Click(*centre(synthetic_slide))])
    assert batch.raw.polygons == result.raw.polygons


def test_replay_after_the_server_restarts_gives_the_same_polygon(model_registry, slide_root, synthetic_slide):
    first = make_server(model_registry, slide_root)
    port = first.port
    cx, cy = centre(synthetic_slide)
    fov = object_fov(synthetic_slide, magnification=5)
    with SlidesamClient(first.address) as client:
        session = client.open_object(fov)
        session.click(cx, cy)
        session.click(cx - 300, cy + 100)
        session.undo()
        first.stop()
        second = make_server(model_registry, slide_root, port=port)
        try:
            replayed = session.click(cx + 250, cy - 50)
            assert session.reconnects == 1
            with client.open_object(fov) as fresh:
                fresh.click(cx, cy)
                expected = fresh.click(cx + 250, cy - 50)
        finally:
            session.close()
            second.stop()
    assert replayed.object_id == session.object_id
    assert replayed.raw.polygons == expected.raw.polygons and replayed.score == expected.score
    assert replayed.step == 2 and replayed.can_undo and not replayed.can_redo


def test_list_models_health_and_reflection(client, server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    models = {m.name: m for m in client.list_models()}
    mobile = models["mobile_sam"]
    assert mobile.is_default and mobile.loaded and mobile.available and mobile.input_size == 1024
    assert mobile.checkpoint_sha256.startswith("6dbb9052") and mobile.device == str(server.running.devices.models.device)
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h"} <= set(models) and not models["sam_vit_b"].available
    with grpc.insecure_channel(server.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="slidesam.v1.Segmentation"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = {s.name for s in next(replies).list_services_response.service}
    assert "slidesam.v1.Segmentation" in services and "grpc.health.v1.Health" in services


def test_polygons_are_valid_level0_geometry(client, synthetic_slide):
    fov = object_fov(synthetic_slide, magnification=5)
    result = client.segment(fov, [Click(*centre(synthetic_slide))])
    geometry = result.geometry
    assert geometry.is_valid and not geometry.is_empty
    frame = shapely.box(fov.x, fov.y, fov.x + fov.width, fov.y + fov.height).buffer(1)
    assert frame.contains(geometry)
    assert result.area_px == pytest.approx(geometry.area, rel=1e-6)


def test_an_unreachable_server_fails_fast_instead_of_hanging():
    import socket
    import time

    from slidesam.qupath_bridge.errors import ConnectionLost

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with SlidesamClient(f"127.0.0.1:{port}", ready_timeout=1.0, call_timeout=2.0) as client:
        started = time.monotonic()
        with pytest.raises(ConnectionLost):
            client.open_object(FieldOfView(SlideImage(SLIDE_ID), 0, 0, 100, 100))
        with pytest.raises(ServerError) as error:
            client.list_models()
        assert error.value.code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert time.monotonic() - started < 20
