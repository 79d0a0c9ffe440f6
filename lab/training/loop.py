"""The training loop: iterative click simulation as SAM was trained, focal + dice + IoU-head loss.

Per patch and step: a first prompt (a point drawn from the object, or its jittered bounding box with
probability `box_probability`; for a negative patch, whose target is empty, a positive click on a
tissue pixel drawn at random, glass excluded) decoded multimask, the mask loss taken on the best of
the three outputs; then `rounds - 1` corrections, each a click drawn from the larger error region
(missed object: positive; spill-over: negative) with the previous logits fed back, decoded
single-mask. Losses are computed on the decoder's 256 x 256 logits against the ground truth in the
same frame.
Deterministic: every random draw comes from `default_rng([seed, epoch, step, item])`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from slidesam.atomic_files import atomic_write
from slidesam.lab.training.data import Patch, augment, tissue_pixels, variants
from slidesam.lab.training.embedding_cache import EmbeddingDiskCache
from slidesam.lab.training.model_parts import Embedding, training_parts
from slidesam.lab.training.scenarios import encoder_frozen

log = logging.getLogger(__name__)
LOW_RES = 256
FOCAL_WEIGHT = 20.0  # SAM's 20:1 focal to dice


@dataclass
class TrainConfig:
    scenario: str
    epochs: int = 10
    batch_size: int = 4
    learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    rounds: int = 3
    box_probability: float = 0.5
    augmentations_per_patch: int = 4
    seed: int = 0


@dataclass
class Prepared:
    """A patch in the model's frame: normalised padded input and the low-resolution target."""

    pixels: torch.Tensor   # 1 x 3 x S x S, normalised and padded
    target: torch.Tensor   # 256 x 256 bool
    tissue: torch.Tensor | None = None  # 256 x 256 bool, empty targets only: where their first click may land


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss without class weighting: tumour regions are large, so neither class needs down-weighting
    (the detection-style alpha = 0.25 taught the decoder to under-segment here)."""
    probability = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = probability * target + (1 - probability) * (1 - target)
    return (ce * (1 - p_t) ** gamma).flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probability = logits.sigmoid().flatten(-2)
    flat = target.flatten(-2)
    return 1 - (2 * (probability * flat).sum(-1) + 1) / (probability.sum(-1) + flat.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of the predicted masks with the target; 1 where both are empty (a negative answered right)."""
    predicted = logits > 0
    union = (predicted | target).flatten(-2).sum(-1)
    return torch.where(union == 0, 1.0, (predicted & target).flatten(-2).sum(-1) / union.clamp(min=1))


