"""Every kind of bad input gets the right status code and a clear message, and the server keeps serving."""

from __future__ import annotations

import hashlib
import math
import os

import cv2
import grpc
import numpy as np
import pytest

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc
from tests.conftest import SLIDE_ID, TEST_MAX_MESSAGE_MB

GOOD_REGION = pb.Rect(x=4000, y=2400, width=2600, height=1900)


def fov(slide_id: str = SLIDE_ID, region: pb.Rect = GOOD_REGION, **resolution) -> pb.FieldOfView:
    message = pb.FieldOfView(region=region)
    message.image.slide_id = slide_id
    for kind, value in resolution.items():
        setattr(message.resolution, kind, value)
    return message


def rect(x=4000.0, y=2400.0, width=2600.0, height=1900.0) -> pb.Rect:
    return pb.Rect(x=x, y=y, width=width, height=height)


@pytest.fixture
def stub(server, synthetic_slide):
    with grpc.insecure_channel(server.address, options=[("grpc.max_send_message_length", 64 * 2**20)]) as channel:
        yield pb_grpc.SegmentationStub(channel)


@pytest.fixture
def escaping_symlink(slide_root, synthetic_slide, tmp_path):
    outside = tmp_path / "outside.svs"
    outside.write_bytes(synthetic_slide.path.read_bytes())
    link = slide_root / "cases" / "link-out.svs"
    link.symlink_to(outside)
    yield "cases/link-out.svs"
    link.unlink()


def single_window(field_of_view: pb.FieldOfView) -> pb.FieldOfView:
    field_of_view.windows = pb.WINDOW_MODE_SINGLE
    return field_of_view


def outline(*rings: list[float]) -> pb.InteractRequest:
    return pb.InteractRequest(outline=pb.SetOutline(polygons=[pb.Polygon(exterior=pb.Ring(xy=ring)) for ring in rings]))


def open_request(field_of_view: pb.FieldOfView, model: str = "") -> pb.InteractRequest:
    return pb.InteractRequest(open=pb.OpenObject(field_of_view=field_of_view, model=model, polygon_options=pb.PolygonOptions(max_vertices=500)))


def converse(stub, *requests: pb.InteractRequest) -> list[pb.InteractResponse]:
    """Sends the requests on one stream; every one is answered, in order, with its request_id."""
    for number, request in enumerate(requests, start=1):
        request.request_id = number
    responses = list(stub.Interact(iter(requests)))
    assert [r.request_id for r in responses] == list(range(1, len(requests) + 1))
    return responses


def assert_step_error(response: pb.InteractResponse, code: grpc.StatusCode, *words: str) -> None:
    assert response.HasField("error"), response
    assert response.error.code == code.value[0], (grpc.StatusCode(code), response.error)
    for word in words:
        assert word in response.error.message, response.error.message


