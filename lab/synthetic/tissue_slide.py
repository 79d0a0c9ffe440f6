"""Small Aperio-style slides with tissue islands on blank glass (for precompute tests and benchmarks).

Tissue is a set of ellipses painted H&E-like (pink stroma with purple nuclei); the rest is near-white
glass, with optional small coloured specks (dust) that tissue detection must ignore.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import tifffile

TILE = 256
JPEG_QUALITY = 85
THUMBNAIL_SIZE = 768
GLASS_RGB = (243, 242, 240)
STROMA_RGB = (226, 152, 190)
NUCLEUS_RGB = (92, 48, 130)


def write_tissue_slide(
    path: Path,
    width: int = 5120,
    height: int = 3584,
    tissue: tuple[tuple[float, float, float, float], ...] = ((1500.0, 1800.0, 1300.0, 1500.0),),
    specks: tuple[tuple[float, float, float], ...] = ((4400.0, 1000.0, 30.0),),
    mpp: float = 0.5,
    objective_power: float = 20,
    levels: tuple[int, ...] = (1, 4, 16),
    seed: int = 0,
) -> Path:
    """Writes the slide: `tissue` ellipses (cx, cy, rx, ry) and `specks` discs (cx, cy, r), level-0 px."""
    rng = np.random.default_rng(seed)
    pixels = _paint(width, height, tissue, specks, rng)
    header = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE})"
    properties = f"|AppMag = {objective_power:g}|MPP = {mpp:g}"
    path = Path(path)
    with tifffile.TiffWriter(path) as tif:
        for index, downsample in enumerate(levels):
            size = (max(1, width // downsample), max(1, height // downsample))
            level = pixels if index == 0 else cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
            resized = f" -> {size[0]}x{size[1]}" if index else ""
            _write(tif, level, f"{header}{resized} JPEG/RGB Q={JPEG_QUALITY}{properties}", tile=True)
            if index == 0:
                scale = THUMBNAIL_SIZE / max(width, height)
                thumb = cv2.resize(pixels, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
                description = f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> {thumb.shape[1]}x{thumb.shape[0]} - {properties}"
                _write(tif, thumb, description, tile=False)
    return path


def _paint(width: int, height: int, tissue, specks, rng: np.random.Generator) -> np.ndarray:
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = GLASS_RGB
    inside = np.zeros((height, width), dtype=np.uint8)
    for cx, cy, rx, ry in tissue:
        cv2.ellipse(inside, (round(cx), round(cy)), (round(rx), round(ry)), 0, 0, 360, 1, -1)
    pixels[inside.astype(bool)] = STROMA_RGB
    for _ in range(int(inside.sum() / 900)):  # about one nucleus per 30 x 30 px of tissue
        y, x = rng.integers(0, height), rng.integers(0, width)
        if inside[y, x]:
            cv2.circle(pixels, (int(x), int(y)), int(rng.integers(4, 9)), NUCLEUS_RGB, -1)
    for cx, cy, radius in specks:
        cv2.circle(pixels, (round(cx), round(cy)), round(radius), NUCLEUS_RGB, -1)
    noise = rng.normal(0.0, 3.0, size=(height, width, 1)).astype(np.float32)
    return np.clip(pixels + noise, 0, 255).astype(np.uint8)


def _write(tif: tifffile.TiffWriter, pixels: np.ndarray, description: str, tile: bool) -> None:
    tif.write(
        pixels, photometric="rgb", tile=(TILE, TILE) if tile else None, compression="jpeg",
        compressionargs={"level": JPEG_QUALITY}, description=description, metadata=None,
    )