class Trainer:
    """Trains the parts of a SAM model its scenario leaves unfrozen; checkpoints every epoch."""

    def __init__(
        self, sam: nn.Module, config: TrainConfig, training: list[Patch], validation: list[Patch], out_dir: Path, metadata: dict,
        embedding_cache: EmbeddingDiskCache | None = None,
    ):
        # Eval mode throughout: TinyViT's batch norms keep their pretrained statistics (batches here
        # hold one image per encoder pass) and nothing in SAM uses dropout; gradients flow all the same.
        self.sam, self.config, self.out_dir, self.metadata = sam.eval(), config, out_dir, metadata
        self.training, self.validation = training, validation
        self.device = next(sam.parameters()).device
        self.parts = training_parts(sam)   # SAM and MobileSAM, or SAM 2
        self.size = self.parts.size
        if embedding_cache is not None and not self.parts.single_tensor_embedding:
            raise ValueError("the training embedding cache keeps SAM and MobileSAM embeddings; train SAM 2 without it")
        self.frozen_encoder = encoder_frozen(config.scenario)
        parameters = [p for p in sam.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else torch.autocast("cpu", enabled=False)
        self._embeddings: dict[tuple[str, int], Embedding] = {}
        self.embedding_cache = embedding_cache
        self._variants: dict[str, list[Prepared]] = {}
        self.history: list[dict] = []
        self.epoch = 0

    # -------------------------------------------------------------------------------- data

    def prepare(self, image: np.ndarray, mask: np.ndarray) -> Prepared:
        pixels, resized = self.parts.prepare_image(image)
        height, width = resized.shape[:2]
        target = torch.zeros(self.size, self.size, device=self.device)
        target[:height, :width] = F.interpolate(torch.as_tensor(mask, dtype=torch.float32, device=self.device)[None, None], (height, width), mode="nearest")[0, 0]
        low = F.interpolate(target[None, None], (LOW_RES, LOW_RES), mode="area")[0, 0] > 0.5
        return Prepared(pixels, low, None if low.any() else self._tissue(resized))

    def _tissue(self, resized: np.ndarray) -> torch.Tensor:
        """The stained pixels of a resized image in the 256 x 256 frame (all of the image where none is)."""
        frame = torch.zeros(2, self.size, self.size, device=self.device)
        height, width = resized.shape[:2]
        frame[0, :height, :width] = torch.as_tensor(tissue_pixels(resized), dtype=torch.float32, device=self.device)
        frame[1, :height, :width] = 1.0
        stained, inside = F.interpolate(frame[None], (LOW_RES, LOW_RES), mode="area")[0] > 0.5
        return stained if stained.any() else inside

    def _prepared_variants(self, patch: Patch) -> list[Prepared]:
        if patch.name not in self._variants:
            self._variants[patch.name] = [self.prepare(i, m) for i, m in variants(patch, self.config.augmentations_per_patch, self.config.seed)]
        return self._variants[patch.name]

    def _embedding(self, key: tuple[str, int], pixels: torch.Tensor) -> Embedding:
        """Frozen encoder: computed once per patch and augmentation (or read from the disk cache), reused
        every epoch."""
        if key not in self._embeddings:
            with torch.no_grad(), self.autocast:
                if self.embedding_cache is None:
                    self._embeddings[key] = self.parts.to_float(self.parts.encode(pixels))
                else:
                    self._embeddings[key] = self.embedding_cache.get_or_encode(pixels, self.parts.encode)
        return self._embeddings[key]

    def _encoded(self, patch: Patch, rng: np.random.Generator, training: bool) -> tuple[Embedding, Prepared]:
        """(image embedding, prepared patch) for one patch: a fixed variant and cached embedding when the
        encoder is frozen, a fresh augmentation and a differentiable encoding otherwise."""
        if self.frozen_encoder:
            index = int(rng.integers(self.config.augmentations_per_patch)) if training else 0
            prepared = self._prepared_variants(patch)[index]
            return self._embedding((patch.name, index), prepared.pixels), prepared
        image, mask = augment(patch.image, patch.mask, rng) if training else (patch.image, patch.mask)
        prepared = self.prepare(image, mask)
        with self.autocast:
            return self.parts.encode(prepared.pixels), prepared

    # -------------------------------------------------------------------------------- prompts

    @staticmethod
    def _point_in(region: torch.Tensor, rng: np.random.Generator) -> tuple[float, float]:
        """A uniformly drawn pixel of a 256 x 256 region, in the encoder's input frame (x, y)."""
        rows, cols = torch.nonzero(region, as_tuple=True)
        pick = int(rng.integers(len(rows)))
        return float(cols[pick]) * 4 + 2, float(rows[pick]) * 4 + 2

    def _first_prompt(self, target: torch.Tensor, rng: np.random.Generator, tissue: torch.Tensor | None) -> dict:
        if not target.any():
            if tissue is None:
                raise ValueError("an empty target (a negative patch) needs the tissue its first click lands on")
            x, y = self._point_in(tissue, rng)
            return {"points": [(x, y, 1)]}
        if rng.random() < self.config.box_probability:
            rows, cols = torch.nonzero(target, as_tuple=True)
            x0, x1, y0, y1 = (float(v) * 4 for v in (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1))
            jitter = rng.uniform(-0.1, 0.1, size=4) * np.array([x1 - x0, x1 - x0, y1 - y0, y1 - y0])
            box = np.clip(np.array([x0, y0, x1, y1]) + jitter[[0, 2, 1, 3]], 0, self.size)
            return {"boxes": torch.as_tensor(box, dtype=torch.float32, device=self.device)[None]}
        x, y = self._point_in(target, rng)
        return {"points": [(x, y, 1)]}

    def _encode_prompts(self, prompt: dict, previous: torch.Tensor | None):
        points = None
        if prompt.get("points"):
            coords = torch.tensor([[p[0], p[1]] for p in prompt["points"]], dtype=torch.float32, device=self.device)[None]
            labels = torch.tensor([p[2] for p in prompt["points"]], dtype=torch.int64, device=self.device)[None]
            points = (coords, labels)
        return self.parts.prompts(points, prompt.get("boxes"), previous)

    # -------------------------------------------------------------------------------- loss

    def example_loss(
        self, embedding: Embedding, target: torch.Tensor, rng: np.random.Generator, tissue: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float]:
        """The loss over all rounds of one example, and the IoU of its last mask. An empty target (a
        negative) needs `tissue`, where its first click lands; its corrections are negative clicks."""
        target_f = target.float()
        prompt = self._first_prompt(target, rng, tissue)
        previous, total, last_iou = None, torch.zeros((), device=self.device), 0.0
        for round_ in range(self.config.rounds):
            with self.autocast:
                sparse, dense = self._encode_prompts(prompt, previous)
                logits, iou_pred = self.parts.decode(embedding, sparse, dense)
            logits, iou_pred = logits[0].float(), iou_pred[0].float()
            chosen = slice(1, None) if round_ == 0 else slice(0, 1)
            logits, iou_pred = logits[chosen], iou_pred[chosen]
            targets = target_f.expand_as(logits)
            mask_losses = FOCAL_WEIGHT * focal_loss(logits, targets) + dice_loss(logits, targets)
            actual = mask_iou(logits.detach(), target)
            best = int(torch.argmin(mask_losses.detach()))
            total = total + mask_losses[best] + F.mse_loss(iou_pred, actual)
            previous = logits[best : best + 1][None].detach()
            last_iou = float(actual[best])
            predicted = previous[0, 0] > 0
            missed, spilled = target & ~predicted, predicted & ~target
            if round_ + 1 == self.config.rounds or not (missed.any() or spilled.any()):
                return total / (round_ + 1), last_iou
            positive = int(missed.sum()) >= int(spilled.sum())
            x, y = self._point_in(missed if positive else spilled, rng)
            prompt = {"points": [*prompt.get("points", []), (x, y, int(positive))], "boxes": prompt.get("boxes")}
        return total / self.config.rounds, last_iou

    # -------------------------------------------------------------------------------- epochs

    def train_epoch(self) -> float:
        order = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(self.training))
        losses = []
        batches = [order[i : i + self.config.batch_size] for i in range(0, len(order), self.config.batch_size)]
        for step, batch in enumerate(tqdm(batches, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", unit="step", leave=False)):
            self.optimizer.zero_grad(set_to_none=True)
            batch_loss = torch.zeros((), device=self.device)
            for item, index in enumerate(batch):
                rng = np.random.default_rng([self.config.seed, self.epoch, step, item])
                embedding, prepared = self._encoded(self.training[index], rng, training=True)
                loss, _ = self.example_loss(embedding, prepared.target, rng, prepared.tissue)
                batch_loss = batch_loss + loss / len(batch)
            batch_loss.backward()
            self.optimizer.step()
            losses.append(batch_loss.item())
        return float(np.mean(losses))

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Validation loss and final-round IoU with fixed prompts (seeded per patch, not per epoch)."""
        losses, ious = [], []
        for item, patch in enumerate(self.validation):
            rng = np.random.default_rng([self.config.seed, 10**6, item])
            embedding, prepared = self._encoded(patch, rng, training=False)
            loss, iou = self.example_loss(embedding, prepared.target, rng, prepared.tissue)
            losses.append(float(loss))
            ious.append(iou)
        return float(np.mean(losses)), float(np.mean(ious))

    def fit(self) -> list[dict]:
        """Trains the remaining epochs (all, or those after a resumed checkpoint)."""
        if self.epoch == 0 and not self.history:
            loss, iou = self.validate()
            self.history.append({"epoch": 0, "train_loss": None, "val_loss": loss, "val_iou": iou, "seconds": 0.0})
        while self.epoch < self.config.epochs:
            started = time.perf_counter()
            train_loss = self.train_epoch()
            self.epoch += 1
            val_loss, val_iou = self.validate()
            self.history.append({"epoch": self.epoch, "train_loss": train_loss, "val_loss": val_loss, "val_iou": val_iou,
                                 "seconds": time.perf_counter() - started})
            log.info("epoch %d: train loss %.4f, validation loss %.4f, validation IoU %.3f", self.epoch, train_loss, val_loss, val_iou)
            self.save_state()
            write_metrics(self.history, self.out_dir)
        return self.history

    # -------------------------------------------------------------------------------- state

    def state(self) -> dict:
        return {"model": self.sam.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": self.epoch,
                "history": json.dumps(self.history), "metadata": json.dumps(self.metadata), "config": json.dumps(asdict(self.config))}

    def save_state(self) -> Path:
        path = self.out_dir / "last.pt"
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        atomic_write(path, buffer.getvalue())
        return path

    def resume(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = json.loads(state["config"])
        if saved["scenario"] != self.config.scenario or saved["seed"] != self.config.seed:
            raise ValueError(f"{path} was trained with scenario {saved['scenario']} seed {saved['seed']}; resume with the same")
        self.sam.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.history = json.loads(state["history"])
        log.info("resumed %s at epoch %d", path, self.epoch)


def write_metrics(history: list[dict], out_dir: Path) -> None:
    """metrics.csv, metrics.json and loss.png (training and validation loss per epoch)."""
    with (out_dir / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    (out_dir / "metrics.json").write_text(json.dumps(history, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.5, 4))
    epochs = [h["epoch"] for h in history]
    axes.plot([h["epoch"] for h in history if h["train_loss"] is not None],
              [h["train_loss"] for h in history if h["train_loss"] is not None], marker="o", label="training")
    axes.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    axes.set(xlabel="epoch", ylabel="loss (focal x20 + dice + IoU MSE)", title="Fine-tuning loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(out_dir / "loss.png", dpi=110)
    plt.close(figure)
