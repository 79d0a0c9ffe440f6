"""The Java client (the jar QuPath loads) and the Node client (@grpc/grpc-js) against the real server
with the real MobileSAM: the same steps give the same polygons, undo and redo behave the same, and
refused requests carry the same status code and message as with the Python client."""

from __future__ import annotations

import cv2
import numpy as np
import openslide
import pytest
from conformance_drivers import Driver, PythonSession

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ServerError
from slidesam.qupath_bridge.tls import TlsSettings
from slidesam.qupath_bridge.wire_requests import UploadedRegion
from tests.conftest import SLIDE_ID, make_server


def object_fov(slide) -> dict:
    """An offset level-0 region around the known object, read at x5 (the protocol's field of view)."""
    minx, miny, maxx, maxy = slide.object_geometry.bounds
    return {"slide_id": SLIDE_ID, "region": [minx - 700.5, miny - 450.25, maxx - minx + 1300, maxy - miny + 1000], "magnification": 5}


def session_steps(slide) -> list[tuple[str, dict]]:
    """Clicks, several clicks as one step, a box, undo/redo/reset, and refused steps in between."""
    point = slide.object_geometry.representative_point()
    cx, cy = point.x, point.y
    minx, miny, maxx, maxy = slide.object_geometry.bounds
    return [
        ("open", {"fov": object_fov(slide)}),
        ("undo", {}),                                            # nothing to undo: FAILED_PRECONDITION
        ("click", {"x": cx, "y": cy, "positive": True}),
        ("click", {"x": cx + 250, "y": cy - 50, "positive": True}),
        ("click", {"x": minx - 150, "y": cy, "positive": False}),
        ("click", {"x": 10.0, "y": 10.0, "positive": True}),     # outside the field of view: INVALID_ARGUMENT
        ("undo", {}),
        ("undo", {}),
        ("redo", {}),
        ("clicks", {"clicks": [[cx - 300, cy + 100, True], [cx + 400, cy + 150, True]]}),
        ("redo", {}),                                            # nothing to redo: FAILED_PRECONDITION
        ("box", {"box": [minx - 40, miny - 40, maxx - minx + 80, maxy - miny + 80]}),
        ("reset", {}),
        ("undo", {}),
        ("finish", {}),
    ]


def run(session, steps) -> list:
    return [session.step(op, **fields) for op, fields in steps]


def assert_same(outcomes: list, reference: list, steps, who: str) -> None:
    for (op, _), got, expected in zip(steps, outcomes, reference, strict=True):
        assert got == expected, f"{who} differs from the Python client at step {op!r}"


def test_same_session_gives_the_same_polygons_undo_and_errors(driver, server, synthetic_slide):
    steps = session_steps(synthetic_slide)
    with SlidesamClient(server.address) as client:
        reference = run(PythonSession(client), steps)
    driver.ask("connect", address=server.address)
    outcomes = run(driver, steps)
    assert_same(outcomes, reference, steps, driver.name)
    # The comparison means something: real polygons came back, undo restored the earlier result, errors were errors.
    assert reference[1] == ("FAILED_PRECONDITION", reference[1][1]) and reference[5][0] == "INVALID_ARGUMENT"
    assert reference[4]["polygons"] and reference[7]["can_redo"] and reference[8]["step"] == 2
    assert reference[7]["polygons"] == reference[2]["polygons"] and reference[8]["polygons"] == reference[3]["polygons"]
    assert reference[10][0] == "FAILED_PRECONDITION" and reference[14]["polygons"] == reference[11]["polygons"]