BAD_OPENS = {
    "unknown model": (open_request(fov(), model="sam_vit_q"), grpc.StatusCode.NOT_FOUND, ["sam_vit_q", "mobile_sam"]),
    "model without checkpoint": (open_request(fov(), model="sam_vit_b"), grpc.StatusCode.FAILED_PRECONDITION, ["--checkpoint sam_vit_b="]),
    "unknown slide": (open_request(fov("cases/nope.svs")), grpc.StatusCode.NOT_FOUND, ["cases/nope.svs"]),
    "escaping slide id": (open_request(fov("../tumour.svs")), grpc.StatusCode.INVALID_ARGUMENT, []),
    "absolute slide id": (open_request(fov("/etc/passwd")), grpc.StatusCode.INVALID_ARGUMENT, []),
    "region outside the slide": (open_request(fov(region=rect(x=8000, y=6000))), grpc.StatusCode.INVALID_ARGUMENT, ["outside"]),
    "region at negative coordinates": (open_request(fov(region=rect(x=-500))), grpc.StatusCode.INVALID_ARGUMENT, ["outside"]),
    "zero width": (open_request(fov(region=rect(width=0))), grpc.StatusCode.INVALID_ARGUMENT, ["width"]),
    "negative height": (open_request(fov(region=rect(height=-10))), grpc.StatusCode.INVALID_ARGUMENT, ["height"]),
    "NaN x": (open_request(fov(region=rect(x=math.nan))), grpc.StatusCode.INVALID_ARGUMENT, ["x"]),
    "infinite width": (open_request(fov(region=rect(width=math.inf))), grpc.StatusCode.INVALID_ARGUMENT, ["width"]),
    "NaN downsample": (open_request(fov(downsample=math.nan)), grpc.StatusCode.INVALID_ARGUMENT, ["downsample"]),
    "negative mpp": (open_request(fov(mpp=-1.0)), grpc.StatusCode.INVALID_ARGUMENT, ["mpp"]),
    "zero magnification": (open_request(fov(magnification=0.0)), grpc.StatusCode.INVALID_ARGUMENT, ["magnification"]),
    "region too large for one window at full resolution": (
        open_request(single_window(fov(region=rect(x=0, y=0, width=8192, height=6144), downsample=1.0))),
        grpc.StatusCode.RESOURCE_EXHAUSTED, ["coarser"]),
    "object larger than the server segments": (
        open_request(fov(region=rect(x=0, y=0, width=8192, height=6144), downsample=0.5)),
        grpc.StatusCode.RESOURCE_EXHAUSTED, ["segments as one object"]),
    "unknown window mode": (open_request(pb.FieldOfView(image=pb.ImageSource(slide_id=SLIDE_ID), region=GOOD_REGION, windows=7)),
                            grpc.StatusCode.INVALID_ARGUMENT, ["window mode"]),
    "no image": (pb.InteractRequest(open=pb.OpenObject(field_of_view=pb.FieldOfView(region=GOOD_REGION))), grpc.StatusCode.INVALID_ARGUMENT, ["slide_id"]),
    "no region": (pb.InteractRequest(open=pb.OpenObject(field_of_view=pb.FieldOfView(image=pb.ImageSource(slide_id=SLIDE_ID)))), grpc.StatusCode.INVALID_ARGUMENT, ["region"]),
    "no field of view": (pb.InteractRequest(open=pb.OpenObject()), grpc.StatusCode.INVALID_ARGUMENT, ["field_of_view"]),
    "unknown uploaded image": (
        open_request(pb.FieldOfView(image=pb.ImageSource(uploaded=pb.UploadedImageRef(sha256="ab" * 32)), region=rect(0, 0, 10, 10))),
        grpc.StatusCode.NOT_FOUND, ["upload"]),
    "malformed uploaded hash": (
        open_request(pb.FieldOfView(image=pb.ImageSource(uploaded=pb.UploadedImageRef(sha256="xyz")), region=rect(0, 0, 10, 10))),
        grpc.StatusCode.INVALID_ARGUMENT, ["sha256"]),
    "negative simplification": (
        pb.InteractRequest(open=pb.OpenObject(field_of_view=fov(), polygon_options=pb.PolygonOptions(simplify_tolerance_px=-1))),
        grpc.StatusCode.INVALID_ARGUMENT, ["simplify"]),
}


@pytest.mark.parametrize("name", list(BAD_OPENS))
def test_bad_open_is_refused_and_the_stream_goes_on(stub, name):
    request, code, words = BAD_OPENS[name]
    refused, recovered = converse(stub, request, open_request(fov(magnification=2.5)))
    assert_step_error(refused, code, *words)
    assert recovered.HasField("result") and recovered.result.object_id


def test_symlink_out_of_the_slide_root_is_refused(stub, escaping_symlink):
    (response,) = converse(stub, open_request(fov(escaping_symlink)))
    assert_step_error(response, grpc.StatusCode.PERMISSION_DENIED)


def click(x: float, y: float, positive: bool = True) -> pb.InteractRequest:
    return pb.InteractRequest(clicks=pb.AddClicks(clicks=[pb.Click(x=x, y=y, positive=positive)]))


def test_prompts_before_open_and_nothing_to_undo(stub):
    responses = converse(
        stub,
        click(5000, 3000),
        pb.InteractRequest(undo=pb.Undo()),
        open_request(fov(magnification=2.5)),
        pb.InteractRequest(undo=pb.Undo()),
        pb.InteractRequest(redo=pb.Redo()),
        pb.InteractRequest(),
    )
    assert_step_error(responses[0], grpc.StatusCode.FAILED_PRECONDITION, "open")
    assert_step_error(responses[1], grpc.StatusCode.FAILED_PRECONDITION, "open")
    assert responses[2].HasField("result")
    assert_step_error(responses[3], grpc.StatusCode.FAILED_PRECONDITION, "undo")
    assert_step_error(responses[4], grpc.StatusCode.FAILED_PRECONDITION, "redo")
    assert_step_error(responses[5], grpc.StatusCode.INVALID_ARGUMENT, "action")


