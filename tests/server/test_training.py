"""Fine-tuning with the real MobileSAM on real tissue: freezing, the enhanced decoder, loss, resume, serving."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from slidesam.qupath_bridge.wire_requests import FieldOfView, SlideImage
from slidesam.lab.evaluation.datasets import PatchFolder
from slidesam.lab.evaluation.ground_truth import stain_mask
from slidesam.server.models.registry import ModelRegistry
from slidesam.lab.training.data import Patch, split
from slidesam.lab.training.embedding_cache import EmbeddingDiskCache
from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig
from slidesam.lab.training.loop import Trainer, TrainConfig
from slidesam.lab.training.run import train
from slidesam.lab.training.scenarios import SCENARIOS, set_trainable, with_enhanced_decoder
from tests.conftest import SLIDE_ID, make_server

GROUPS = ("image_encoder", "prompt_encoder", "mask_decoder")
TRAINED = {"md": {"mask_decoder"}, "ie_md": {"image_encoder", "mask_decoder"}, "whole": set(GROUPS), "enhanced": {"mask_decoder"}}


@pytest.fixture(scope="module")
def ihc_tiles(tmp_path_factory) -> Path:
    """Eight 256 x 256 tiles of scikit-image's real IHC image, DAB-derived masks (ground_truth.stain_mask)."""
    folder = tmp_path_factory.mktemp("ihc-tiles")
    rgb = skimage_data.immunohistochemistry()
    mask = stain_mask(rgb, "dab")
    for row in range(0, 257, 128):
        for col in range(0, 257, 128):
            tile = mask[row : row + 256, col : col + 256]
            if 0.05 < tile.mean() < 0.95:
                cv2.imwrite(str(folder / f"ihc-{row}-{col}.png"), cv2.cvtColor(rgb[row : row + 256, col : col + 256], cv2.COLOR_RGB2BGR))
                cv2.imwrite(str(folder / f"ihc-{row}-{col}_mask.png"), tile.astype(np.uint8) * 255)
    return folder


@pytest.fixture(scope="module")
def shared_embeddings(tmp_path_factory) -> Path:
    """One `train --embedding-cache` folder for the tests that train on the IHC tiles with MobileSAM's encoder
    frozen: the first of them encodes the tiles, the others read the same float32 embeddings (reading trains
    exactly as encoding: test_a_sweep_reads_the_embedding_cache_and_trains_exactly_as_encoding)."""
    return tmp_path_factory.mktemp("shared-embeddings")


def shared_cache(model_registry, folder: Path, sam: torch.nn.Module) -> EmbeddingDiskCache:
    """A Trainer's view of the shared_embeddings folder, keyed as `train --embedding-cache` keys it."""
    return EmbeddingDiskCache(folder, model_registry.spec("mobile_sam").sha256, next(sam.parameters()).device)


@pytest.fixture(scope="module")
def pretrained_sam(model_registry) -> torch.nn.Module:
    """MobileSAM as the registry loads it for training, read from its checkpoint once; never trained itself."""
    return model_registry.load_network(model_registry.spec("mobile_sam"))


