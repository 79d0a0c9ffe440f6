"""The QuPath side's logic in the Java library (what the Groovy script calls) against the bridge it must
mirror: prompt groups and their problems, fields of view, the prompt hash, and the live segmenter, whose
result annotations must equal, byte for byte, what the bridge writes for the same prompts and region,
reached with the fewest steps (appended clicks sent, moved clicks undone and re-sent, undo by the server)."""

from __future__ import annotations

import json
import math
import random

import cv2
import numpy as np
import openslide
import pytest
import shapely
from conformance_drivers import Driver, python_outcome

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.fov import FovSettings, region_around_group
from slidesam.qupath_bridge.project import Annotation, PathClass
from slidesam.qupath_bridge.prompts import PromptClasses, PromptGroup, find_prompt_groups, outside_image
from slidesam.qupath_bridge.qupath_values import geometry_sha256
from slidesam.qupath_bridge.results import Job, Segmentation, result_annotation
from slidesam.qupath_bridge.sync import PROMPTS_SOURCE, Settings
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, SlideImage
from slidesam.server.engine.geometry import geometry_iou
from tests.conftest import SLIDE_ID

EPOCH = "1790000000"


@pytest.fixture
def java(java_command, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)  # both sides stamp results with this time
    driver = Driver("java", java_command, tmp_path / "java.stderr")
    yield driver
    driver.close()


def ok(reply: dict) -> dict:
    assert reply["ok"], reply
    return reply


def bridge_annotation(a: dict) -> Annotation:
    """The protocol's annotation as the bridge reads it from QuPath."""
    if "points" in a:
        geometry = shapely.Point(a["points"][0]) if len(a["points"]) == 1 else shapely.MultiPoint(a["points"])
    elif "rect" in a:
        x, y, w, h = a["rect"]
        geometry = shapely.box(x, y, x + w, y + h)
    else:
        geometry = shapely.LineString([(0, 0), (1, 1)])
    return Annotation(a["id"], geometry, a["class"], a["name"])


def group_json(group: PromptGroup) -> dict:
    return {"name": group.name, "clicks": [[c.x, c.y, c.positive] for c in group.clicks], "box": list(group.box) if group.box else None}


def points(aid: str, cls: str, name: str, *xy) -> dict:
    return {"id": aid, "class": cls, "name": name, "points": [list(p) for p in xy]}


POS, NEG, BOX = "SAM positive", "SAM negative", "SAM box"


def test_prompt_groups_and_their_problems_equal_the_bridges(java):
    annotations = [
        points("a1", POS, "lesion 1", (100.5, 200.25), (300, 400)),
        points("a2", NEG, "lesion 1", (150, 250)),
        points("a3", POS, "", (50, 60)),
        {"id": "a4", "class": BOX, "name": "boxed", "rect": [10, 20, 300, 200]},
        points("a5", NEG, "boxed", (20, 30)),
        points("a6", "sam Positive", "near miss", (1, 1)),
        points("a7", NEG, "negative only", (5, 5)),
        {"id": "a8", "class": BOX, "name": "two boxes", "rect": [0, 0, 10, 10]},
        {"id": "a9", "class": BOX, "name": "two boxes", "rect": [5, 5, 10, 10]},
        points("a10", POS, "two boxes", (6, 6)),
        {"id": "a11", "class": BOX, "name": "line", "shape": "LineString"},
        {"id": "a12", "class": POS, "name": "area click", "rect": [0, 0, 5, 5]},
        points("a13", POS, "empty"),
        points("a14", POS, "not finite", (math.nan, 1)),
        points("a15", "Tumor", "lesion 1", (9, 9)),
        points("a16", POS, "  lesion 1 ", (500, 600)),
        points("a17", "SAM  negative", "it's", (2, 2)),
    ]
    expected_groups, expected_problems = find_prompt_groups([bridge_annotation(a) for a in annotations], PromptClasses())
    found = ok(java.ask("prompt_groups", annotations=annotations))
    assert [{**g, "box": g.get("box")} for g in found["groups"]] == [group_json(g) for g in expected_groups]
    assert found["problems"] == expected_problems
    assert [g.name for g in expected_groups] == ["lesion 1", "", "boxed"] and len(expected_problems) == 8


