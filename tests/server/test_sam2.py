"""SAM 2 / 2.1 served like SAM, with a randomly initialised SAM 2.1 Hiera-T built as the sam2 package builds it
(conftest's sam2_registry): masks pixel-equal to SAM2ImagePredictor, the stepped encoder, decoder batching,
the caches with their high-resolution features, gRPC, ListModels and the bridge, eval and md training."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skimage_data
from support.predictor_parity import assert_plain_matches_predictor

from slidesam.lab.evaluation.datasets import PatchFolder
from slidesam.lab.evaluation.runner import EngineBackend, GrpcBackend, evaluate_sample
from slidesam.lab.training.loop import TrainConfig
from slidesam.lab.training.run import train
from slidesam.server.engine.cache import EmbeddingCache
from slidesam.server.engine.embedding_store import decode_entry, encode_entry, StoreKey
from slidesam.server.engine.engine import Engine
from slidesam.server.engine.prompts import Click, PolygonRequest, RegionRequest, UploadRef
from slidesam.server.engine.session import EngineObject
from slidesam.server.engine.strategies import choose_plain
from slidesam.server.engine.window_grid import WindowIndex
from slidesam.server.errors import ModelUnavailable
from slidesam.server.models.preemption import preemption_hook
from slidesam.server.models.registry import ModelRegistry
from slidesam.server.models.served import DecodeInput
from slidesam.server.slides.regions import Rect, Resolution
from slidesam.server.slides.store import SlideStore
from slidesam.server.uploads.store import UploadStore
from tests.conftest import SAM2_MODEL, make_server

POINTS = np.array([[210.0, 150.0], [80.0, 60.0], [300.0, 210.0], [150.0, 250.0], [390.0, 40.0]])
LABELS = np.array([1, 0, 1, 0, 1])
BOX = np.array([60.0, 40.0, 330.0, 260.0])


@pytest.fixture(scope="module")
def tissue() -> np.ndarray:
    """A non-square piece of real IHC tissue: SAM 2 stretches it to its square input."""
    return np.ascontiguousarray(skimage_data.immunohistochemistry()[100:400, 40:460])


@pytest.fixture(scope="module")
def encoded(sam2_registry, tissue):
    """(our embedding, pauses during its encode, SAM2ImagePredictor with the same image set)."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    _, model = sam2_registry.get(SAM2_MODEL)
    pauses = []
    with preemption_hook(lambda: pauses.append(1)):
        embedding = model.encode(tissue)
    predictor = SAM2ImagePredictor(model.sam2)
    predictor.set_image(tissue)
    return embedding, len(pauses), predictor


def test_the_stepped_encoder_equals_the_plain_encoder_and_pauses_after_every_block(sam2_registry, encoded, tissue):
    embedding, pauses, predictor = encoded
    _, model = sam2_registry.get(SAM2_MODEL)
    plain = predictor._features  # what SAM2ImagePredictor.set_image computed through the model's own forward pass
    assert torch.equal(embedding.features, plain["image_embed"])
    assert len(embedding.high_res) == 2 and all(torch.equal(a, b) for a, b in zip(embedding.high_res, plain["high_res_feats"]))
    assert pauses == len(model.sam2.image_encoder.trunk.blocks) == 12
    assert embedding.input_size == (1024, 1024) and embedding.original_size == tissue.shape[:2]


def test_masks_equal_sam2_image_predictor_click_by_click(sam2_registry, encoded):
    embedding, _, predictor = encoded
    _, model = sam2_registry.get(SAM2_MODEL)
    steps = assert_plain_matches_predictor(model, embedding, predictor, POINTS, LABELS)
    for number, step in enumerate(steps, start=1):
        assert 0 < step.mask.sum() < step.mask.size, f"click {number}: a trivial mask proves nothing"
        assert torch.equal(step.logits[0].clamp(-32, 32), torch.as_tensor(step.predictor_logits))
    assert len({step.mask.tobytes() for step in steps}) == len(steps), "every click changes the mask"