def fresh_mobile_sam(pretrained_sam) -> torch.nn.Module:
    """An untouched pretrained network of a test's own: a copy, weights and all, of `pretrained_sam`."""
    return copy.deepcopy(pretrained_sam)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_each_scenario_trains_exactly_its_parts(model_registry, pretrained_sam, ihc_tiles, shared_embeddings, scenario, tmp_path):
    sam = fresh_mobile_sam(pretrained_sam)
    if scenario == "enhanced":
        with_enhanced_decoder(sam, EnhancedDecoderConfig())
    set_trainable(sam, scenario)
    patch = next(Patch(s.name, s.image, s.gt) for s in PatchFolder(ihc_tiles))
    cache = shared_cache(model_registry, shared_embeddings, sam)
    trainer = Trainer(sam, TrainConfig(scenario, rounds=2, box_probability=0.0, augmentations_per_patch=1), [patch], [patch], tmp_path, {},
                      cache)  # read only where the encoder is frozen; ie_md and whole encode with gradients
    rng = np.random.default_rng(0)
    embedding, prepared = trainer._encoded(patch, rng, training=False)
    loss, _ = trainer.example_loss(embedding, prepared.target, rng)
    loss.backward()
    for group in GROUPS:
        parameters = [p for name, p in sam.named_parameters() if name.startswith(group + ".")]
        if group in TRAINED[scenario]:
            assert all(p.requires_grad for p in parameters), f"{scenario}: {group} should train"
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters), f"{scenario}: {group} got no gradient"
        else:
            assert not any(p.requires_grad for p in parameters), f"{scenario}: {group} should be frozen"
            assert all(p.grad is None for p in parameters), f"{scenario}: frozen {group} got a gradient"


def test_enhanced_decoder_starts_from_the_pretrained_decoder(pretrained_sam):
    sam = fresh_mobile_sam(pretrained_sam)
    pretrained = {k: v.clone() for k, v in sam.mask_decoder.state_dict().items()}
    loaded, new = with_enhanced_decoder(sam, EnhancedDecoderConfig(depth=4, global_grid=16))
    assert set(loaded) == set(pretrained), "every pretrained decoder tensor has a place in the enhanced decoder"
    assert new and all(k.startswith(("transformer.layers.2.", "transformer.layers.3.", "global_context.")) for k in new)
    state = sam.mask_decoder.state_dict()
    assert all(torch.equal(state[key], pretrained[key]) for key in loaded)
    device = next(sam.parameters()).device
    original = fresh_mobile_sam(pretrained_sam).mask_decoder
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=generator).to(device) for shape in ((1, 256, 64, 64), (1, 256, 64, 64), (1, 3, 256), (1, 256, 64, 64))]
    expected_masks, expected_iou = original.predict_masks(*inputs)
    masks, iou = sam.mask_decoder.predict_masks(*inputs)
    assert torch.allclose(masks, expected_masks, atol=1e-4) and torch.allclose(iou, expected_iou, atol=1e-5), \
        "at the start of training the enhanced decoder computes what SAM's decoder computes"


def test_short_training_lowers_the_validation_loss(model_registry, ihc_tiles, shared_embeddings, tmp_path):
    config = TrainConfig("md", epochs=3, batch_size=4, learning_rate=1e-4, augmentations_per_patch=1)
    path = train(model_registry, "mobile_sam", PatchFolder(ihc_tiles), config, tmp_path, validation_fraction=0.25,
                 embedding_cache=shared_embeddings)
    history = json.loads((tmp_path / "metrics.json").read_text())
    losses = [h["val_loss"] for h in history]
    assert losses[-1] < losses[0], f"validation loss {losses}"
    sidecar = json.loads(path.with_name(path.stem + ".slidesam.json").read_text())
    assert sidecar["scenario"] == "md" and sidecar["base_model_id"].startswith("mobile_sam@6dbb") and sidecar["epochs"] == 3
    assert len(sidecar["data_sha256"]) == 64 and (tmp_path / "loss.png").stat().st_size > 1000
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,train_loss,val_loss")


def test_save_then_resume_continues_identically(model_registry, pretrained_sam, ihc_tiles, shared_embeddings, tmp_path):
    patches = [Patch(s.name, s.image, s.gt) for s in PatchFolder(ihc_tiles)]
    training, validation = split(patches, 0.25, 0)
    training, validation = training[:2], validation[:1]  # resuming is what is tested, not learning: few patches do

    def trainer(epochs: int, out: Path) -> Trainer:
        out.mkdir(exist_ok=True)
        sam = fresh_mobile_sam(pretrained_sam)
        set_trainable(sam, "md")
        cache = shared_cache(model_registry, shared_embeddings, sam)
        return Trainer(sam, TrainConfig("md", epochs=epochs, augmentations_per_patch=1), training, validation, out, {}, cache)

    straight = trainer(2, tmp_path / "straight")
    straight.fit()
    interrupted = trainer(1, tmp_path / "interrupted")
    interrupted.fit()
    resumed = trainer(2, tmp_path / "interrupted")
    resumed.resume(tmp_path / "interrupted" / "last.pt")
    resumed.fit()
    a, b = straight.sam.state_dict(), resumed.sam.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [h["val_loss"] for h in straight.history] == [h["val_loss"] for h in resumed.history]


