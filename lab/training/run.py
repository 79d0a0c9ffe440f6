"""`slidesam-server train`: a base model, a scenario and a dataset in; a servable checkpoint out."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from slidesam.lab.evaluation.datasets import Dataset
from slidesam.lab.training.data import Patch, data_hash, load_patches, split
from slidesam.lab.training.embedding_cache import EmbeddingDiskCache
from slidesam.lab.training.loop import Trainer, TrainConfig
from slidesam.lab.training.scenarios import SCENARIOS, set_trainable, with_enhanced_decoder
from slidesam.server.models.checkpoints import sha256_of_file
from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig
from slidesam.server.models.registry import FINETUNED_SUFFIX, ModelRegistry

log = logging.getLogger(__name__)


def train(
    registry: ModelRegistry,
    base: str,
    dataset: Dataset,
    config: TrainConfig,
    out_dir: Path,
    name: str = "",
    decoder: EnhancedDecoderConfig = EnhancedDecoderConfig(),
    validation_fraction: float = 0.25,
    resume: bool = False,
    validation_dataset: Dataset | None = None,
    embedding_cache: Path | None = None,
) -> Path:
    """Fine-tunes `base` on the dataset; returns the final checkpoint, which the registry serves.
    The validation loss comes from `validation_dataset` where given (e.g. other regions of the same
    slides), else from a seeded `validation_fraction` of the patches. `embedding_cache` keeps the
    frozen encoder's outputs on disk for the next run (see embedding_cache.py)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    spec = registry.spec(base)
    sam = registry.load_network(spec)
    loaded, new = with_enhanced_decoder(sam, decoder) if config.scenario == "enhanced" else ([], [])
    trainable = set_trainable(sam, config.scenario)
    patches = load_patches(dataset)
    if validation_dataset is None:
        training, validation = split(patches, validation_fraction, config.seed)
    else:
        training, validation = patches, load_patches(validation_dataset)
        _check_disjoint(training, validation)
    digest = data_hash(patches)
    name = name or f"{spec.name}-{config.scenario}-{digest[:8]}"
    metadata = {
        "name": name, "base_model": spec.name, "base_model_id": spec.model_id, "base_checkpoint_sha256": spec.sha256,
        "architecture": spec.architecture, "scenario": config.scenario, "scenario_description": SCENARIOS[config.scenario],
        "decoder": decoder.to_dict() if config.scenario == "enhanced" else None,
        "decoder_keys_loaded": len(loaded), "decoder_keys_new": new,
        "data": dataset.description, "data_sha256": digest,
        "validation_data": validation_dataset.description if validation_dataset is not None else f"{validation_fraction:g} of the data",
        "validation_sha256": data_hash(validation), "patches": {"training": len(training), "validation": len(validation)},
        "trainable_parameters": trainable, "training": config.__dict__,
    }
    log.info("training %s: %s, %d trainable parameters, %d/%d patches", name, SCENARIOS[config.scenario], trainable, len(training), len(validation))
    cache = EmbeddingDiskCache(embedding_cache, spec.sha256, next(sam.parameters()).device) if embedding_cache else None
    trainer = Trainer(sam, config, training, validation, out_dir, metadata, cache)
    if resume and (out_dir / "last.pt").is_file():
        trainer.resume(out_dir / "last.pt")
    history = trainer.fit()
    if cache is not None:
        log.info("embedding cache %s: %d read, %d encoded", embedding_cache, cache.hits, cache.misses)
    metadata.update(epochs=trainer.epoch, metrics=history[-1], created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return save_finetuned(sam, metadata, out_dir / f"{name}.pt")


def _check_disjoint(training: list[Patch], validation: list[Patch]) -> None:
    """Refuses a validation set that shares a patch (by name or by pixels) with the training set."""
    if not validation:
        raise ValueError("the validation data holds no patch")
    names = {p.name for p in training} & {p.name for p in validation}
    pixels = {_pixels_key(p) for p in training} & {_pixels_key(p) for p in validation}
    if names or pixels:
        shared = sorted(names) or [p.name for p in validation if _pixels_key(p) in pixels]
        raise ValueError(f"the validation data shares {len(shared)} patch(es) with the training data (e.g. {shared[0]})")


def _pixels_key(patch: Patch) -> str:
    return hashlib.sha256(np.ascontiguousarray(patch.image).tobytes()).hexdigest()


def save_finetuned(sam: torch.nn.Module, metadata: dict, path: Path) -> Path:
    """The weights (loadable with weights_only=True) plus a JSON sidecar the registry discovers."""
    torch.save({"model": sam.state_dict(), "metadata": json.dumps(metadata)}, path)
    sidecar = dict(metadata, checkpoint=path.name, sha256=sha256_of_file(path))
    path.with_name(path.stem + FINETUNED_SUFFIX).write_text(json.dumps(sidecar, indent=1))
    log.info("saved %s (sha256 %s)", path, sidecar["sha256"])
    return path