def test_box_prompts_equal_sam2_image_predictor(sam2_registry, encoded):
    embedding, _, predictor = encoded
    _, model = sam2_registry.get(SAM2_MODEL)
    masks, _, low_res = predictor.predict(box=BOX, multimask_output=False)
    candidates = model.candidates(embedding, None, None, BOX, None)
    assert np.array_equal(model.upscale(embedding, candidates.logits[0]).full(), masks[0])
    masks, _, _ = predictor.predict(POINTS[:2], LABELS[:2], box=BOX, mask_input=low_res, multimask_output=False)
    candidates = model.candidates(embedding, POINTS[:2], LABELS[:2], BOX, candidates.logits[0][None, None])
    assert np.array_equal(model.upscale(embedding, candidates.logits[0]).full(), masks[0])


def test_batched_decoder_passes_agree_with_single_ones(sam2_registry, encoded, monkeypatch):
    embedding, _, _ = encoded
    _, model = sam2_registry.get(SAM2_MODEL)
    half = embedding.with_dtype(torch.float16)  # as --cache-dtype float16 keeps it
    assert half.nbytes * 2 == embedding.nbytes and all(t.dtype == torch.float16 for t in half.high_res)
    previous = model.candidates(embedding, POINTS[:1], LABELS[:1], None, None).logits[0][None, None]
    inputs = [
        DecodeInput(embedding, POINTS[:1], LABELS[:1], None, None),           # 2 prompt tokens (one point + padding)
        DecodeInput(embedding, POINTS[1:3], LABELS[1:3], None, previous),     # 3 tokens from here on: one batch
        DecodeInput(half, POINTS[3:5], LABELS[3:5], None, None),
        DecodeInput(embedding, POINTS[:2], LABELS[:2], None, previous),
        DecodeInput(embedding, None, None, BOX, None),                        # two corners + padding
    ]
    decoder = model.sam2.sam_mask_decoder
    batches = []
    decode = decoder.predict_masks
    monkeypatch.setattr(decoder, "predict_masks", lambda **kwargs: batches.append(kwargs["sparse_prompt_embeddings"].shape[0]) or decode(**kwargs))
    batched = model.candidates_many(inputs)
    monkeypatch.undo()
    assert sorted(batches) == [1, 4]
    for item, together in zip(inputs, batched):
        alone = model.candidates(item.embedding, item.points, item.labels, item.box, item.previous_logits)
        torch.testing.assert_close(together.logits, alone.logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(together.scores, alone.scores, atol=1e-5, rtol=0)


def test_the_disk_store_keeps_the_high_res_features_exactly(encoded):
    embedding, _, _ = encoded
    key = StoreKey(f"{SAM2_MODEL}@abc", "ab" * 32, "sha256:x", "ds1-w1024-o256", WindowIndex(0, 0), (0.0, 0.0, 420.0, 300.0), 1.0)
    restored = decode_entry(encode_entry(key, embedding), key)
    assert len(restored.tensors) == 3 and all(torch.equal(a, b) for a, b in zip(restored.tensors, embedding.tensors))
    assert (restored.input_size, restored.original_size) == (embedding.input_size, embedding.original_size)


def _open(engine: Engine, upload_sha256: str, shape: tuple[int, int]) -> tuple[EngineObject, bool]:
    fov = RegionRequest(UploadRef(upload_sha256, 0.0, 0.0), Rect(0.0, 0.0, shape[1], shape[0]), Resolution("downsample", 1.0))
    session, outcome = EngineObject.open(engine, fov, SAM2_MODEL, PolygonRequest())
    return session, outcome.timings.cache_hit


def test_a_cache_hit_reuses_the_high_res_features_and_gives_identical_masks(sam2_registry, encoded, tissue, tmp_path):
    from slidesam.lab.evaluation.runner import encode_png

    embedding, _, _ = encoded
    engine = Engine(sam2_registry, SlideStore(tmp_path), UploadStore(), EmbeddingCache(64 * 2**20))
    upload = engine.uploads.put(encode_png(tissue), None)
    first, hit = _open(engine, upload.sha256, tissue.shape[:2])
    assert not hit and engine.cache.stats().bytes == embedding.nbytes == 16 * 2**20  # 4 MiB image features + 12 MiB finer maps
    again, hit = _open(engine, upload.sha256, tissue.shape[:2])
    assert hit
    clicks = [Click(float(x) + 0.5, float(y) + 0.5, bool(positive)) for (x, y), positive in zip(POINTS[:3], LABELS[:3])]
    previous = None
    for click in clicks:
        steps = [first.add_clicks([click]).step, again.add_clicks([click]).step]
        expected = first.view.model.candidates(embedding, *_sam_prompts(first, clicks[: clicks.index(click) + 1]), previous)
        index = choose_plain(expected, LABELS[: clicks.index(click) + 1], 1, previous, previous is None)
        previous = expected.logits[index][None, None]
        assert all(torch.equal(step.prediction.logits, previous) for step in steps)
        assert steps[0].prediction.geometry.equals(steps[1].prediction.geometry) and steps[0].prediction.geometry.area > 0


def _sam_prompts(session: EngineObject, clicks: list[Click]) -> tuple[np.ndarray, np.ndarray, None]:
    points = session.view.to_sam_coordinates(np.array([(c.x, c.y) for c in clicks]))
    return points, np.array([1 if c.positive else 0 for c in clicks]), None


def _patch_folder(folder: Path, images: dict[str, np.ndarray]) -> Path:
    from slidesam.lab.evaluation.ground_truth import stain_mask

    for name, image in images.items():
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"{name}_mask.png"), stain_mask(image, "dab").astype(np.uint8) * 255)
    return folder


