"""Images a hostile user uploads to exhaust a server's CPU or memory, for the hostile-user tests and
`scripts/attack_server`. Each is small on the wire and costly to decode."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

_EOI = b"\xff\xd9"
_SOS = 0xDA


def many_scan_jpeg(side: int = 8192, extra_scans: int = 500, grey: int = 128) -> bytes:
    """A progressive JPEG of one grey level whose last refinement scan is repeated `extra_scans` times.

    Each scan is a few dozen bytes (the image is flat: one run of end-of-band codes) but makes the
    decoder pass over every block again: 500 extra scans at 8192^2 are ~0.3 MB and ~20-40 s of CPU.
    """
    encoded = io.BytesIO()
    Image.fromarray(np.full((side, side), grey, np.uint8)).save(encoded, "JPEG", progressive=True, quality=90)
    segments = _segments(encoded.getvalue())
    last_scan = [data for marker, data in segments if marker == _SOS][-1]
    body = b"".join(data for marker, data in segments if marker != _EOI[1])
    return b"\xff\xd8" + body + last_scan * extra_scans + _EOI


def deep_rgba_png(side: int = 8192) -> bytes:
    """A flat 16-bit RGBA PNG: ~0.5 MB that decodes to side^2 x 8 bytes (512 MiB at 8192^2)."""
    ok, encoded = cv2.imencode(".png", np.full((side, side, 4), 40000, np.uint16), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return encoded.tobytes()


def lying_jpeg(width: int = 8192, height: int = 8192) -> bytes:
    """A JPEG header claiming width x height pixels, with almost no image data behind it (~600 bytes):
    a decoder still allocates (and returns) the whole image."""
    encoded = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(encoded, "JPEG", quality=50)
    data = bytearray(encoded.getvalue())
    start = data.index(b"\xff\xc0")  # start of frame: length(2) precision(1) height(2) width(2)
    data[start + 5 : start + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """A JPEG's marker segments after SOI, each with its bytes (a scan with its entropy-coded data)."""
    segments, position = [], 2
    while position < len(data):
        marker = data[position + 1]
        if marker == _EOI[1]:
            segments.append((marker, _EOI))
            break
        end = position + 2 + int.from_bytes(data[position + 2 : position + 4], "big")
        if marker == _SOS:
            while True:  # entropy-coded data runs to the next marker that is neither a stuffed byte nor a restart
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        segments.append((marker, data[position:end]))
        position = end
    return segments