def test_a_multi_window_object_is_the_same_in_every_client(driver, server, synthetic_slide):
    """A field of view larger than one encoder window at x40: coarse to fine on the server, and every client
    sees the same polygons and the same account of the resolution the model saw; one window says it shrank."""
    minx, miny, maxx, maxy = synthetic_slide.object_geometry.bounds
    point = synthetic_slide.object_geometry.representative_point()
    fov = {"slide_id": SLIDE_ID, "region": [minx - 200, miny - 200, maxx - minx + 400, maxy - miny + 400], "magnification": 40}
    steps = [
        ("open", {"fov": fov}),
        ("click", {"x": point.x, "y": point.y, "positive": True}),
        ("click", {"x": minx - 150, "y": miny - 150, "positive": False}),
        ("undo", {}),
        ("open", {"fov": fov | {"windows": "single"}}),
        ("click", {"x": point.x, "y": point.y, "positive": True}),
        ("finish", {}),
    ]
    with SlidesamClient(server.address) as client:
        reference = run(PythonSession(client), steps)
    driver.ask("connect", address=server.address)
    assert_same(run(driver, steps), reference, steps, driver.name)
    multi, single = reference[1], reference[5]
    assert multi["windows"] > 2 and not multi["downsampled"] and multi["encoder_downsample"] == 1.0
    assert single["windows"] == 1 and single["downsampled"] and single["encoder_downsample"] > 1.5
    assert reference[3]["polygons"] == multi["polygons"]


@pytest.mark.parametrize(
    "change, expected_code",
    [
        ({"slide_id": "../outside.svs"}, "INVALID_ARGUMENT"),
        ({"slide_id": "cases/missing.svs"}, "NOT_FOUND"),
        ({"model": "no_such_model"}, "NOT_FOUND"),
        ({"model": "sam_vit_b"}, "FAILED_PRECONDITION"),  # known, but its checkpoint is not configured
        ({"region": [0.0, 0.0, 0.0, 100.0]}, "INVALID_ARGUMENT"),
    ],
    ids=["escaping-slide-root", "missing-slide", "unknown-model", "model-without-checkpoint", "empty-region"],
)
def test_refused_open_has_the_same_code_and_message(driver, server, synthetic_slide, change, expected_code):
    fov = object_fov(synthetic_slide) | {k: v for k, v in change.items() if k != "model"}
    step = ("open", {"fov": fov, "model": change.get("model", "")})
    with SlidesamClient(server.address) as client:
        expected = PythonSession(client).step(step[0], **step[1])
    driver.ask("connect", address=server.address)
    assert expected[0] == expected_code
    assert driver.step(step[0], **step[1]) == expected


def test_refused_upload_has_the_same_code_and_message(driver, server):
    with SlidesamClient(server.address) as client, pytest.raises(ServerError) as refused:
        client.upload(UploadedRegion(bytes([1, 2, 3])))
    driver.ask("connect", address=server.address)
    reply = driver.ask("upload_raw")
    assert not reply["ok"] and (reply["code"], reply["message"]) == (refused.value.code.name, refused.value.message)


