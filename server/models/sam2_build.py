"""SAM 2 and SAM 2.1 image models through Meta's `sam2` package, an optional extra: which exist, where
their official checkpoints are published, and building a network the way the package builds it.

The package (Apache-2.0) builds a model from a hydra config (`configs/sam2.1/sam2.1_hiera_t.yaml`)
with `build_sam2`; the weights are loaded afterwards by the registry (SHA-256 checked,
`torch.load(weights_only=True)`), never by the package. Its compiled CUDA extension is optional and
only fills holes in masks, which slidesam never asks for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from torch import nn

from slidesam.server.errors import ModelUnavailable

SAM2_EXTRA = "pip install 'slidesam[sam2]'"
_RELEASES = {
    "sam2": "https://dl.fbaipublicfiles.com/segment_anything_2/072824",
    "sam2.1": "https://dl.fbaipublicfiles.com/segment_anything_2/092824",
}
_SIZES = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


@dataclass(frozen=True)
class Sam2Variant:
    """One published SAM 2 image model."""

    release: str    # "sam2" or "sam2.1"
    size: str       # "tiny", "small", "base_plus" or "large"

    @property
    def name(self) -> str:
        """The registry name: the official checkpoint's file name without `.pt` (e.g. sam2.1_hiera_tiny)."""
        return f"{self.release}_hiera_{self.size}"

    @property
    def architecture(self) -> str:
        """The package's config name (e.g. sam2.1_hiera_t)."""
        return f"{self.release}_hiera_{_SIZES[self.size]}"

    @property
    def official_url(self) -> str:
        return f"{_RELEASES[self.release]}/{self.name}.pt"

    @property
    def description(self) -> str:
        label = "SAM 2.1" if self.release == "sam2.1" else "SAM 2"
        return f"{label} Hiera-{_SIZES[self.size].upper()} image model (sam2 package); checkpoint supplied by the admin"


SAM2_VARIANTS = [Sam2Variant(release, size) for release in _RELEASES for size in _SIZES]


def is_sam2(architecture: str) -> bool:
    """Whether a spec's architecture is a SAM 2 config (served by sam2_model.Sam2Model)."""
    return architecture.startswith("sam2")


def import_sam2(module: str) -> ModuleType:
    """A module of the sam2 package; ModelUnavailable naming the extra to install when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ModelUnavailable(f"SAM 2 models need the sam2 package and its dependencies ({error}): {SAM2_EXTRA}") from error


def build_sam2_network(architecture: str) -> nn.Module:
    """A randomly initialised SAM 2 network of that config, built by the package's own `build_sam2`, with
    its default post-processing (an unstable single-mask output falls back to the best multimask one)."""
    release = "sam2.1" if architecture.startswith("sam2.1") else "sam2"
    build = import_sam2("sam2.build_sam").build_sam2
    return build(f"configs/{release}/{architecture}.yaml", ckpt_path=None, device="cpu", mode="eval")