@pytest.fixture(scope="module")
def one_patch(tmp_path_factory, tissue) -> Path:
    return _patch_folder(tmp_path_factory.mktemp("sam2-patch"), {"ihc": tissue})


@pytest.fixture(scope="module")
def two_patches(tmp_path_factory, tissue) -> Path:
    return _patch_folder(tmp_path_factory.mktemp("sam2-patches"), {"ihc": tissue, "ihc-flipped": np.ascontiguousarray(tissue[:, ::-1])})


def test_the_server_answers_clicks_with_sam2_over_grpc_as_in_process(sam2_registry, slide_root, one_patch, capsys):
    from slidesam.qupath_bridge import cli as bridge_cli
    from slidesam.qupath_bridge.client import SlidesamClient

    server = make_server(sam2_registry, slide_root)
    try:
        sample = next(iter(PatchFolder(one_patch)))
        local = evaluate_sample(EngineBackend.create(sam2_registry, SAM2_MODEL, "plain"), sample, max_clicks=3)
        remote = evaluate_sample(GrpcBackend(server.address, SAM2_MODEL, "plain"), sample, max_clicks=3)
        assert local["ious"] == remote["ious"] and local["clicks"] == remote["clicks"] and len(remote["ious"]) == 3
        assert remote["click_cache_hits"] == [True] * 3 and min(remote["ious"]) > 0
        with SlidesamClient(server.address) as client:
            models = {m.name: m for m in client.list_models()}
        listed = models[SAM2_MODEL]
        assert listed.architecture == "sam2.1_hiera_t" and listed.loaded and listed.available and listed.input_size == 1024
        assert {"sam2_hiera_tiny", "sam2_hiera_large", "sam2.1_hiera_small", "sam2.1_hiera_base_plus"} <= set(models)
        assert not models["sam2_hiera_large"].available
        bridge_cli.main(["--server", server.address, "models"])
        assert any(line.split()[:2] == [SAM2_MODEL, "sam2.1_hiera_t"] and "loaded" in line for line in capsys.readouterr().out.splitlines())
    finally:
        server.stop()


def test_eval_command_runs_on_a_sam2_checkpoint(sam2_checkpoint, one_patch, tmp_path, capsys):
    from slidesam.server.cli import main

    path, sha256 = sam2_checkpoint
    main(["eval", "--data", str(one_patch), "--out", str(tmp_path / "out"), "--max-clicks", "2", "--device", "cpu",
          "--model", SAM2_MODEL, "--model-dir", str(tmp_path / "models"), "--checkpoint", f"{SAM2_MODEL}={path}", "--sha256", f"{SAM2_MODEL}={sha256}"])
    assert f"{SAM2_MODEL} (plain)" in capsys.readouterr().out
    assert (tmp_path / "out" / "results.json").is_file()