def test_outside_image_messages_equal_the_bridges(java):
    cases = [
        (PromptGroup("far", (Click(10.0, 10.0), Click(123456.789, 5.0))), 100000.5, 8192.0),
        (PromptGroup("", (Click(1234567.0, 0.25),)), 99999.0, 0.000123),
        (PromptGroup("inside", (Click(5.0, 5.0),), (1.0, 1.0, 3.0, 3.0)), 10.0, 10.0),
    ]
    for group, width, height in cases:
        reply = ok(java.ask("outside_image", group=group_json(group), width=width, height=height))
        assert reply.get("message") == outside_image(group, width, height)


def test_fields_of_view_equal_the_bridges_and_follow_the_selection_or_view(java):
    rng = random.Random(7)
    for _ in range(25):
        width, height = rng.randint(500, 120_000), rng.randint(500, 90_000)
        clicks = tuple(Click(rng.uniform(0, width), rng.uniform(0, height), rng.random() < 0.7) for _ in range(rng.randint(1, 4)))
        x, y = rng.uniform(0, width - 100), rng.uniform(0, height - 100)
        box = (x, y, rng.uniform(1, width - x), rng.uniform(1, height - y)) if rng.random() < 0.4 else None
        group = PromptGroup("g", clicks, box)
        settings = FovSettings(margin=rng.choice([0.0, 0.25, 0.6]), min_size=rng.choice([256.0, 2048.0, 5000.0]))
        fov = {"margin": settings.margin, "min_size": settings.min_size}
        reply = ok(java.ask("region", group=group_json(group), width=width, height=height, fov=fov))
        assert reply["region"] == list(region_around_group(group, width, height, settings))
    prompts = PromptGroup("g", (Click(1000.5, 2000.5), Click(1500.0, 2100.0)))
    group = group_json(prompts)
    bridge = {"margin": 0.25, "min_size": 2048.0}
    view = {"margin": 0.25, "min_size": 2048.0, "mode": "SELECTION_OR_VIEW"}
    ask = lambda fov, **where: ok(java.ask("region", group=group, width=10_000, height=8_000, fov=fov, **where))["region"]  # noqa: E731
    assert ask(view, selection=[900.2, 1900.7, 700, 300], visible=[0, 0, 5000, 5000]) == [900, 1900, 701, 301]
    assert ask(view, selection=[0, 0, 100, 100], visible=[-50.5, 1500, 20000, 999.9]) == [0, 1500, 10000, 1000]
    assert ask(view, selection=None, visible=[0, 0, 100, 100]) == ask(bridge) == list(region_around_group(prompts, 10_000, 8_000, FovSettings()))


def test_prompt_hash_equals_the_bridges_for_awkward_numbers_and_names(java):
    clicks = (Click(0.1 + 0.2, 1e16 + 2, True), Click(1e-7, 123456789.123456789, False), Click(5e-324, 2.5e-5, True))
    group = PromptGroup('läsion ✓ "q" \\ \n', clicks, (1 / 3, 2 / 3, 1e22, 7.0))
    for resolution in ({}, {"magnification": 10.0}, {"downsample": 3.5}):
        settings = Settings(target=PathClass("Tumor µ"), model="mobile_sam", fov=FovSettings(margin=0.1, **resolution))
        fov = {"margin": 0.1, "min_size": 2048.0, **resolution}
        reply = ok(java.ask("prompts_sha256", group=group_json(group), target_class="Tumor µ", model="mobile_sam", fov=fov))
        assert reply["sha256"] == group.sha256(settings.hashed())


def test_geometry_hash_equals_the_bridges_off_the_grid_and_far_out(java):
    """Coordinates off QuPath's 0.01-px grid, halfway between two grid steps, beyond 2^17 (where float32 keeps less
    than 0.01 px), holes and several parts: the Java client names a result's geometry as the bridge does."""
    rng = np.random.default_rng(3)
    shapes = [shapely.box(10.005, 20.015, 300.125, 250.995).difference(shapely.box(80.2, 90.6, 200.4, 180.8))]
    for offset in (0.0, 70_000.0, 140_000.0, 250_000.0):
        angles = np.sort(rng.uniform(0, 2 * math.pi, 40))
        radii = rng.uniform(300, 500, 40)
        centre = offset + rng.uniform(1000, 2000, 2)
        shapes.append(shapely.Polygon(np.c_[centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)]))
    shapes.append(shapely.MultiPolygon(shapes[:3]))
    for geometry in shapes:
        polygons = [[shapely.get_coordinates(ring)[:-1].ravel().tolist() for ring in (part.exterior, *part.interiors)]
                    for part in shapely.get_parts(geometry)]
        assert ok(java.ask("geometry_sha256", polygons=polygons))["sha256"] == geometry_sha256(geometry)


