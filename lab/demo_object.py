"""The demo's object on the real slide CMU-1-Small-Region: a field of view over its squamous epithelium at
x10 and six hand-placed clicks, shared by the demo, the click benchmarks, the load test and the QuPath tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.geojson import annotation_feature
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, PolygonOptions, SlideImage
from slidesam.qupath_bridge.wire_results import ObjectResult

SLIDE_ID = "CMU-1-Small-Region.svs"
# A field of view over the squamous epithelium of CMU-1-Small-Region (level-0 pixels), read at x10.
REGION = (900.0, 1300.0, 1200.0, 1200.0)
MAGNIFICATION = 10.0
CLICKS = [
    Click(1350.0, 1920.0, True),   # on the epithelium
    Click(1175.0, 1850.0, True),   # more epithelium, to the left
    Click(1560.0, 2070.0, False),  # the stroma beside it: not epithelium
    Click(1245.0, 2085.0, False),  # the small vessel inside it: not epithelium
    Click(1230.0, 2234.0, True),   # the lower part of the band
    Click(966.0, 1849.0, False),   # the stroma on the left: not epithelium
]


def demo_fov(slide_id: str = SLIDE_ID) -> FieldOfView:
    """REGION at x10 on the slide the server knows as `slide_id` (a copy of CMU-1-Small-Region)."""
    return FieldOfView(SlideImage(slide_id), *REGION, magnification=MAGNIFICATION)


def click_on_epithelium(client: SlidesamClient, report: Callable[[str], None] = print) -> ObjectResult:
    """The demo's object: the field of view over the epithelium at x10 and its six clicks, each reported."""
    started = time.perf_counter()
    with client.open_object(demo_fov(), polygon_options=PolygonOptions(min_area_um2=100)) as session:
        opened = session.result
        report(f"    open: {(time.perf_counter() - started) * 1e3:7.1f} ms round trip "
               f"(read {opened.timings.read_ms:.0f} ms + encode {opened.timings.encode_ms:.0f} ms, cache {'hit' if opened.cache_hit else 'miss'})")
        for number, click in enumerate(CLICKS, start=1):
            sent = time.perf_counter()
            result = session.click(click.x, click.y, click.positive)
            report(f"    click {number} ({'+' if click.positive else '-'}) at ({click.x:.0f}, {click.y:.0f}): "
                   f"{(time.perf_counter() - sent) * 1e3:6.1f} ms round trip, decode {result.timings.decode_ms:5.1f} ms, "
                   f"cache {'hit' if result.cache_hit else 'miss'}, score {result.score:.3f}, "
                   f"{len(result.geometry.geoms)} part(s), {result.area_um2:,.0f} µm²")
        return session.finish()


def result_feature(final: ObjectResult) -> dict:
    """The demo's GeoJSON annotation (what QuPath imports from CMU-1-Small-Region.geojson)."""
    measurements = {"SAM score": final.score, "Area µm^2": final.area_um2, "Clicks": len(final.clicks)}
    return annotation_feature(final.geometry, classification="Tumor", name=f"SAM {final.model_id}", measurements=measurements)