def test_md_training_trains_only_the_sam2_mask_decoder_and_serves_the_result(sam2_registry, sam2_checkpoint, two_patches, tmp_path):
    before = torch.load(sam2_checkpoint[0], weights_only=True)["model"]
    config = TrainConfig("md", epochs=1, batch_size=1, rounds=2, augmentations_per_patch=1, learning_rate=1e-3)
    path = train(sam2_registry, SAM2_MODEL, PatchFolder(two_patches), config, tmp_path / "run", name="sam2-md")
    trained = torch.load(path, weights_only=True)["model"]
    changed = {key.split(".")[0] for key, value in trained.items() if not torch.equal(value, before[key])}
    assert changed == {"sam_mask_decoder"}
    registry = ModelRegistry.create(tmp_path / "run", "cpu")
    spec, model = registry.get("sam2-md")
    assert spec.architecture == "sam2.1_hiera_t" and type(model).__name__ == "Sam2Model"
    with pytest.raises(ValueError, match="enhanced decoder"):
        train(sam2_registry, SAM2_MODEL, PatchFolder(two_patches), replace(config, scenario="enhanced"), tmp_path / "enhanced")


def test_a_missing_sam2_package_names_the_extra_to_install(sam2_registry, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)  # as if the sam2 extra were not installed
    with pytest.raises(ModelUnavailable, match=r"pip install 'slidesam\[sam2\]'"):
        sam2_registry.spec("sam2_hiera_small").build()


def test_a_missing_sam2_checkpoint_names_the_file_and_the_official_weights(tmp_path):
    registry = ModelRegistry.create(tmp_path, "cpu")
    registry.configure_checkpoint("sam2_hiera_large", str(tmp_path / "sam2_hiera_large.pt"), "0" * 64)
    with pytest.raises(ModelUnavailable) as error:
        registry.get("sam2_hiera_large")
    message = str(error.value)
    assert str(tmp_path / "sam2_hiera_large.pt") in message and "segment_anything_2/072824/sam2_hiera_large.pt" in message


def test_a_sam2_object_larger_than_its_window_is_segmented_over_windows_and_reports_its_resolution(sam2_registry, tissue, tmp_path):
    """SAM 2 stretches a region to its square input: a wide field of view in one window is reported at the
    coarser axis's resolution (never finer than the model saw), and multi-window gives the one asked for."""
    from slidesam.lab.evaluation.runner import encode_png

    wide = np.ascontiguousarray(cv2.resize(tissue, (1500, 700), interpolation=cv2.INTER_LINEAR))
    engine = Engine(sam2_registry, SlideStore(tmp_path), UploadStore(), EmbeddingCache(256 * 2**20))
    upload = engine.uploads.put(encode_png(wide), None)
    fov = RegionRequest(UploadRef(upload.sha256, 0.0, 0.0), Rect(0.0, 0.0, 1500.0, 700.0), Resolution("downsample", 1.0))
    click = Click(750.5, 350.5, True)
    single, _ = EngineObject.open(engine, replace(fov, windows="single"), SAM2_MODEL, PolygonRequest())
    coarse = single.add_clicks([click])
    assert coarse.resolution.encoder_downsample == pytest.approx(1500 / 1024) and coarse.resolution.downsampled
    tiled, _ = EngineObject.open(engine, fov, SAM2_MODEL, PolygonRequest())
    fine = tiled.add_clicks([click])
    assert fine.resolution.windows >= 3 and fine.resolution.encoder_downsample == 1.0 and not fine.resolution.downsampled
    assert fine.timings.windows_encoded >= 2 and not fine.step.prediction.geometry.is_empty
    assert fine.step.prediction.geometry.bounds[2] <= 1500 and fine.step.prediction.geometry.bounds[3] <= 700