def test_finetuned_enhanced_checkpoint_is_served_and_answers_clicks(model_registry, ihc_tiles, shared_embeddings, slide_root,
                                                                    synthetic_slide, tmp_path):
    config = TrainConfig("enhanced", epochs=1, augmentations_per_patch=1)
    tiles = _copy_tiles(ihc_tiles, PatchFolder(ihc_tiles).names()[:3], tmp_path / "tiles")  # serving is tested, not learning
    path = train(model_registry, "mobile_sam", tiles, config, tmp_path / "ft", name="mobile_sam-enhanced-test",
                 embedding_cache=shared_embeddings)
    registry = ModelRegistry.create(model_dir=tmp_path / "ft", device=str(model_registry.device))
    spec = registry.spec("mobile_sam-enhanced-test")
    assert spec.checkpoint == path and spec.architecture == "vit_t"
    server = make_server(registry, slide_root)
    try:
        from slidesam.qupath_bridge.client import SlidesamClient

        with SlidesamClient(server.address) as client:
            assert "mobile_sam-enhanced-test" in {m.name for m in client.list_models()}
            minx, miny, maxx, maxy = synthetic_slide.object_geometry.bounds
            fov = FieldOfView(SlideImage(SLIDE_ID), minx - 500, miny - 500, maxx - minx + 1000, maxy - miny + 1000, magnification=5)
            with client.open_object(fov, model="mobile_sam-enhanced-test") as session:
                point = synthetic_slide.object_geometry.representative_point()
                result = session.click(point.x, point.y)
        assert result.model_id == spec.model_id and not result.geometry.is_empty
    finally:
        server.stop()


def test_a_negative_patch_trains_towards_an_empty_mask(pretrained_sam, tmp_path):
    """Tissue without the object (an empty mask): the first click is positive on tissue, never on glass, and a
    few steps on it lower its loss; the same seed gives the same loss."""
    image = np.full((256, 256, 3), 245, np.uint8)  # glass on the left ...
    image[:, 128:] = skimage_data.immunohistochemistry()[:256, :128]  # ... real tissue on the right
    negative = Patch("negative", image, np.zeros((256, 256), bool))
    sam = fresh_mobile_sam(pretrained_sam)
    set_trainable(sam, "md")
    trainer = Trainer(sam, TrainConfig("md", learning_rate=1e-4, augmentations_per_patch=1), [negative], [negative], tmp_path, {})
    embedding, prepared = trainer._encoded(negative, np.random.default_rng(0), training=False)
    assert not prepared.target.any() and not prepared.tissue[:, :127].any() and prepared.tissue[:, 129:].float().mean() > 0.5
    first = trainer._first_prompt(prepared.target, np.random.default_rng(0), prepared.tissue)
    assert [p[2] for p in first["points"]] == [1] and first["points"][0][0] >= 128 * 4

    def loss() -> torch.Tensor:
        return trainer.example_loss(embedding, prepared.target, np.random.default_rng(0), prepared.tissue)[0]

    assert float(loss().detach()) == float(loss().detach())
    losses = []
    for _ in range(4):
        trainer.optimizer.zero_grad(set_to_none=True)
        step = loss()
        step.backward()
        trainer.optimizer.step()
        losses.append(float(step.detach()))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0], f"losses {losses}"


