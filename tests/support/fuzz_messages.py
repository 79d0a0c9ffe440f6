"""Hypothesis strategies for every slidesam.v1 request message, for fuzzing a real server over gRPC.

Each strategy mixes plausible values (inside a known slide, real resolutions, the real model name)
with hostile ones (NaN, infinities, negative and huge numbers, int32/uint64 extremes, empty, very
long, unicode and path-traversal strings, NUL bytes, random bytes as images, malformed SHA-256,
unknown enum values), and `raw_request_bytes` mutates serialized requests at the byte level.

The model behind the server is real, so a valid field of view costs an image encode (about a
second on a CPU) the first time it is seen. The plausible fields of view therefore come from a small
fixed set (`FuzzTarget.known_fovs`, cache hits after their first encode), and the hostile numbers
from fixed lists, so a hostile value that happens to be valid repeats (and hits the cache) instead of
encoding a new region every time. Fully random fields of view are drawn too, but rarely.

Only tests import this module (it needs hypothesis, a dev dependency).
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import zlib
from dataclasses import dataclass

import cv2
import numpy as np
from hypothesis import strategies as st
from PIL import Image

from slidesam.v1 import slidesam_pb2 as pb

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT64_MAX = 2**64 - 1

HOSTILE_FLOATS = (
    math.nan, -math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-9, 5e-324, 1e-300, 0.5,
    1e9, 1e308, -1e308, 1.7976931348623157e308, float(2**53 + 1), float(2**63),
)
"""Floats that break naive arithmetic; a fixed list, so a valid one repeats (and hits the cache)."""

HOSTILE_INTS = (INT32_MIN, INT32_MIN + 1, -1, 0, 1, 2, 3, 4, 5, 2**16, INT32_MAX)

_LONG = (("a", 300), ("a/", 3000), ("é", 4000), ("../", 2000), ("x", 100_000))

HOSTILE_STRINGS = (
    "", " ", ".", "./", "..", "../", "../..", "/", "//", "/etc/passwd", "/dev/zero", "/proc/self/environ",
    "\x00", "a\x00b", "\n", "\t", "~", "~/x.svs", "file:///etc/passwd", "http://127.0.0.1/x.svs", "//server/share/a.svs",
    "C:\\slides\\a.svs", "cases\\tumour.svs", "%2e%2e/%2e%2e/etc/passwd", "cases/*", "cases/?umour.svs",
    "\u202ecases/tumour.svs", "\ufeffcases/tumour.svs", "ca\u0301ses/tumour.svs", "𝔠𝔞𝔰𝔢𝔰", "日本語.svs", "NUL", "CON.svs",
)
"""Strings for ids, names and paths: traversal, absolute paths, NUL, unicode tricks, very long."""


@dataclass(frozen=True)
class FuzzTarget:
    """What the server under test holds, so strategies can aim at valid requests as well as bad ones."""

    slide_ids: tuple[str, ...]
    """Ids that resolve to the one good slide (aliases such as 'cases/./x.svs' share its cache entries)."""
    hostile_slide_ids: tuple[str, ...]
    """Ids of hostile files in the slide root: not a slide, empty, a directory, symlinks (loop, escaping)."""
    slide_size: tuple[int, int]
    slide_mpp: float
    slide_objective_power: float
    known_fovs: tuple[pb.FieldOfView, ...]
    """Valid fields of view; each costs one encode, then only cache hits."""
    upload_sha256: str
    upload_size: tuple[int, int]
    valid_models: tuple[str, ...]
    """Model names that work: the default ('') and the real model."""
    refused_models: tuple[str, ...]
    """Model names the server refuses cheaply: unknown, or without a checkpoint."""


def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, each with a relative weight (earlier ones shrink first)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def hostile_float() -> st.SearchStrategy[float]:
    return st.sampled_from(HOSTILE_FLOATS)


def any_float() -> st.SearchStrategy[float]:
    """Every double, NaN and infinities included."""
    return st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)


def any_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Arbitrary unicode (no lone surrogates: protobuf strings are UTF-8), NUL included."""
    return st.text(st.characters(exclude_categories=("Cs",)), max_size=max_size)


