"""`slidesam-server train`: a base model, a scenario and a dataset in; a servable checkpoint out."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import torch

from slidesam.lab.evaluation.datasets import Dataset
from slidesam.server.models.checkpoints import sha256_of_file
from slidesam.server.models.registry import FINETUNED_SUFFIX, ModelRegistry
from slidesam.lab.training.data import data_hash, load_patches, split
from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig
from slidesam.lab.training.loop import Trainer, TrainConfig
from slidesam.lab.training.scenarios import SCENARIOS, set_trainable, with_enhanced_decoder

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
) -> Path:
    """Fine-tunes `base` on the dataset; returns the final checkpoint, which the registry serves."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    spec = registry.spec(base)
    sam = registry.load_network(spec)
    loaded, new = with_enhanced_decoder(sam, decoder) if config.scenario == "enhanced" else ([], [])
    trainable = set_trainable(sam, config.scenario)
    patches = load_patches(dataset)
    training, validation = split(patches, validation_fraction, config.seed)
    digest = data_hash(patches)
    name = name or f"{spec.name}-{config.scenario}-{digest[:8]}"
    metadata = {
        "name": name, "base_model": spec.name, "base_model_id": spec.model_id, "base_checkpoint_sha256": spec.sha256,
        "architecture": spec.architecture, "scenario": config.scenario, "scenario_description": SCENARIOS[config.scenario],
        "decoder": decoder.to_dict() if config.scenario == "enhanced" else None,
        "decoder_keys_loaded": len(loaded), "decoder_keys_new": new,
        "data": dataset.description, "data_sha256": digest, "patches": {"training": len(training), "validation": len(validation)},
        "trainable_parameters": trainable, "training": config.__dict__,
    }
    log.info("training %s: %s, %d trainable parameters, %d/%d patches", name, SCENARIOS[config.scenario], trainable, len(training), len(validation))
    trainer = Trainer(sam, config, training, validation, out_dir, metadata)
    if resume and (out_dir / "last.pt").is_file():
        trainer.resume(out_dir / "last.pt")
    history = trainer.fit()
    metadata.update(epochs=trainer.epoch, metrics=history[-1], created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return save_finetuned(sam, metadata, out_dir / f"{name}.pt")


def save_finetuned(sam: torch.nn.Module, metadata: dict, path: Path) -> Path:
    """The weights (loadable with weights_only=True) plus a JSON sidecar the registry discovers."""
    torch.save({"model": sam.state_dict(), "metadata": json.dumps(metadata)}, path)
    sidecar = dict(metadata, checkpoint=path.name, sha256=sha256_of_file(path))
    path.with_name(path.stem + FINETUNED_SUFFIX).write_text(json.dumps(sidecar, indent=1))
    log.info("saved %s (sha256 %s)", path, sidecar["sha256"])
    return path