def _copy_tiles(source: Path, names: list[str], folder: Path) -> PatchFolder:
    folder.mkdir()
    for name in names:
        for suffix in (".png", "_mask.png"):
            shutil.copy(source / f"{name}{suffix}", folder / f"{name}{suffix}")
    return PatchFolder(folder)


def test_a_sweep_reads_the_embedding_cache_and_trains_exactly_as_encoding(model_registry, ihc_tiles, tmp_path, caplog):
    """Two runs sharing --embedding-cache: the second encodes nothing and ends with the same weights and
    losses; the validation loss comes from --validation-data."""
    names = PatchFolder(ihc_tiles).names()
    training = _copy_tiles(ihc_tiles, names[:2], tmp_path / "train")
    validation = _copy_tiles(ihc_tiles, names[2:3], tmp_path / "select")
    config = TrainConfig("md", epochs=1, learning_rate=1e-4, augmentations_per_patch=1)
    weights, histories = [], []
    for run in ("first", "second"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="slidesam.lab.training.run"):
            path = train(model_registry, "mobile_sam", training, config, tmp_path / run, name=f"cached-{run}",
                         validation_dataset=validation, embedding_cache=tmp_path / "cache")
        weights.append(torch.load(path, weights_only=True)["model"])
        histories.append(json.loads((tmp_path / run / "metrics.json").read_text()))
        counts = next(r.getMessage() for r in caplog.records if "embedding cache" in r.getMessage())
        assert counts.endswith("0 read, 3 encoded" if run == "first" else "3 read, 0 encoded"), counts
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    losses = [[(h["epoch"], h["train_loss"], h["val_loss"], h["val_iou"]) for h in history] for history in histories]
    assert losses[0] == losses[1] and len(losses[0]) == 2
    sidecar = json.loads(path.with_name(path.stem + ".slidesam.json").read_text())
    assert sidecar["patches"] == {"training": 2, "validation": 1} and "select" in sidecar["validation_data"]


def test_a_damaged_cache_entry_is_encoded_again_never_served(pretrained_sam, tmp_path, caplog):
    sam = fresh_mobile_sam(pretrained_sam)
    device = next(sam.parameters()).device
    pixels = torch.rand(1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size, generator=torch.Generator().manual_seed(1)).to(device)
    cache = EmbeddingDiskCache(tmp_path, "a" * 64, device)
    with torch.no_grad():
        encoded = cache.get_or_encode(pixels, sam.image_encoder)
        assert torch.equal(cache.get_or_encode(pixels, sam.image_encoder), encoded) and (cache.hits, cache.misses) == (1, 1)
        assert EmbeddingDiskCache(tmp_path, "b" * 64, device).key(pixels) != cache.key(pixels), "another encoder, another key"
        (entry,) = tmp_path.rglob("*.pt")
        entry.write_bytes(b"not a tensor")
        with caplog.at_level(logging.WARNING, logger="slidesam.lab.training.embedding_cache"):
            again = cache.get_or_encode(pixels, sam.image_encoder)
    assert torch.equal(again, encoded) and cache.misses == 2 and "unreadable" in caplog.text
    assert torch.equal(torch.load(entry, weights_only=True), encoded.cpu()), "the damaged entry is replaced"


def test_validation_data_that_shares_a_patch_with_training_is_refused(model_registry, ihc_tiles, tmp_path):
    names = PatchFolder(ihc_tiles).names()
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(ihc_tiles / f"{names[0]}.png", renamed / "other-name.png")  # the same pixels under another name
    shutil.copy(ihc_tiles / f"{names[0]}_mask.png", renamed / "other-name_mask.png")
    for validation in (PatchFolder(ihc_tiles), PatchFolder(renamed)):
        with pytest.raises(ValueError, match="shares"):
            train(model_registry, "mobile_sam", PatchFolder(ihc_tiles), TrainConfig("md", epochs=1), tmp_path / "out",
                  validation_dataset=validation)
    assert not list((tmp_path / "out").glob("*.pt")), "nothing trained, nothing saved"
