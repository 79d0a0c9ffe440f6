"""Decoding uploaded PNG, JPEG and TIFF images to RGB, with their cost known before any pixel is decoded.

`read_header` reads only the header: size, samples per pixel, bits per sample, alpha, and for a
progressive JPEG the number of scans (each scan passes over the whole image, so a file with thousands
of tiny scans costs minutes of CPU). `peak_bytes` bounds the memory a decode takes from that header,
so a server can refuse or defer an upload before decoding it.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from slidesam.server.errors import InvalidArgument, ResourceExhausted
from slidesam.server.slides.regions import composite_on_white

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_TIFF = (b"II*\x00", b"MM\x00*")
_UNDECODABLE = "could not decode the uploaded image (PNG or JPEG expected)"
_JPEG_START_OF_SCAN = b"\xff\xda"  # 0xFF inside entropy-coded data is stuffed as FF 00, so this is always a marker
_ROWS_PER_CHUNK = 256


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header says about its decoded pixels."""

    format: str           # "PNG", "JPEG" or "TIFF"
    width: int
    height: int
    samples: int          # samples per pixel as decoded (grey 1, RGB 3, with alpha +1)
    bits: int             # bits per sample (8 or 16)
    alpha: bool
    scans: int = 1        # JPEG scans (a baseline JPEG has 1; progressive ones usually 6-12)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def peak_bytes(self) -> int:
        """Most memory the decode holds at once (measured: OpenCV's imdecode holds its output twice while
        it hands it over; with alpha, the decoded image and the RGB result coexist). A progressive JPEG
        also keeps every DCT coefficient (2 bytes per sample) until its last scan."""
        decoded = self.pixels * (max(self.samples, 4) * self.bits // 8 if self.alpha else 3)
        result = self.pixels * 3 if self.alpha else 0  # without alpha, the decoder's BGR buffer becomes the result
        coefficients = self.pixels * self.samples * 2 if self.format == "JPEG" and self.scans > 1 else 0
        return max(2 * decoded, decoded + result) + coefficients


def read_header(data: bytes) -> ImageHeader:
    """The header of PNG, JPEG or TIFF bytes; InvalidArgument for anything else or a broken header."""
    if data.startswith(_PNG):
        return _png_header(data)
    if not data.startswith((_JPEG, *_TIFF)):
        raise InvalidArgument(_UNDECODABLE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                bands = len(image.getbands())
                alpha = "A" in image.getbands() or "transparency" in image.info
                if image.format == "JPEG":
                    return ImageHeader("JPEG", width, height, bands, 8, False, max(1, data.count(_JPEG_START_OF_SCAN)))
                bits = max(image.tag_v2.get(258, (8,)) if image.format == "TIFF" else (8,))
                return ImageHeader(image.format or "TIFF", width, height, bands, 16 if bits > 8 else 8, alpha)
    except Image.DecompressionBombError:
        raise ResourceExhausted("the uploaded image has too many pixels; upload a smaller region or a coarser resolution") from None
    except (OSError, ValueError, SyntaxError, TypeError):
        raise InvalidArgument(_UNDECODABLE) from None


def _png_header(data: bytes) -> ImageHeader:
    """From the IHDR chunk (PNG's first), and whether a tRNS chunk adds transparency."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InvalidArgument(_UNDECODABLE)
    width, height, bits, colour_type = struct.unpack(">IIBB", data[16:26])
    samples = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(colour_type)
    if samples is None or bits not in (1, 2, 4, 8, 16) or not width or not height:
        raise InvalidArgument(_UNDECODABLE)
    alpha = colour_type in (4, 6) or b"tRNS" in data[: data.find(b"IDAT")]
    return ImageHeader("PNG", width, height, samples + (alpha and colour_type not in (4, 6)), 16 if bits == 16 else 8, alpha)


def decode_rgb(data: bytes, header: ImageHeader) -> np.ndarray:
    """HxWx3 uint8 RGB (read-only) of an image whose header is `header`; alpha is composited on white.

    Without alpha, OpenCV decodes straight to 8-bit BGR (16-bit samples keep their high byte), turned
    into RGB in place; with alpha, rows are converted in chunks. Neither makes a full-size temporary.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    if not header.alpha:
        rgb = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        _check_size(rgb, header)
        for row in range(0, rgb.shape[0], _ROWS_PER_CHUNK):  # BGR -> RGB in place (cvtColor would copy it whole)
            chunk = rgb[row : row + _ROWS_PER_CHUNK]
            chunk[...] = chunk[..., ::-1]
    else:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
        _check_size(decoded, header)
        if decoded.ndim != 3 or decoded.shape[2] != 4:
            raise InvalidArgument(f"uploaded image has {1 if decoded.ndim == 2 else decoded.shape[2]} channels with alpha; send RGBA")
        if decoded.dtype not in (np.uint8, np.uint16):
            raise InvalidArgument(f"uploaded image samples are {decoded.dtype}; send 8- or 16-bit PNG or JPEG")
        rgb = np.empty((*decoded.shape[:2], 3), dtype=np.uint8)
        for row in range(0, decoded.shape[0], _ROWS_PER_CHUNK):
            chunk = decoded[row : row + _ROWS_PER_CHUNK]
            if chunk.dtype == np.uint16:
                chunk = (chunk >> 8).astype(np.uint8)
            rgb[row : row + _ROWS_PER_CHUNK] = composite_on_white(cv2.cvtColor(chunk, cv2.COLOR_BGRA2RGBA))
    rgb.flags.writeable = False
    return rgb


def _check_size(decoded: np.ndarray | None, header: ImageHeader) -> None:
    """The decoder must deliver what the header promised (memory was granted for that much)."""
    if decoded is None:
        raise InvalidArgument(_UNDECODABLE)
    if decoded.shape[:2] != (header.height, header.width):
        raise InvalidArgument(
            f"the uploaded image decodes to {decoded.shape[1]} x {decoded.shape[0]} pixels but its header says "
            f"{header.width} x {header.height}"
        )