def hostile_text() -> st.SearchStrategy[str]:
    very_long = st.sampled_from(_LONG).map(lambda spec: spec[0] * spec[1])  # built lazily: short reprs
    return weighted((6, st.sampled_from(HOSTILE_STRINGS)), (1, very_long), (4, any_text()))


def request_id() -> st.SearchStrategy[int]:
    return weighted((3, st.integers(0, 1000)), (1, st.sampled_from((0, 2**32, 2**63, UINT64_MAX))), (1, st.integers(0, UINT64_MAX)))


def prompt_strategy() -> st.SearchStrategy[int]:
    """PromptStrategy values: the three known ones, and unknown numbers (proto3 enums are open)."""
    return weighted(
        (6, st.sampled_from((pb.PROMPT_STRATEGY_UNSPECIFIED, pb.PROMPT_STRATEGY_PLAIN, pb.PROMPT_STRATEGY_CONSISTENT))),
        (1, st.sampled_from((3, 4, -1, INT32_MIN, INT32_MAX))),
        (1, st.integers(INT32_MIN, INT32_MAX)),
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, colour_type: int = 2, bit_depth: int = 8, idat: bytes = b"") -> bytes:
    """A PNG whose header claims width x height but whose pixel data is `idat` (default: a few zeros)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = idat or zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


@st.composite
def small_image(draw) -> bytes:
    """A small real image in one of many encodings: PNG/JPEG/TIFF/BMP/WebP/GIF, 1-bit to float, 1 to 5 channels."""
    width, height = draw(st.integers(1, 48)), draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    writer = draw(st.sampled_from(("cv2", "pil", "pil", "tifffile")))
    if writer == "cv2":
        dtype = draw(st.sampled_from((np.uint8, np.uint16)))
        channels = draw(st.sampled_from((1, 3, 4)))
        extension = draw(st.sampled_from((".png", ".jpg", ".tiff", ".bmp", ".webp")))
        if extension in (".jpg", ".bmp", ".webp"):
            dtype = np.uint8
        pixels = rng.integers(0, np.iinfo(dtype).max, size=(height, width, channels), endpoint=True).astype(dtype)
        ok, encoded = cv2.imencode(extension, pixels)
        assert ok
        return encoded.tobytes()
    if writer == "pil":
        mode, fmt = draw(st.sampled_from((
            ("1", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("I;16", "PNG"),
            ("I;16", "TIFF"), ("L", "JPEG"), ("RGB", "JPEG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("F", "TIFF"), ("I", "TIFF"),
            ("LA", "TIFF"), ("RGBA", "TIFF"), ("YCbCr", "TIFF"), ("P", "GIF"), ("RGB", "BMP"), ("RGB", "WEBP"),
        )))
        image = Image.frombytes("L", (width, height), rng.bytes(width * height)).convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()
    import tifffile

    dtype = draw(st.sampled_from((np.uint8, np.uint16, np.int16, np.float32, np.float64)))
    channels = draw(st.sampled_from((1, 2, 3, 4, 5)))
    pages = draw(st.integers(1, 2))
    compression = draw(st.sampled_from((None, "zlib", "lzw", "packbits")))
    shape = (pages, height, width, channels) if pages > 1 else (height, width, channels)
    pixels = (rng.random(shape) * 200).astype(dtype)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, pixels, compression=compression, photometric="minisblack" if channels != 3 else "rgb")
    return buffer.getvalue()


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """Bytes changed a few times: flipped, inserted, deleted, truncated, duplicated, or an unknown field appended."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "duplicate", "unknown_field", "overwrite")))
        position = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            index = min(position, len(data) - 1)
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del data[position:]
        elif kind == "duplicate":
            data.extend(bytes(data))  # protobuf merges concatenated messages: repeated fields grow, oneofs switch
        elif kind == "overwrite" and data:
            value = draw(st.binary(min_size=1, max_size=8))
            data[position : position + len(value)] = value
        elif kind == "unknown_field":
            number = draw(st.sampled_from((9, 15, 16, 100, 2047, 536870911)))
            wire_type = draw(st.sampled_from((0, 1, 2, 5)))
            data += _varint(number << 3 | wire_type) + {
                0: _varint(draw(st.integers(0, UINT64_MAX))),
                1: b"\x00" * 8,
                2: _varint(3) + b"abc",
                5: b"\x00" * 4,
            }[wire_type]
    return bytes(data)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class RequestStrategies:
    """Strategies for every request message of the Segmentation service, aimed at one FuzzTarget."""

    def __init__(self, target: FuzzTarget):
        self.target = target
        width, height = target.slide_size
        upload_width, upload_height = target.upload_size
        self._regions = tuple(fov.region for fov in target.known_fovs)

        # -- numbers
        self.coordinate = weighted((5, st.floats(-16, max(width, height) + 16)), (2, hostile_float()), (1, any_float()))

        # -- images and fields of view
        self.slide_id = weighted(
            (6, st.sampled_from(target.slide_ids)),
            (2, st.sampled_from(target.hostile_slide_ids)),
            (3, hostile_text()),
        )
        known_upload = st.sampled_from((target.upload_sha256, target.upload_sha256.upper()))
        self.sha256 = weighted(
            (4, known_upload),
            (1, st.binary(min_size=1, max_size=64).map(_sha256)),  # well-formed, never uploaded
            (1, st.sampled_from(("", "xyz", "0" * 63, "0" * 65, "g" * 64, " " + "0" * 63, "٣" * 64, target.upload_sha256 + "\x00"))),
            (1, hostile_text()),
        )
        self.uploaded_ref = st.builds(
            pb.UploadedImageRef,
            sha256=self.sha256,
            origin_x=weighted((4, st.just(0.0)), (1, hostile_float())),
            origin_y=weighted((4, st.just(0.0)), (1, hostile_float())),
            downsample=weighted((3, st.sampled_from((0.0, 1.0))), (1, hostile_float())),
            mpp=weighted((3, st.sampled_from((0.0, 0.5))), (1, hostile_float())),
            objective_power=weighted((3, st.sampled_from((0.0, 20.0))), (1, hostile_float())),
        )
        self.image_source = weighted(
            (4, self.slide_id.map(lambda slide_id: pb.ImageSource(slide_id=slide_id))),
            (2, self.uploaded_ref.map(lambda ref: pb.ImageSource(uploaded=ref))),
            (1, st.just(pb.ImageSource())),
        )
        self.rect = weighted(
            (3, st.builds(pb.Rect, x=self.coordinate, y=self.coordinate, width=self.coordinate, height=self.coordinate)),
            (1, st.sampled_from(((0, 0, width, height), (0, 0, upload_width, upload_height), (width - 1, height - 1, 1, 1), (0, 0, 0.5, 0.5)))
             .map(lambda r: pb.Rect(x=r[0], y=r[1], width=r[2], height=r[3]))),
        )
        self.resolution = weighted(
            (2, st.just(pb.Resolution())),
            (2, st.sampled_from(("mpp", "magnification", "downsample")).flatmap(
                lambda kind: weighted((1, st.sampled_from((1.0, 4.0, 10.0, 16.0))), (2, hostile_float()), (1, any_float()))
                .map(lambda value: pb.Resolution(**{kind: value})))),
        )
        known = st.sampled_from(target.known_fovs)
        self.field_of_view = weighted(
            (8, known.flatmap(self._known_alias)),
            (4, self._one_field_broken(known)),
            (1, st.builds(pb.FieldOfView, image=self.image_source, region=self.rect, resolution=self.resolution)),
            (1, st.sampled_from(("image", "region")).map(self._without)),
        )

        # -- prompts and options
        self.click = weighted(
            (6, st.sampled_from(self._regions).flatmap(self._point_in).map(lambda xy: pb.Click(x=xy[0], y=xy[1], positive=xy[2]))),
            (1, st.builds(pb.Click, x=self.coordinate, y=self.coordinate, positive=st.booleans())),
            (1, st.builds(pb.Click, x=hostile_float(), y=hostile_float(), positive=st.booleans())),
        )
        never_valid_click = st.builds(pb.Click, x=st.sampled_from((math.nan, math.inf, -1e308)), y=any_float(), positive=st.booleans())
        self.clicks = weighted(
            (8, st.lists(self.click, min_size=1, max_size=4)),
            (1, st.just([])),
            (1, st.lists(self.click, min_size=250, max_size=300)),  # around the per-object limit of 256
        )
        # Segment decodes each click as its own step (about 70 ms each), so long lists lead with a bad click.
        self.segment_clicks = weighted(
            (8, st.lists(self.click, max_size=4)),
            (1, st.tuples(never_valid_click, st.lists(self.click, min_size=5, max_size=300)).map(lambda t: [t[0], *t[1]])),
        )
        self.box = weighted(
            (3, st.sampled_from(self._regions).flatmap(self._box_in)),
            (1, st.builds(pb.Box, x=self.coordinate, y=self.coordinate, width=self.coordinate, height=self.coordinate)),
            (1, st.builds(pb.Box, x=hostile_float(), y=hostile_float(), width=hostile_float(), height=hostile_float())),
        )
        self.outline = weighted(
            (3, st.sampled_from(self._regions).flatmap(self._outline_in)),
            (1, st.just([])),
            (1, st.lists(st.lists(any_float(), max_size=12).map(lambda xy: pb.Polygon(exterior=pb.Ring(xy=xy))), min_size=1, max_size=3)),
            (1, st.lists(hostile_float(), min_size=6, max_size=8).map(lambda xy: [pb.Polygon(exterior=pb.Ring(xy=xy))])),
        )
        option = weighted((4, st.just(0.0)), (2, st.sampled_from((0.5, 2.0, 25.0, 400.0))), (2, hostile_float()), (1, any_float()))
        self.polygon_options = st.builds(
            pb.PolygonOptions,
            simplify_tolerance_um=option,
            simplify_tolerance_px=option,
            max_vertices=weighted((3, st.sampled_from((0, 4, 8, 100, 4000))), (2, st.sampled_from(HOSTILE_INTS)), (1, st.integers(INT32_MIN, INT32_MAX))),
            min_area_um2=option,
            min_area_px=option,
        )
        self.model = weighted((3, st.sampled_from(target.valid_models)), (3, st.sampled_from(target.refused_models)), (1, st.sampled_from(("MOBILE_SAM", "mobile_sam ", "mobile_sam\x00"))), (2, hostile_text()))
        self.object_id = weighted((4, st.just("")), (1, st.uuids().map(lambda u: u.hex)), (2, hostile_text()))

        # -- what a careful client sends: prompts that fit the field of view, values in range
        self.valid_model = st.sampled_from(target.valid_models)
        self.valid_strategy = st.sampled_from((pb.PROMPT_STRATEGY_UNSPECIFIED, pb.PROMPT_STRATEGY_PLAIN, pb.PROMPT_STRATEGY_CONSISTENT))
        self.valid_object_id = weighted((3, st.just("")), (2, st.uuids().map(str)), (1, st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)))

        # -- requests
        self.list_models_request = st.just(pb.ListModelsRequest())
        self.upload_image_request = weighted((12, self._upload_bytes()), (1, st.just(b""))).flatmap(self._upload_request)
        known = st.sampled_from(target.known_fovs)
        self.segment_request = known.flatmap(self._segment_request)
        self.open_object = known.flatmap(self._open_object)
        self.interact_sequence = known.flatmap(self._interact_sequence)
        self.interact_request = self.interact_sequence.map(lambda requests: requests[0])

    # -- requests around one known field of view (the "scene"): valid, one part hostile, or all random
    def _mixed(
        self, valid: dict[str, st.SearchStrategy], hostile: dict[str, st.SearchStrategy], weights: tuple[int, int, int] = (5, 4, 1)
    ) -> st.SearchStrategy[dict]:
        """Field values, by weight: all valid, all valid but one hostile, or all hostile."""
        names = sorted(valid)
        kinds = ("valid",) * weights[0] + ("one_bad",) * weights[1] + ("random",) * weights[2]

        @st.composite
        def fields(draw) -> dict:
            kind = draw(st.sampled_from(kinds))
            bad = {draw(st.sampled_from(names))} if kind == "one_bad" else set(names) if kind == "random" else set()
            return {name: draw(hostile[name] if name in bad else valid[name]) for name in names}

        return fields()

    def _valid_options(self, fov: pb.FieldOfView) -> st.SearchStrategy[pb.PolygonOptions]:
        has_mpp = fov.image.HasField("slide_id")
        small = st.sampled_from((0.0, 0.0, 0.5, 2.0, 25.0, 400.0))
        return st.builds(
            pb.PolygonOptions,
            simplify_tolerance_um=small if has_mpp else st.just(0.0),
            simplify_tolerance_px=small,
            max_vertices=st.sampled_from((0, 4, 8, 100, 4000)),
            min_area_um2=small if has_mpp else st.just(0.0),
            min_area_px=small,
        )

    def _valid_clicks(self, region: pb.Rect, max_size: int = 3) -> st.SearchStrategy[list[pb.Click]]:
        click = self._point_in(region).map(lambda xy: pb.Click(x=xy[0], y=xy[1], positive=xy[2]))
        return st.lists(click, min_size=1, max_size=max_size)

    def _segment_request(self, fov: pb.FieldOfView) -> st.SearchStrategy[pb.SegmentRequest]:
        valid = {
            "field_of_view": self._known_alias(fov),
            "model": self.valid_model,
            "clicks": weighted((3, self._valid_clicks(fov.region)), (1, st.just([]))),
            "box": _maybe(self._box_in(fov.region), 1, absent=2),
            "outline": weighted((3, st.just([])), (1, self._outline_in(fov.region))),
            "polygon_options": _maybe(self._valid_options(fov), 1),
            "strategy": self.valid_strategy,
        }
        hostile = {
            "field_of_view": _maybe(self.field_of_view, 10),
            "model": self.model,
            "clicks": self.segment_clicks,
            "box": _maybe(self.box, 3),
            "outline": self.outline,
            "polygon_options": _maybe(self.polygon_options, 3),
            "strategy": prompt_strategy(),
        }

        def build(fields: dict) -> pb.SegmentRequest:
            message = pb.SegmentRequest(
                model=fields["model"], clicks=fields["clicks"], outline=fields["outline"], strategy=fields["strategy"]
            )
            return _with_optional(message, **{name: fields[name] for name in ("field_of_view", "box", "polygon_options")})

        return self._mixed(valid, hostile).map(build)

    def _open_object(self, fov: pb.FieldOfView, weights: tuple[int, int, int] = (5, 4, 1)) -> st.SearchStrategy[pb.OpenObject]:
        valid = {
            "field_of_view": self._known_alias(fov),
            "model": self.valid_model,
            "polygon_options": _maybe(self._valid_options(fov), 1),
            "object_id": self.valid_object_id,
            "strategy": self.valid_strategy,
        }
        hostile = {
            "field_of_view": _maybe(self.field_of_view, 10),
            "model": self.model,
            "polygon_options": _maybe(self.polygon_options, 3),
            "object_id": self.object_id,
            "strategy": prompt_strategy(),
        }

        def build(fields: dict) -> pb.OpenObject:
            message = pb.OpenObject(model=fields["model"], object_id=fields["object_id"], strategy=fields["strategy"])
            return _with_optional(message, **{name: fields[name] for name in ("field_of_view", "polygon_options")})

        return self._mixed(valid, hostile, weights).map(build)

    def _interact_sequence(self, fov: pb.FieldOfView) -> st.SearchStrategy[list[pb.InteractRequest]]:
        """1 to 6 requests on one stream, mostly opening `fov` first and prompting inside it."""
        region = fov.region
        actions = {
            "open": (1, self._open_object(fov).map(lambda m: {"open": m})),
            "clicks": (8, weighted(
                (6, self._valid_clicks(region)),
                # around the per-object limit of 256 clicks (one decode either way)
                (1, self._valid_clicks(region, max_size=4).flatmap(lambda c: st.integers(250, 262).map(lambda n: (c * 300)[:n]))),
                (2, self.clicks),
            ).map(lambda c: {"clicks": pb.AddClicks(clicks=c)})),
            "box": (3, weighted((3, self._box_in(region)), (2, self.box), (1, st.none()))
                    .map(lambda b: {"box": pb.SetBox(box=b) if b is not None else pb.SetBox()})),
            "outline": (2, weighted((2, self._outline_in(region)), (1, self.outline))
                        .map(lambda polygons: {"outline": pb.SetOutline(polygons=polygons)})),
            "undo": (2, st.just({"undo": pb.Undo()})),
            "redo": (1, st.just({"redo": pb.Redo()})),
            "reset": (1, st.just({"reset": pb.Reset()})),
            "finish": (1, st.just({"finish": pb.Finish()})),
            "none": (1, st.just({})),
        }
        action = weighted(*actions.values())
        # Mostly a valid open first, so that the prompts after it reach the model.
        first = weighted((3, self._open_object(fov, weights=(8, 3, 1)).map(lambda m: {"open": m})), (1, action))

        def request(fields: dict) -> st.SearchStrategy[pb.InteractRequest]:
            return st.builds(lambda rid: pb.InteractRequest(request_id=rid, **fields), request_id())

        return st.builds(
            lambda head, tail: [head, *tail],
            first.flatmap(request),
            st.integers(0, 5).flatmap(lambda size: st.lists(action.flatmap(request), min_size=size, max_size=size)),
        )

    # -- raw bytes
    def raw_interact_stream(self) -> st.SearchStrategy[list[bytes]]:
        """A request sequence as bytes, some messages mutated or replaced by random bytes."""

        def as_bytes(requests: list[pb.InteractRequest]) -> st.SearchStrategy[list[bytes]]:
            return st.tuples(*(self.raw_request_bytes(st.just(message), intact=4) for message in requests[:4])).map(list)

        return self.interact_sequence.flatmap(as_bytes)

    def raw_request_bytes(self, typed: st.SearchStrategy, intact: int = 1) -> st.SearchStrategy[bytes]:
        """Bytes sent as a serialized request: random, or a typed request's serialization mutated."""
        serialized = typed.map(lambda message: message.SerializeToString())
        return weighted(
            (2, st.binary(max_size=512)),
            (3, serialized.flatmap(mutated)),
            (intact, serialized),
        )

    # -- helpers
    def _known_alias(self, fov: pb.FieldOfView) -> st.SearchStrategy[pb.FieldOfView]:
        """A known field of view, its slide named by any alias and its resolution said any equivalent way."""
        aliases = st.sampled_from(self.target.slide_ids) if fov.image.HasField("slide_id") else st.just(fov.image.slide_id)
        resolutions = st.just(fov.resolution)
        kind = fov.resolution.WhichOneof("value")
        if kind == "downsample" and fov.image.HasField("slide_id"):
            downsample = fov.resolution.downsample
            resolutions = st.sampled_from((
                pb.Resolution(downsample=downsample),
                pb.Resolution(magnification=self.target.slide_objective_power / downsample),
                pb.Resolution(mpp=self.target.slide_mpp * downsample),
            ))

        def build(slide_id: str, resolution: pb.Resolution, windows: int, align: bool) -> pb.FieldOfView:
            copy = pb.FieldOfView()
            copy.CopyFrom(fov)
            if copy.image.HasField("slide_id"):
                copy.image.slide_id = slide_id
            copy.resolution.CopyFrom(resolution)
            copy.windows, copy.align_to_grid = windows, align
            return copy

        windows = weighted((4, st.just(pb.WINDOW_MODE_UNSPECIFIED)), (1, st.sampled_from((pb.WINDOW_MODE_MULTI, pb.WINDOW_MODE_SINGLE))))
        return st.builds(build, aliases, resolutions, windows, weighted((4, st.just(False)), (1, st.just(True))))

    def _one_field_broken(self, known: st.SearchStrategy[pb.FieldOfView]) -> st.SearchStrategy[pb.FieldOfView]:
        """A known field of view with one part made hostile: the image, one region number or the resolution."""

        @st.composite
        def broken(draw) -> pb.FieldOfView:
            fov = draw(known)
            copy = pb.FieldOfView()
            copy.CopyFrom(fov)
            part = draw(st.sampled_from(("image", "region", "resolution", "windows")))
            if part == "image":
                copy.image.CopyFrom(draw(self.image_source.filter(lambda image: image != fov.image)))
            elif part == "windows":
                copy.windows = draw(st.sampled_from(HOSTILE_INTS))
            elif part == "region":
                setattr(copy.region, draw(st.sampled_from(("x", "y", "width", "height"))), draw(hostile_float()))
            else:
                setattr(copy.resolution, draw(st.sampled_from(("mpp", "magnification", "downsample"))), draw(hostile_float()))
            return copy

        return broken()

    def _without(self, part: str) -> pb.FieldOfView:
        fov = pb.FieldOfView()
        fov.CopyFrom(self.target.known_fovs[0])
        fov.ClearField(part)
        return fov

    @staticmethod
    def _point_in(region: pb.Rect) -> st.SearchStrategy[tuple[float, float, bool]]:
        """A point inside the region, its edges included, with a polarity."""
        return st.tuples(
            weighted((4, st.floats(region.x, region.x + region.width)), (1, st.sampled_from((region.x, region.x + region.width)))),
            weighted((4, st.floats(region.y, region.y + region.height)), (1, st.sampled_from((region.y, region.y + region.height)))),
            st.booleans(),
        )

    @staticmethod
    def _box_in(region: pb.Rect) -> st.SearchStrategy[pb.Box]:
        """A box inside the region, at least one level-0 pixel wide and high; sometimes the whole region."""

        def build(a: float, b: float, c: float, d: float) -> pb.Box:
            x0, y0 = region.x + a * 0.9 * region.width, region.y + c * 0.9 * region.height
            width = max(1.0, b * (region.x + region.width - x0))
            height = max(1.0, d * (region.y + region.height - y0))
            return pb.Box(x=x0, y=y0, width=width, height=height)

        unit = st.floats(0, 1)
        whole = pb.Box(x=region.x, y=region.y, width=region.width, height=region.height)
        return weighted((4, st.builds(build, unit, unit, unit, unit)), (1, st.just(whole)))

    @staticmethod
    def _outline_in(region: pb.Rect) -> st.SearchStrategy[list[pb.Polygon]]:
        """An outline inside the region: a valid triangle, quadrilateral or bow tie (self-intersecting)."""
        unit = st.floats(0.05, 0.95)

        def build(points: list[tuple[float, float]]) -> list[pb.Polygon]:
            xy = [v for u, w in points for v in (region.x + u * region.width, region.y + w * region.height)]
            return [pb.Polygon(exterior=pb.Ring(xy=xy))]

        return st.lists(st.tuples(unit, unit), min_size=3, max_size=5).map(build)

    def _upload_bytes(self) -> st.SearchStrategy[bytes]:
        signatures = st.sampled_from((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"GIF89a", b"BM", b"RIFF"))
        return weighted(
            (2, st.binary(min_size=1, max_size=2048)),
            (2, st.tuples(signatures, st.binary(max_size=1024)).map(lambda t: t[0] + t[1])),
            (4, small_image()),
            (2, small_image().flatmap(mutated)),
            (1, st.sampled_from((
                png_claiming(100_000, 100_000), png_claiming(8192, 8193), png_claiming(1, INT32_MAX),
                png_claiming(0, 0), png_claiming(4000, 4000), png_claiming(16, 16, colour_type=7),
                png_claiming(16, 16, bit_depth=3), png_claiming(2**32 - 1, 1),
            ))),
        )

    def _upload_request(self, data: bytes) -> st.SearchStrategy[pb.UploadImageRequest]:
        digest = _sha256(data)
        sha = weighted(
            (8, st.sampled_from((digest, "", digest.upper()))),
            (1, self.sha256),
            (1, st.just(_sha256(data + b"x"))),
        )
        return sha.map(lambda s: pb.UploadImageRequest(data=data, sha256=s))


def _maybe(strategy: st.SearchStrategy, present: int, absent: int = 1) -> st.SearchStrategy:
    return weighted((present, strategy), (absent, st.none()))


def _with_optional(message, **fields):
    """Sets the message fields that are not None (submessages are copied in, so 'unset' stays unset)."""
    for name, value in fields.items():
        if value is not None:
            getattr(message, name).CopyFrom(value)
    return message