# ------------------------------------------------------------------------------------------------
# The live segmenter against the real server


def lesion_snapshots(slide) -> list[list[dict]]:
    """What a pathologist does in QuPath: a click, another, drags the first, adds a negative one."""
    point = slide.object_geometry.representative_point()
    cx, cy = point.x, point.y
    minx = slide.object_geometry.bounds[0]
    first, second, moved = (cx, cy), (cx + 250, cy - 50), (cx - 300, cy + 100)
    negative = points("n1", NEG, "lesion 1", (minx - 120, cy))
    return [
        [points("p1", POS, "lesion 1", first)],
        [points("p1", POS, "lesion 1", first, second)],
        [points("p1", POS, "lesion 1", moved, second)],
        [points("p1", POS, "lesion 1", moved, second), negative],
    ]


class Bridge:
    """The bridge's answer for a group on a given region: the Python client, then results.result_annotation."""

    settings = Settings(target=PathClass("Tumor"))

    def __init__(self, client: SlidesamClient):
        self.client = client
        self.checkpoints = {m.name: m.checkpoint_sha256 for m in client.list_models()}

    def annotation(self, group: PromptGroup, region: tuple[int, int, int, int]) -> Annotation:
        with self.client.open_object(FieldOfView(SlideImage(SLIDE_ID), *map(float, region))) as session:
            if group.box is not None:
                session.box(*group.box)
            for click in group.clicks:
                session.click(click.x, click.y, click.positive)
            result = session.finish()
        answer = Segmentation(result, region, self.checkpoints[result.model_id.split("@")[0]])
        job = Job(group, group.sha256(self.settings.hashed()))
        return result_annotation("tumour.svs", job, answer, PROMPTS_SOURCE, "Tumor", self.settings.hashed())


def assert_written_as_the_bridge_writes(java_result: dict, expected: Annotation) -> None:
    assert (java_result["name"], java_result["class"]) == (expected.name, expected.path_class)
    assert java_result["description"] == expected.description
    assert java_result["measurements"] == expected.measurements
    assert shapely.from_wkt(java_result["wkt"]).equals_exact(expected.geometry, 0)


