"""Fuzzing every request message against a real server over loopback gRPC (Hypothesis).

The requests go through the raw generated stubs (the Python client validates before sending), typed
(strategies in tests/support/fuzz_messages.py: plausible values mixed with hostile ones) and as raw
bytes (random, or serialized requests mutated at the byte level). Properties:

- every unary call ends OK or with a status that is not INTERNAL/UNKNOWN (nor a deadline, i.e. a
  hang, nor UNAVAILABLE/CANCELLED, i.e. a crash), with a message, within CALL_TIMEOUT seconds;
- every Interact request sequence gets exactly one response per request, in order, with its
  request_id, each a result or a StepError with a valid non-INTERNAL code and a message;
- results are well formed (an object id, finite numbers);
- after every example the server still answers ListModels (it did not crash).

The run is deterministic (derandomized) and sized for about a minute on a 2-core CPU; each test
prints how many cases it ran. SLIDESAM_FUZZ_EXAMPLES=N runs N examples per test (a longer manual
run; add `-o timeout=0` beyond about 1000), SLIDESAM_FUZZ_SEED=S makes it random from seed S instead of
derandomized.

The bugs this fuzz found (undecodable bytes answered UNKNOWN, an overflowing resolution answered
INTERNAL, a damaged slide answered INTERNAL and then failing every later read) are fixed, and each is a
regression test at the end of this file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import shutil
import time
import traceback
from collections import Counter
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from support.fuzz_messages import FuzzTarget, RequestStrategies

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc
from tests.conftest import make_server

# The server decodes fuzzed images in this process; PIL warns about their broken TIFF tags.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin", "ignore::PIL.Image.DecompressionBombWarning")

CALL_TIMEOUT = 30.0  # seconds; a call that takes longer counts as a hang
SERVICE = "/slidesam.v1.Segmentation"
UNARY_METHODS = {
    "ListModels": (pb.ListModelsRequest, pb.ListModelsResponse),
    "UploadImage": (pb.UploadImageRequest, pb.UploadImageResponse),
    "Segment": (pb.SegmentRequest, pb.SegmentResponse),
}
FORBIDDEN = {
    grpc.StatusCode.OK,  # a StepError never carries OK
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNIMPLEMENTED,
}
CODES = {code.value[0]: code for code in grpc.StatusCode}

SLIDE = "cases/tumour.svs"
SLIDE_ALIASES = (SLIDE, "./cases/tumour.svs", "cases/./tumour.svs", "cases//tumour.svs", "cases/link.svs")
HOSTILE_FILES = (
    "cases/garbage.svs", "cases/empty.svs", "cases/fake-tiff.svs", "cases/dir.svs", "cases/loop.svs",
    "cases/escape.svs", "cases/dangling.svs", "notes.txt", "cases", "cases/",
)
EXPENSIVE_MODELS = ("sam_vit_b", "sam_vit_l", "sam_vit_h")

DEFAULT_EXAMPLES = {  # about 45 s in all on a 2-core CPU; SLIDESAM_FUZZ_EXAMPLES=N for a longer run
    "upload_image": 150,
    "segment": 50,
    "interact": 90,
    "raw_unary": 140,
    "raw_interact": 60,
}


def _settings(name: str):
    examples = int(os.environ.get("SLIDESAM_FUZZ_EXAMPLES") or 0) or DEFAULT_EXAMPLES[name]
    chosen_seed = os.environ.get("SLIDESAM_FUZZ_SEED")
    configured = settings(
        max_examples=examples,
        deadline=None,
        derandomize=chosen_seed is None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )

    def apply(test):
        test = configured(test)
        return seed(int(chosen_seed))(test) if chosen_seed is not None else test

    return apply


# ---------------------------------------------------------------------------------------------
# The server under test: its own slide root (with hostile files) and its own caches.


def _corrupt_level_tiles(path: Path, level_shape: tuple[int, int]) -> None:
    """Overwrites the JPEG start of every tile of the pyramid level of that (rows, columns) shape."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = next(p for p in tif.pages if p.is_tiled and p.shape[:2] == level_shape)
        offsets = [offset for offset in page.dataoffsets if offset]
    with open(path, "r+b") as handle:
        for offset in offsets:
            handle.seek(offset)
            handle.write(b"\x00" * 16)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory, synthetic_slide) -> Path:
    root = tmp_path_factory.mktemp("fuzz-slides")
    cases = root / "cases"
    cases.mkdir()
    try:
        os.link(synthetic_slide.path, cases / "tumour.svs")
    except OSError:
        shutil.copyfile(synthetic_slide.path, cases / "tumour.svs")
    (cases / "link.svs").symlink_to("tumour.svs")
    rng = np.random.default_rng(0)
    (cases / "garbage.svs").write_bytes(rng.bytes(4096))
    (cases / "empty.svs").write_bytes(b"")
    (cases / "fake-tiff.svs").write_bytes(b"II*\x00" + rng.bytes(4096))
    (cases / "dir.svs").mkdir()
    (cases / "loop.svs").symlink_to("loop.svs")
    (cases / "escape.svs").symlink_to(synthetic_slide.path)  # a real slide, outside the root
    (cases / "dangling.svs").symlink_to("nowhere.svs")
    (root / "notes.txt").write_text("not a slide\n")
    # A slide whose level-1 tiles do not decode (only the known-failure tests below use it).
    shutil.copyfile(synthetic_slide.path, cases / "corrupt-tiles.svs")
    _corrupt_level_tiles(cases / "corrupt-tiles.svs", (synthetic_slide.height // 4, synthetic_slide.width // 4))
    return root


def _upload_png() -> bytes:
    """A 96 x 80 tissue-like image with one dark disc, always the same."""
    image = np.full((80, 96, 3), (220, 204, 236), np.uint8)
    cv2.circle(image, (48, 40), 22, (122, 40, 96), -1)
    return cv2.imencode(".png", image)[1].tobytes()


class ServerExceptions(logging.Handler):
    """The exceptions the server logs (it logs every INTERNAL with its traceback before answering)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.caught: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.caught.append(record.exc_info[1])

    def take(self) -> list[BaseException]:
        caught, self.caught = self.caught, []
        return caught


SERVER_EXCEPTIONS = ServerExceptions()


@pytest.fixture(scope="module")
def fuzz_server(model_registry, fuzz_root):
    logger = logging.getLogger("slidesam")
    logger.addHandler(SERVER_EXCEPTIONS)
    # multi-window objects stay small and their steps short (larger ones are refused, which is fuzzed too)
    running = make_server(model_registry, fuzz_root, max_step_encodes=2, max_object_mpixels=3)
    yield running
    running.stop()
    logger.removeHandler(SERVER_EXCEPTIONS)


@pytest.fixture(scope="module")
def channel(fuzz_server):
    options = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]
    with grpc.insecure_channel(fuzz_server.address, options=options) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel):
    return pb_grpc.SegmentationStub(channel)


@pytest.fixture(scope="module")
def target(stub, synthetic_slide, model_registry) -> FuzzTarget:
    data = _upload_png()
    uploaded = stub.UploadImage(pb.UploadImageRequest(data=data, sha256=hashlib.sha256(data).hexdigest()), timeout=CALL_TIMEOUT)

    def slide_fov(x, y, width, height, downsample):
        return pb.FieldOfView(
            image=pb.ImageSource(slide_id=SLIDE), region=pb.Rect(x=x, y=y, width=width, height=height),
            resolution=pb.Resolution(downsample=downsample),
        )

    known_fovs = (
        slide_fov(4000, 2400, 2600, 1900, 4.0),  # around the known object, level 1 (x10)
        slide_fov(5000, 3000, 64, 64, 1.0),  # a tiny region at full resolution
        pb.FieldOfView(
            image=pb.ImageSource(uploaded=pb.UploadedImageRef(sha256=uploaded.sha256)),
            region=pb.Rect(x=0, y=0, width=uploaded.width, height=uploaded.height),
        ),
        # Valid but extreme: the whole slide as one pixel; the upload far out in level-0 space, upscaled.
        slide_fov(0, 0, synthetic_slide.width, synthetic_slide.height, 1e6),
        pb.FieldOfView(
            image=pb.ImageSource(uploaded=pb.UploadedImageRef(sha256=uploaded.sha256, origin_x=1e9, origin_y=-1e9, downsample=1000, mpp=0.25)),
            region=pb.Rect(x=1e9, y=-1e9, width=uploaded.width * 1000, height=uploaded.height * 1000),
        ),
        # Wider than one encoder window at full resolution: a multi-window object (two fine windows).
        slide_fov(4700, 3100, 1100, 700, 1.0),
    )
    # Never ask for a big SAM that happens to have a checkpoint here: loading it would take minutes.
    refused = ("nope", *(name for name in EXPENSIVE_MODELS if not model_registry.is_available(name)))
    return FuzzTarget(
        slide_ids=SLIDE_ALIASES,
        hostile_slide_ids=HOSTILE_FILES,
        slide_size=(synthetic_slide.width, synthetic_slide.height),
        slide_mpp=synthetic_slide.mpp,
        slide_objective_power=synthetic_slide.objective_power,
        known_fovs=known_fovs,
        upload_sha256=uploaded.sha256,
        upload_size=(uploaded.width, uploaded.height),
        valid_models=("", "mobile_sam"),
        refused_models=refused,
    )


@pytest.fixture(scope="module")
def strategies(target) -> RequestStrategies:
    return RequestStrategies(target)


# ---------------------------------------------------------------------------------------------
# Properties


class Tally:
    """What one fuzz test ran: examples, requests, outcomes by status, seconds; regions embedded by then."""

    def __init__(self) -> None:
        self.examples = 0
        self.requests = 0
        self.outcomes: Counter[str] = Counter()
        self.embeddings = 0
        self.seconds = 0.0

    def line(self, name: str) -> str:
        outcomes = ", ".join(f"{key} {count}" for key, count in self.outcomes.most_common())
        return (
            f"fuzz {name}: {self.examples} examples, {self.requests} requests in {self.seconds:.1f} s "
            f"({self.embeddings} regions embedded so far); outcomes: {outcomes}"
        )


TOTALS: dict[str, Tally] = {}


def say(config, line: str) -> None:
    """Writes a line to the terminal even while pytest captures output (CI logs show it without -s)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")  # ends the line of progress dots
        reporter.write_line(line)


def embedded_regions(server) -> int:
    """How many regions the server has embedded (each cost an encode); -1 if the engine hides it."""
    try:
        return server.running.devices.workers[0].engine.cache.stats().entries
    except AttributeError:
        return -1


@pytest.fixture
def tally(request, record_property, fuzz_server):
    name = request.node.name.removeprefix("test_fuzz_")
    counted = TOTALS[name] = Tally()
    yield counted
    counted.embeddings = embedded_regions(fuzz_server)
    record_property("fuzz_examples", counted.examples)
    say(request.config, counted.line(name))


@pytest.fixture(scope="module", autouse=True)
def fuzz_summary(request):
    yield
    if TOTALS:
        examples = sum(t.examples for t in TOTALS.values())
        requests = sum(t.requests for t in TOTALS.values())
        seconds = sum(t.seconds for t in TOTALS.values())
        say(request.config, f"fuzz total: {examples} examples ({requests} requests) over {len(TOTALS)} tests in {seconds:.1f} s")


def assert_refusal(code: grpc.StatusCode, message: str, context, tally: Tally | None = None) -> None:
    """A refusal a client can act on: no INTERNAL/UNKNOWN, no hang or crash, and a message; a failure
    shows the server's own traceback."""
    if code in FORBIDDEN:
        caught = SERVER_EXCEPTIONS.take()
        server_side = "".join("".join(traceback.format_exception(error)) for error in caught)
        raise AssertionError(f"{code.name}: {message!r} for {context}" + (f"\nserver side:\n{server_side}" if server_side else ""))
    assert message, f"{code.name} without a message for {context}"
    if tally is not None:
        tally.outcomes[code.name] += 1


def assert_finite(value: float, what: str) -> None:
    assert math.isfinite(value), f"{what} is {value}"


def check_result(result: pb.SegmentationResult, tally: Tally) -> None:
    assert result.object_id, result
    assert result.model_id.startswith("mobile_sam@"), result.model_id
    assert result.HasField("timings") and result.HasField("region"), result
    for polygon in result.polygons:
        for ring in (polygon.exterior, *polygon.holes):
            assert len(ring.xy) % 2 == 0 and len(ring.xy) >= 6, ring
            assert all(math.isfinite(v) for v in ring.xy), ring
    for name in ("score", "area_px", "area_um2", "downsample"):
        assert_finite(getattr(result, name), name)
    for name in ("x", "y", "width", "height"):
        assert_finite(getattr(result.region, name), f"region.{name}")
    assert result.downsample > 0 and result.region.width > 0 and result.region.height > 0, result.region


def unary(call, request, tally: Tally, parse=None):
    """Calls; checks the status (or parses the reply); returns the reply or None when refused."""
    tally.requests += 1
    try:
        reply = call(request, timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        code, message = error.code(), error.details() or ""
        assert_refusal(code, message, request, tally)
        return None
    tally.outcomes["OK"] += 1
    return parse(reply) if parse else reply


def check_interact(requests: list[pb.InteractRequest], responses: list[pb.InteractResponse], tally: Tally) -> None:
    assert len(responses) == len(requests), (len(responses), len(requests), requests)
    for request, response in zip(requests, responses):
        assert response.request_id == request.request_id, (request, response)
        outcome = response.WhichOneof("outcome")
        assert outcome in ("result", "error"), response
        if outcome == "error":
            code = CODES.get(response.error.code)
            assert code is not None, f"StepError code {response.error.code} is no gRPC status code"
            assert_refusal(code, response.error.message, request, tally)
        else:
            tally.outcomes["result"] += 1
            check_result(response.result, tally)


def assert_alive(stub) -> None:
    names = [model.name for model in stub.ListModels(pb.ListModelsRequest(), timeout=CALL_TIMEOUT).models]
    assert "mobile_sam" in names, names


class Example:
    """Counts one example and its time; checks the server is still alive after it."""

    def __init__(self, tally: Tally, stub) -> None:
        self.tally, self.stub = tally, stub

    def __enter__(self):
        SERVER_EXCEPTIONS.take()  # only what this example causes counts
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, value, traceback):
        self.tally.examples += 1
        if kind is None:
            assert_alive(self.stub)
        self.tally.seconds += time.perf_counter() - self.started
        return False


# ---------------------------------------------------------------------------------------------
# Typed requests


def test_fuzz_upload_image(stub, strategies, tally):
    @_settings("upload_image")
    @given(data=st.data())
    def run(data):
        request = data.draw(strategies.upload_image_request, label="request")
        with Example(tally, stub):
            reply = unary(stub.UploadImage, request, tally)
            if reply is not None:
                assert reply.sha256 == hashlib.sha256(request.data).hexdigest()
                assert reply.width > 0 and reply.height > 0

    run()
    assert tally.examples > 0


def test_fuzz_segment(stub, strategies, tally):
    @_settings("segment")
    @given(data=st.data())
    def run(data):
        request = data.draw(strategies.segment_request, label="request")
        with Example(tally, stub):
            reply = unary(stub.Segment, request, tally)
            if reply is not None:
                check_result(reply.result, tally)

    run()
    assert tally.examples > 0
    assert tally.outcomes["OK"] > 0, "no Segment request was valid: the strategies miss the model path"


def test_fuzz_interact(stub, strategies, tally):
    @_settings("interact")
    @given(data=st.data())
    def run(data):
        requests = data.draw(strategies.interact_sequence, label="requests")
        with Example(tally, stub):
            tally.requests += len(requests)
            try:
                responses = list(stub.Interact(iter(requests), timeout=CALL_TIMEOUT))
            except grpc.RpcError as error:
                raise AssertionError(f"the stream ended with {error.code().name}: {error.details()!r} for {requests}") from None
            check_interact(requests, responses, tally)

    run()
    assert tally.examples > 0
    assert tally.outcomes["result"] > 0, "no Interact step succeeded: the strategies miss the model path"


# ---------------------------------------------------------------------------------------------
# Raw bytes


def _raw_unary(channel, method: str):
    return channel.unary_unary(f"{SERVICE}/{method}", request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _parses(message_type, data: bytes) -> bool:
    try:
        message_type.FromString(data)
    except Exception:  # noqa: BLE001 - DecodeError, or RuntimeWarning-like errors of upb
        return False
    return True


def test_fuzz_raw_unary(channel, stub, strategies, tally):
    typed = {
        "ListModels": strategies.list_models_request,
        "UploadImage": strategies.upload_image_request,
        "Segment": strategies.segment_request,
    }
    raw = {method: strategies.raw_request_bytes(strategy) for method, strategy in typed.items()}
    calls = {method: _raw_unary(channel, method) for method in UNARY_METHODS}

    @_settings("raw_unary")
    @given(data=st.data())
    def run(data):
        method = data.draw(st.sampled_from(sorted(UNARY_METHODS)), label="method")
        payload = data.draw(raw[method], label="payload")
        request_type, reply_type = UNARY_METHODS[method]
        with Example(tally, stub):
            if _parses(request_type, payload):
                reply = unary(calls[method], payload, tally, parse=reply_type.FromString)
                if isinstance(reply, pb.SegmentResponse):
                    check_result(reply.result, tally)
            else:
                # Bytes that are no request: the service answers INVALID_ARGUMENT, with a message.
                tally.requests += 1
                with pytest.raises(grpc.RpcError) as refused:
                    calls[method](payload, timeout=CALL_TIMEOUT)
                code = refused.value.code()
                tally.outcomes[f"undecodable:{code.name}"] += 1
                assert code is grpc.StatusCode.INVALID_ARGUMENT and refused.value.details(), (code, refused.value.details())

    run()
    assert tally.examples > 0


def test_fuzz_raw_interact(channel, stub, strategies, tally):
    call = channel.stream_stream(f"{SERVICE}/Interact", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    streams = strategies.raw_interact_stream()

    @_settings("raw_interact")
    @given(data=st.data())
    def run(data):
        payloads = data.draw(streams, label="payloads")
        decodable = [_parses(pb.InteractRequest, payload) for payload in payloads]
        parsed = [pb.InteractRequest.FromString(payload) for payload, ok in zip(payloads, decodable) if ok]
        with Example(tally, stub):
            tally.requests += len(payloads)
            responses = [pb.InteractResponse.FromString(reply) for reply in call(iter(payloads), timeout=CALL_TIMEOUT)]
            assert len(responses) == len(payloads), "one response per message, undecodable ones included"
            for ok, response in zip(decodable, responses):
                if not ok:
                    tally.outcomes["undecodable:INVALID_ARGUMENT"] += 1
                    assert response.request_id == 0 and response.HasField("error") and response.error.message, response
                    assert CODES[response.error.code] is grpc.StatusCode.INVALID_ARGUMENT, response
            check_interact(parsed, [response for ok, response in zip(decodable, responses) if ok], tally)

    run()
    assert tally.examples > 0


# ---------------------------------------------------------------------------------------------
# Bugs the fuzz found, fixed since; each stays as a regression test.


@pytest.mark.parametrize("method", [*UNARY_METHODS, "Interact"])
def test_undecodable_request_bytes_are_invalid_argument(channel, stub, method):
    garbage = b"\xff\xff\xff"
    if method == "Interact":
        call = channel.stream_stream(f"{SERVICE}/Interact", request_serializer=lambda b: b, response_deserializer=pb.InteractResponse.FromString)
        valid = pb.InteractRequest(request_id=7, undo=pb.Undo()).SerializeToString()
        refused, after = list(call(iter([garbage, valid]), timeout=CALL_TIMEOUT))
        assert refused.request_id == 0 and CODES[refused.error.code] is grpc.StatusCode.INVALID_ARGUMENT, refused
        assert after.request_id == 7 and after.HasField("error"), "the stream goes on after an undecodable message"
        assert "InteractRequest" in refused.error.message
    else:
        with pytest.raises(grpc.RpcError) as refused:
            _raw_unary(channel, method)(garbage, timeout=CALL_TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, (refused.value.code(), refused.value.details())
    assert_alive(stub)


@pytest.mark.parametrize("resolution", [{"downsample": 5e-324}, {"mpp": 5e-324}, {"magnification": 1e308}], ids=["downsample", "mpp", "magnification"])
def test_extreme_resolution_is_refused_not_internal(stub, resolution):
    fov = pb.FieldOfView(
        image=pb.ImageSource(slide_id=SLIDE), region=pb.Rect(x=4000, y=2400, width=2600, height=1900),
        resolution=pb.Resolution(**resolution),
    )
    with pytest.raises(grpc.RpcError) as refused:
        stub.Segment(pb.SegmentRequest(field_of_view=fov, clicks=[pb.Click(x=5000, y=3000, positive=True)]), timeout=CALL_TIMEOUT)
    (opened,) = stub.Interact(iter([pb.InteractRequest(request_id=1, open=pb.OpenObject(field_of_view=fov))]), timeout=CALL_TIMEOUT)
    SERVER_EXCEPTIONS.take()
    assert_alive(stub)
    assert_refusal(refused.value.code(), refused.value.details(), resolution)
    assert opened.HasField("error"), opened
    assert_refusal(CODES[opened.error.code], opened.error.message, resolution)


def _open(stub, slide_id: str, rect: tuple[float, float, float, float], downsample: float) -> pb.InteractResponse:
    fov = pb.FieldOfView(image=pb.ImageSource(slide_id=slide_id), region=pb.Rect(x=rect[0], y=rect[1], width=rect[2], height=rect[3]))
    fov.resolution.downsample = downsample
    (response,) = stub.Interact(iter([pb.InteractRequest(request_id=1, open=pb.OpenObject(field_of_view=fov))]), timeout=CALL_TIMEOUT)
    return response


def test_undecodable_slide_tiles_are_refused_with_a_status(stub, fuzz_root):
    response = _open(stub, "cases/corrupt-tiles.svs", (4000, 2400, 2600, 1900), 4.0)
    assert response.HasField("error"), response
    assert_refusal(CODES[response.error.code], response.error.message, "corrupt level-1 tiles")


def test_a_failed_slide_read_does_not_poison_the_slide(stub, fuzz_root):
    _open(stub, "cases/corrupt-tiles.svs", (4000, 2400, 2600, 1900), 4.0)  # level 1: corrupt
    response = _open(stub, "cases/corrupt-tiles.svs", (5000, 3000, 256, 256), 1.0)  # level 0: intact
    assert response.HasField("result"), response.error
