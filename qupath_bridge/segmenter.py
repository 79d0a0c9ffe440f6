"""Runs a prompt group through the server: interactively (click by click on a stream) or in one batch call;
and an existing outline as the prompt (`refine`).

A result the model saw coarser than asked for (one encoder window over a larger region) is logged as a
WARNING and carried in the answer's `warnings`, which the commands print.
"""

from __future__ import annotations

import logging
import threading

import shapely

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ConnectionLost
from slidesam.qupath_bridge.fov import FovSettings, region_around_bounds, region_around_group
from slidesam.qupath_bridge.pixels import PixelSource
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.prompts import PromptGroup
from slidesam.qupath_bridge.results import Segmentation
from slidesam.qupath_bridge.wire_requests import PolygonOptions
from slidesam.qupath_bridge.wire_results import ObjectResult

log = logging.getLogger(__name__)


class Segmenter:
    """One client shared by threads (gRPC channels are thread-safe); connects on first use."""

    def __init__(
        self,
        client: SlidesamClient,
        pixels: PixelSource,
        fov: FovSettings,
        model: str = "",
        polygon: PolygonOptions = PolygonOptions(),
        connect_timeout: float = 10.0,
    ):
        self.client = client
        self.pixels = pixels
        self.fov = fov
        self.model = model
        self.polygon = polygon
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._checkpoints: dict[str, str] | None = None
        self._unreachable: ConnectionLost | None = None

    def run(self, image: ImageEntry, group: PromptGroup, *, interactive: bool) -> Segmentation:
        """The group's object. Interactive: open the field of view, set the box, then one click per
        step, as a user in QuPath would; batch: the same prompts in one Segment call."""
        checkpoints = self._connect()
        width, height = self.pixels.size(image)
        region = region_around_group(group, width, height, self.fov)
        fov = self.pixels.field_of_view(image, region, self.fov)
        if interactive:
            with self.client.open_object(fov, self.model, self.polygon) as session:
                if group.box is not None:
                    session.box(*group.box)
                for click in group.clicks:
                    session.click(click.x, click.y, click.positive)
                result = session.finish()
        else:
            result = self.client.segment(fov, group.clicks, group.box, model=self.model, polygon_options=self.polygon)
        return self._answer(result, region, checkpoints, f"{image.name}, {group.result_name}")

    def refine(self, image: ImageEntry, outline: shapely.Geometry, label: str) -> Segmentation:
        """The object an existing outline (level-0, inside the image) prompts, in one Segment call: the
        field of view is the outline's bounding box grown by the margin, inside the image."""
        checkpoints = self._connect()
        width, height = self.pixels.size(image)
        region = region_around_bounds(outline.bounds, width, height, self.fov)
        fov = self.pixels.field_of_view(image, region, self.fov)
        result = self.client.segment(fov, model=self.model, polygon_options=self.polygon, outline=outline)
        return self._answer(result, region, checkpoints, f"{image.name}, {label}")

    def _answer(self, result: ObjectResult, region: tuple[int, int, int, int], checkpoints: dict[str, str], label: str) -> Segmentation:
        warnings = ()
        if result.downsampled:
            warnings = (f"{label}: {result.resolution.describe_downsampling(self.fov.magnification)}",)
            log.warning("%s", warnings[0])
        return Segmentation(result, region, checkpoints.get(result.model_id.split("@")[0], ""), warnings)

    def _connect(self) -> dict[str, str]:
        """Waits for the server once (ConnectionLost after connect_timeout, remembered for later
        calls) and learns its checkpoints."""
        with self._lock:
            if self._unreachable is not None:
                raise self._unreachable
            if self._checkpoints is None:
                try:
                    self.client.wait_ready(self.connect_timeout)
                except ConnectionLost as error:
                    self._unreachable = error
                    raise
                self._checkpoints = {m.name: m.checkpoint_sha256 for m in self.client.list_models()}
            return self._checkpoints