def _region_png(slide, path, compression: int) -> dict:
    """A region read here at downsample 4 and written as PNG (the compression level changes the bytes,
    not the pixels, so each client uploads its own file and the server embeds identical pixels)."""
    minx, miny, maxx, maxy = slide.object_geometry.bounds
    x0, y0, w, h = int(minx) - 600, int(miny) - 400, int(maxx - minx) + 1200, int(maxy - miny) + 800
    with openslide.OpenSlide(str(slide.path)) as handle:
        rgb = np.asarray(handle.read_region((x0, y0), 1, (w // 4, h // 4)).convert("RGB"))
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    return {"png": str(path), "origin_x": float(x0), "origin_y": float(y0), "downsample": 4.0, "mpp": slide.mpp,
            "region": [float(x0), float(y0), float(w // 4 * 4), float(h // 4 * 4)]}


def test_uploaded_pixels_are_sent_when_missing_and_give_the_same_polygons(driver, server, synthetic_slide, tmp_path):
    point = synthetic_slide.object_geometry.representative_point()
    steps = lambda fov: [("open", {"fov": fov}), ("click", {"x": point.x, "y": point.y, "positive": True}), ("finish", {})]  # noqa: E731
    mine = _region_png(synthetic_slide, tmp_path / f"{driver.name}.png", {"java": 1, "node": 2}[driver.name])
    driver.ask("connect", address=server.address)
    outcomes = run(driver, steps(mine))  # the server lacks these bytes: NOT_FOUND, upload, open again
    with SlidesamClient(server.address) as client:
        reference = run(PythonSession(client), steps(_region_png(synthetic_slide, tmp_path / "python.png", 9)))
        again = client.upload(UploadedRegion((tmp_path / f"{driver.name}.png").read_bytes()))
    assert again.already_present, f"the {driver.name} client did not upload its pixels"
    assert reference[1]["polygons"]
    assert_same(outcomes, reference, steps(mine), driver.name)


@pytest.fixture(scope="module")
def secure_server(model_registry, slide_root, synthetic_slide, tmp_path_factory):
    """TLS with client certificates (mutual TLS) and bearer tokens, as a shared lab server runs."""
    from support.certificates import write_certificates

    from slidesam.server.edge.tokens import TokenStore

    folder = tmp_path_factory.mktemp("secure")
    certificates = write_certificates(folder / "tls")
    secret, _ = TokenStore(folder / "tokens.json").add("pathologist")
    running = make_server(
        model_registry, slide_root, allow_anonymous=False, tokens_file=folder / "tokens.json",
        tls_cert=certificates.server_cert, tls_key=certificates.server_key, tls_client_ca=certificates.ca_cert,
    )
    yield running, certificates, secret
    running.stop()


def test_token_and_mutual_tls(driver, secure_server, synthetic_slide):
    running, certificates, secret = secure_server
    tls = {"trust_cert": str(certificates.ca_cert), "client_cert": str(certificates.client_cert), "client_key": str(certificates.client_key)}
    point = synthetic_slide.object_geometry.representative_point()
    steps = [("open", {"fov": object_fov(synthetic_slide)}), ("click", {"x": point.x, "y": point.y, "positive": True})]
    settings = TlsSettings(certificates.ca_cert, certificates.client_cert, certificates.client_key)
    reference = {}
    for token in (secret, "not-a-token", ""):
        with SlidesamClient(running.address, token=token, tls=settings) as client:
            reference[token] = run(PythonSession(client), steps[:1] if token != secret else steps)
    assert reference[secret][1]["polygons"]
    assert {reference[t][0][0] for t in ("not-a-token", "")} == {"UNAUTHENTICATED"}
    for token in (secret, "not-a-token", ""):
        driver.ask("connect", address=running.address, token=token, **tls)
        outcomes = run(driver, steps[:1] if token != secret else steps)
        assert outcomes == reference[token], f"{driver.name} with token {token!r}"


def test_java_session_replays_its_history_after_the_server_restarts(java_command, model_registry, slide_root, synthetic_slide, tmp_path):
    """As the Python client: a stream lost to a server restart is reopened and its history replayed, same polygon."""
    point = synthetic_slide.object_geometry.representative_point()
    first_click = ("click", {"x": point.x, "y": point.y, "positive": True})
    last_click = ("click", {"x": point.x + 250, "y": point.y - 50, "positive": True})
    first = make_server(model_registry, slide_root)
    second = None
    java = Driver("java", java_command, tmp_path / "java.stderr")
    try:
        java.ask("connect", address=first.address)
        before = run(java, [("open", {"fov": object_fov(synthetic_slide)}), first_click,
                            ("click", {"x": point.x - 300, "y": point.y + 100, "positive": True}), ("undo", {})])
        opened_as = java.ask("session_info")["object_id"]
        first.stop()
        second = make_server(model_registry, slide_root, port=first.port)
        replayed = java.step(last_click[0], **last_click[1])
        info = java.ask("session_info")
        with SlidesamClient(second.address) as client:
            expected = run(PythonSession(client), [("open", {"fov": object_fov(synthetic_slide)}), first_click, last_click])[-1]
    finally:
        java.close()
        if second is not None:
            second.stop()
    assert before[-1]["step"] == 1 and (info["reconnects"], info["object_id"]) == (1, opened_as)
    assert replayed == expected and replayed["step"] == 2 and not replayed["can_redo"]
