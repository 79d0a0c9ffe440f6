"""A content-addressed store of uploaded PNG/JPEG (or TIFF) images, decoded to RGB.

Images are keyed by the SHA-256 of their encoded bytes and kept in an LRU bounded by the bytes
of their decoded pixels.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from server.errors import InvalidArgument, NotFound, ResourceExhausted
from server.slides import composite_on_white

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*")
_UNDECODABLE = "could not decode the uploaded image (PNG or JPEG expected)"


@dataclass(frozen=True)
class UploadedImage:
    """A decoded upload: read-only HxWx3 uint8 RGB pixels and the size of its encoded bytes."""

    sha256: str
    pixels: np.ndarray
    encoded_bytes: int


class UploadStore:
    """Uploaded images by SHA-256, least recently used evicted beyond `max_bytes` of pixels."""

    def __init__(self, max_bytes: int = 512 * 2**20, max_image_pixels: int = 8192 * 8192) -> None:
        self._max_bytes = max_bytes
        self._max_image_pixels = max_image_pixels
        self._images: OrderedDict[str, UploadedImage] = OrderedDict()
        self._total_bytes = 0
        self._lock = threading.Lock()

    @property
    def total_bytes(self) -> int:
        """Bytes of decoded pixels held now."""
        return self._total_bytes

    def __contains__(self, sha256: object) -> bool:
        with self._lock:
            return sha256 in self._images

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)

    def put(self, data: bytes, sha256: str | None = None) -> UploadedImage:
        """Store encoded image bytes; `sha256`, if given, must be the hex SHA-256 of `data`."""
        if not data:
            raise InvalidArgument("the uploaded image is empty")
        computed = hashlib.sha256(data).hexdigest()
        if sha256 is not None and normalise_image_sha256(sha256) != computed:
            raise InvalidArgument(
                f"sha256 mismatch: the request says {sha256} but the server computed {computed} "
                "from the uploaded bytes; the upload may be truncated or the hash taken of other bytes"
            )
        known = self._lookup(computed)
        if known is not None:
            return known
        image = UploadedImage(computed, self._decode(data), len(data))
        return self._insert(image)

    def get(self, sha256: str) -> UploadedImage:
        """The stored image with this SHA-256 (hex)."""
        key = normalise_image_sha256(sha256)
        image = self._lookup(key)
        if image is None:
            raise NotFound(f"image sha256:{key} is not on this server; upload it first")
        return image

    def _lookup(self, sha256: str) -> UploadedImage | None:
        with self._lock:
            image = self._images.get(sha256)
            if image is not None:
                self._images.move_to_end(sha256)
            return image

    def _insert(self, image: UploadedImage) -> UploadedImage:
        size = image.pixels.nbytes
        if size > self._max_bytes:
            raise ResourceExhausted(
                f"the uploaded image needs {_mib(size)} decoded, more than this server keeps for "
                f"uploads ({_mib(self._max_bytes)}); upload a smaller region or a coarser resolution"
            )
        with self._lock:
            existing = self._images.get(image.sha256)
            if existing is not None:
                self._images.move_to_end(image.sha256)
                return existing
            while self._total_bytes + size > self._max_bytes:
                _, evicted = self._images.popitem(last=False)
                self._total_bytes -= evicted.pixels.nbytes
            self._images[image.sha256] = image
            self._total_bytes += size
        return image

    def _decode(self, data: bytes) -> np.ndarray:
        if not data.startswith(_SIGNATURES):
            raise InvalidArgument(_UNDECODABLE)
        self._check_pixels(*_header_size(data))
        decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if decoded is None:
            raise InvalidArgument(_UNDECODABLE)
        self._check_pixels(decoded.shape[1], decoded.shape[0])
        pixels = _to_rgb(decoded)
        pixels.flags.writeable = False
        return pixels

    def _check_pixels(self, width: int, height: int) -> None:
        if width * height > self._max_image_pixels:
            raise ResourceExhausted(
                f"the uploaded image is {width} x {height} pixels, more than this server accepts "
                f"({self._max_image_pixels} pixels); upload a smaller region or a coarser resolution"
            )


def normalise_image_sha256(sha256: str) -> str:
    """Lower-case hex SHA-256 of an uploaded image; InvalidArgument when malformed."""
    key = sha256.lower() if isinstance(sha256, str) else ""
    if not _SHA256.fullmatch(key):
        raise InvalidArgument(f"malformed sha256 {sha256!r}: expected 64 hexadecimal digits")
    return key


def _header_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the image header only (no pixels are decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError:
        raise ResourceExhausted(
            "the uploaded image has too many pixels; upload a smaller region or a coarser resolution"
        ) from None
    except (OSError, ValueError, SyntaxError):
        raise InvalidArgument(_UNDECODABLE) from None


def _to_rgb(decoded: np.ndarray) -> np.ndarray:
    """8-bit RGB from what cv2.imdecode(IMREAD_UNCHANGED) returns (grey, BGR or BGRA; 8 or 16 bit)."""
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise InvalidArgument(
            f"uploaded image samples are {decoded.dtype}; send 8- or 16-bit PNG or JPEG"
        )
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if channels == 1:
        return cv2.cvtColor(decoded.reshape(decoded.shape[:2]), cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return composite_on_white(cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA))
    raise InvalidArgument(f"uploaded image has {channels} channels; send grey, RGB or RGBA")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