def test_live_results_are_the_bridges_and_reuse_one_object(java, server, synthetic_slide, slide_root, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    image = {"name": "tumour.svs", "width": synthetic_slide.width, "height": synthetic_slide.height, "mpp": synthetic_slide.mpp,
             "objective_power": synthetic_slide.objective_power, "path": str(synthetic_slide.path)}
    ok(java.ask("connect", address=server.address))
    ok(java.ask("live_start", image=image, target_class="Tumor", fov={"margin": 0.25, "min_size": 2048.0}, slide_map=[f"{slide_root}="]))
    with SlidesamClient(server.address) as client:
        bridge = Bridge(client)
        snapshots = lesion_snapshots(synthetic_slide)
        live = [ok(java.ask("live_apply", annotations=s))["results"] for s in snapshots]
        assert [len(r) for r in live] == [1, 1, 1, 1]
        groups = [find_prompt_groups([bridge_annotation(a) for a in s], PromptClasses())[0][0] for s in snapshots]
        region = tuple(json.loads(live[0][0]["description"])["field_of_view"][k] for k in ("x", "y", "width", "height"))
        assert region == region_around_group(groups[0], synthetic_slide.width, synthetic_slide.height, FovSettings())
        for results, group in zip(live, groups):
            assert_written_as_the_bridge_writes(results[0], bridge.annotation(group, region))
        # One object on the server all along (no re-open: moved clicks were undone and re-sent).
        assert len({r[0]["result"]["object_id"] for r in live}) == 1
        # Nothing changed: nothing sent. Undo in QuPath: the negative click goes, the server undoes it.
        assert ok(java.ask("live_apply", annotations=snapshots[-1]))["results"] == []
        edit = ok(java.ask("live_undo_edit", annotations=snapshots[-1]))
        assert (edit["id"], edit["remaining"]) == ("n1", [])
        undone = ok(java.ask("live_apply", annotations=snapshots[2]))["results"][0]
        assert undone["result"]["can_redo"] and undone["result"]["polygons"] == live[2][0]["result"]["polygons"]
        assert_written_as_the_bridge_writes(undone, bridge.annotation(groups[2], region))
        # A second group with a box: its own object and field of view, box first as the bridge sends it.
        minx, miny, maxx, maxy = synthetic_slide.object_geometry.bounds
        boxed = snapshots[2] + [{"id": "b1", "class": BOX, "name": "lesion 2", "rect": [minx - 40, miny - 40, maxx - minx + 80, maxy - miny + 80]},
                                points("b2", NEG, "lesion 2", (minx + 60, (miny + maxy) / 2))]
        second = ok(java.ask("live_apply", annotations=boxed))["results"]
        assert [r["group"] for r in second] == ["lesion 2"]
        group = find_prompt_groups([bridge_annotation(a) for a in boxed], PromptClasses())[0][1]
        assert_written_as_the_bridge_writes(second[0], bridge.annotation(group, region_around_group(group, synthetic_slide.width, synthetic_slide.height, FovSettings())))
        assert python_outcome(client.segment(FieldOfView(SlideImage(SLIDE_ID), *map(float, region)), groups[2].clicks))["polygons"] == undone["result"]["polygons"]
    reply = ok(java.ask("result_group", description=second[0]["description"]))
    assert reply["group"] == "lesion 2"
    for other in ('{"slidesam": 1, "source": "other", "group": "x"}', "not json", '["slidesam"]', ""):
        assert "group" not in ok(java.ask("result_group", description=other))


def test_live_problems_are_reported_and_a_fixed_group_is_segmented(java, server, synthetic_slide, slide_root):
    image = {"name": "tumour.svs", "width": synthetic_slide.width, "height": synthetic_slide.height, "mpp": synthetic_slide.mpp,
             "objective_power": synthetic_slide.objective_power, "path": str(synthetic_slide.path)}
    ok(java.ask("connect", address=server.address))
    ok(java.ask("live_start", image=image, target_class="Tumor", fov={"margin": 0.25, "min_size": 2048.0}, slide_map=["/nowhere=x"]))
    outside = [points("p1", POS, "edge", (-5, 10))]
    reply = ok(java.ask("live_apply", annotations=outside))
    assert reply["results"] == [] and reply["problems"] == [outside_image(PromptGroup("edge", (Click(-5, 10),)), synthetic_slide.width, synthetic_slide.height)]
    assert ok(java.ask("live_apply", annotations=outside))["problems"] == []  # reported once while it lasts
    # No slide map names the image and no pixels can be read here: the group fails with a message, nothing is written.
    inside = [points("p1", POS, "edge", (50, 10))]
    reply = ok(java.ask("live_apply", annotations=inside))
    assert reply["results"] == [] and reply["problems"] == ["prompt group 'edge': tumour.svs: no slide map names it on the server, and its pixels cannot be read here"]


def test_live_uploads_pixels_when_the_server_cannot_read_the_slide(java, server, synthetic_slide, tmp_path):
    """No slide map: the pixels are read on the QuPath side (here a PNG of the whole image at downsample 4), uploaded and placed in level-0."""
    with openslide.OpenSlide(str(synthetic_slide.path)) as handle:
        rgb = np.asarray(handle.read_region((0, 0), 1, handle.level_dimensions[1]).convert("RGB"))
    cv2.imwrite(str(tmp_path / "whole.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    image = {"name": "local.svs", "width": synthetic_slide.width, "height": synthetic_slide.height, "mpp": synthetic_slide.mpp,
             "objective_power": synthetic_slide.objective_power, "path": "/elsewhere/local.svs", "png": str(tmp_path / "whole.png"), "png_downsample": 4.0}
    ok(java.ask("connect", address=server.address))
    ok(java.ask("live_start", image=image, target_class="Tumor", fov={"margin": 0.25, "min_size": 2048.0, "downsample": 4.0}, slide_map=[]))
    point = synthetic_slide.object_geometry.representative_point()
    reply = ok(java.ask("live_apply", annotations=[points("p1", POS, "", (point.x, point.y))]))
    assert reply["problems"] == []
    (result,) = reply["results"]
    assert result["name"] == "SAM" and json.loads(result["description"])["field_of_view"]["downsample"] == pytest.approx(4.0, abs=0.01)
    iou = geometry_iou(shapely.from_wkt(result["wkt"]), synthetic_slide.object_geometry)
    assert iou >= 0.9, f"IoU of the uploaded-pixels result with the known object: {iou:.3f}"
