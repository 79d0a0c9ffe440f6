"""A content-addressed store of uploaded PNG/JPEG (or TIFF) images, decoded to RGB.

Images are keyed by the SHA-256 of their encoded bytes and kept within a byte budget of decoded
pixels, shared fairly between users (server/fair_share.py): one user's uploads evict their own
images, or those of users holding more than their share, never those of users within theirs.

Before an image is decoded, its header is checked (server/image_decoding.py): its pixels, the memory
its decode will take, and for a progressive JPEG its scans. The memory of the decodes running at once
stays within a budget; an upload that would exceed it is refused with RESOURCE_EXHAUSTED and a retry hint.
"""

from __future__ import annotations

import hashlib
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from slidesam.server.fair_share import SERVER_USER, FairShareLRU, Full
from slidesam.server.errors import InvalidArgument, NotFound, ResourceExhausted
from slidesam.server.uploads.decoding import ImageHeader, decode_rgb, read_header

_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_JPEG_SCANS = 64
"""Scans a progressive JPEG may have (encoders write 6-12; each scan is a pass over the whole image)."""
MAX_SCAN_PIXELS = 16 * 8192 * 8192
"""Scans x pixels of a JPEG: what its decode costs (a 8192^2 progressive JPEG of 16 scans at most)."""


@dataclass(frozen=True)
class UploadedImage:
    """A decoded upload: read-only HxWx3 uint8 RGB pixels and the size of its encoded bytes."""

    sha256: str
    pixels: np.ndarray
    encoded_bytes: int


class DecodeBudget:
    """Bytes the decodes running at once may take together (thread-safe)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        """Holds size bytes for the block; RESOURCE_EXHAUSTED with a retry hint while others hold too much."""
        with self._lock:
            if self._in_use + size > self.budget_bytes:
                raise ResourceExhausted(
                    f"the server is decoding other uploads ({_mib(self._in_use)} of its {_mib(self.budget_bytes)} for "
                    f"decoding in use; this image needs {_mib(size)}); retry in a moment",
                    retry_after_s=2.0,
                )
            self._in_use += size
        try:
            yield
        finally:
            with self._lock:
                self._in_use -= size


class UploadStore:
    """Uploaded images by SHA-256 within `max_bytes` of decoded pixels, shared fairly between users."""

    def __init__(
        self, max_bytes: int = 512 * 2**20, max_image_pixels: int = 8192 * 8192, decode_budget_bytes: int = 768 * 2**20
    ) -> None:
        self._max_bytes = max_bytes
        self._max_image_pixels = max_image_pixels
        self._images: FairShareLRU[str, UploadedImage] = FairShareLRU(max_bytes, lambda image: image.pixels.nbytes)
        self.decoding = DecodeBudget(decode_budget_bytes)

    @property
    def total_bytes(self) -> int:
        """Bytes of decoded pixels held now."""
        return self._images.total_bytes

    def held_by(self) -> dict[str, int]:
        """Bytes of decoded pixels each user holds."""
        return self._images.held_by()

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._images

    def __len__(self) -> int:
        return len(self._images)

    def put(self, data: bytes, sha256: str | None = None, user: str = SERVER_USER) -> UploadedImage:
        """Stores encoded image bytes for user; `sha256`, if given, must be the hex SHA-256 of `data`.

        Blocking (it decodes): call it from a decoding thread, not the event loop.
        """
        if not data:
            raise InvalidArgument("the uploaded image is empty")
        computed = hashlib.sha256(data).hexdigest()
        if sha256 is not None and normalise_image_sha256(sha256) != computed:
            raise InvalidArgument(
                f"sha256 mismatch: the request says {sha256} but the server computed {computed} "
                "from the uploaded bytes; the upload may be truncated or the hash taken of other bytes"
            )
        known = self._images.get(computed, user)
        if known is not None:
            return known
        header = read_header(data)
        self._check(header)
        with self.decoding.reserve(header.peak_bytes):
            image = UploadedImage(computed, decode_rgb(data, header), len(data))
        try:
            return self._images.setdefault(computed, image, user)  # another thread may have stored it meanwhile
        except Full as full:
            raise ResourceExhausted(
                f"the upload store is full of other users' images within their share ({_mib(full.share)} each); "
                f"this image needs {_mib(full.needed)}: upload a smaller region, or retry later",
                retry_after_s=30.0,
            ) from None

    def get(self, sha256: str) -> UploadedImage:
        """The stored image with this SHA-256 (hex)."""
        key = normalise_image_sha256(sha256)
        image = self._images.get(key)
        if image is None:
            raise NotFound(f"image sha256:{key} is not on this server; upload it first")
        return image

    def _check(self, header: ImageHeader) -> None:
        """Refuses, before decoding, an image this server will not decode or cannot keep."""
        if header.pixels > self._max_image_pixels:
            raise ResourceExhausted(
                f"the uploaded image is {header.width} x {header.height} pixels, more than this server accepts "
                f"({self._max_image_pixels} pixels); upload a smaller region or a coarser resolution"
            )
        if header.pixels * 3 > self._max_bytes:
            raise ResourceExhausted(
                f"the uploaded image needs {_mib(header.pixels * 3)} decoded, more than this server keeps for "
                f"uploads ({_mib(self._max_bytes)}); upload a smaller region or a coarser resolution"
            )
        if header.peak_bytes > self.decoding.budget_bytes:
            raise ResourceExhausted(
                f"decoding this {header.width} x {header.height} {header.format} ({header.samples} samples of "
                f"{header.bits} bits per pixel) needs {_mib(header.peak_bytes)}, more than this server decodes at once "
                f"({_mib(self.decoding.budget_bytes)}); send 8-bit RGB, or a smaller region"
            )
        if header.scans > MAX_JPEG_SCANS or header.scans * header.pixels > MAX_SCAN_PIXELS:
            raise InvalidArgument(
                f"the uploaded JPEG has {header.scans} progressive scans over {header.width} x {header.height} pixels, "
                f"too costly to decode (at most {MAX_JPEG_SCANS} scans, and scans x pixels at most {MAX_SCAN_PIXELS}); "
                "send a baseline JPEG or a PNG"
            )


def normalise_image_sha256(sha256: str) -> str:
    """Lower-case hex SHA-256 of an uploaded image; InvalidArgument when malformed."""
    key = sha256.lower() if isinstance(sha256, str) else ""
    if not _SHA256.fullmatch(key):
        raise InvalidArgument(f"malformed sha256 {sha256!r}: expected 64 hexadecimal digits")
    return key


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