@pytest.mark.parametrize(
    "bad, words",
    [
        (click(100, 100), ["outside the field of view"]),
        (click(math.nan, 3000), ["click x"]),
        (click(5000, math.inf), ["click y"]),
        (pb.InteractRequest(clicks=pb.AddClicks()), ["at least one click"]),
        (pb.InteractRequest(box=pb.SetBox(box=pb.Box(x=5000, y=3000, width=-5, height=10))), ["positive"]),
        (pb.InteractRequest(box=pb.SetBox(box=pb.Box(x=5000, y=3000, width=5000, height=10))), ["outside"]),
        (pb.InteractRequest(box=pb.SetBox()), ["box"]),
        (pb.InteractRequest(outline=pb.SetOutline()), ["at least one polygon"]),
        (outline([5000, 3000, 5100, 3000]), ["at least 3 points"]),
        (outline([5000, 3000, 5100, math.nan, 5100, 3100]), ["finite"]),
        (outline([5000, 3000, 5200, 3200, 5200, 3000, 5000, 3200]), ["not a valid polygon", "self-intersection"]),
        (outline([100, 100, 200, 100, 200, 200]), ["outside the field of view"]),
    ],
    ids=["click outside", "NaN click", "infinite click", "empty clicks", "negative box", "box outside", "empty box",
         "empty outline", "outline of two points", "NaN outline", "self-intersecting outline", "outline outside"],
)
def test_bad_prompt_is_refused_and_the_object_is_unchanged(stub, bad, words):
    opened, first, refused, second = converse(stub, open_request(fov(magnification=2.5)), click(5200, 3300), bad, click(5300, 3300))
    assert_step_error(refused, grpc.StatusCode.INVALID_ARGUMENT, *words)
    assert first.result.step == 1 and second.result.step == 2 and len(second.result.clicks) == 2


def png_bytes() -> bytes:
    image = np.full((64, 64, 3), 200, np.uint8)
    return cv2.imencode(".png", image)[1].tobytes()


def test_corrupt_upload_and_wrong_sha256(stub):
    data = png_bytes()
    corrupt = b"\x89PNG\r\n\x1a\n" + os.urandom(200)
    cases = [
        (pb.UploadImageRequest(data=corrupt, sha256=hashlib.sha256(corrupt).hexdigest()), grpc.StatusCode.INVALID_ARGUMENT, "decode"),
        (pb.UploadImageRequest(data=data, sha256=hashlib.sha256(b"other").hexdigest()), grpc.StatusCode.INVALID_ARGUMENT, "sha256"),
        (pb.UploadImageRequest(data=data, sha256="not-a-hash"), grpc.StatusCode.INVALID_ARGUMENT, "sha256"),
        (pb.UploadImageRequest(), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
    ]
    for request, code, word in cases:
        with pytest.raises(grpc.RpcError) as error:
            stub.UploadImage(request)
        assert error.value.code() is code and word in error.value.details(), error.value.details()
    accepted = stub.UploadImage(pb.UploadImageRequest(data=data, sha256=hashlib.sha256(data).hexdigest()))
    assert (accepted.width, accepted.height) == (64, 64)


def test_oversized_message_is_refused_and_the_server_goes_on(stub):
    big = os.urandom(TEST_MAX_MESSAGE_MB * 2**20 + 1024)
    with pytest.raises(grpc.RpcError) as error:
        stub.UploadImage(pb.UploadImageRequest(data=big))
    assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.ListModels(pb.ListModelsRequest()).models


def test_segment_errors_are_status_codes(stub):
    cases = [
        (pb.SegmentRequest(field_of_view=fov(magnification=2.5)), grpc.StatusCode.INVALID_ARGUMENT, "a box or an outline"),
        (pb.SegmentRequest(field_of_view=fov("nope.svs"), clicks=[pb.Click(x=5000, y=3000, positive=True)]), grpc.StatusCode.NOT_FOUND, "nope.svs"),
        (pb.SegmentRequest(field_of_view=fov(magnification=2.5), clicks=[pb.Click(x=1, y=1, positive=True)]), grpc.StatusCode.INVALID_ARGUMENT, "outside"),
        (pb.SegmentRequest(clicks=[pb.Click(x=1, y=1)]), grpc.StatusCode.INVALID_ARGUMENT, "field_of_view"),
    ]
    for request, code, word in cases:
        with pytest.raises(grpc.RpcError) as error:
            stub.Segment(request)
        assert error.value.code() is code and word in error.value.details(), error.value.details()
