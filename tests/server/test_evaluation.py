"""The evaluation: the RITM click simulator, NoC, datasets in three formats, and runs through the real path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage
from skimage import data as skimage_data

from slidesam.lab.evaluation.clicker import Clicker
from slidesam.lab.evaluation.datasets import PatchFolder, WsiDataset, WsiSampling
from slidesam.lab.evaluation.evaluate import run_evaluation
from slidesam.lab.evaluation.metrics import iou_drops, number_of_clicks, summarise
from slidesam.lab.evaluation.runner import EngineBackend, GrpcBackend, evaluate_sample
from slidesam.server.engine.geometry import RegionTransform, geometry_to_mask
from slidesam.lab.synthetic.wsi_datasets import exclusion_of, write_camelyon_dataset, write_paip_dataset

# --------------------------------------------------------------------------------------- simulator


def rectangle(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def test_first_click_is_the_objects_point_farthest_from_its_boundary():
    gt = np.zeros((80, 90), bool)
    gt[10:60, 15:45] = True
    gt[30:50, 45:80] = True  # an L shape: the farthest point is in the wide part
    click = Clicker(gt).next_click(np.zeros_like(gt))
    distance = ndimage.distance_transform_edt(np.pad(gt, 1))[1:-1, 1:-1]
    assert click.positive and distance[click.row, click.col] == distance.max()
    first_best = np.argwhere(distance == distance.max())[0]
    assert (click.row, click.col) == tuple(first_best), "ties between equal distances go to the first pixel, row-major"


def test_the_image_border_counts_as_boundary():
    gt = rectangle((40, 64), (0, 20), (0, 64))  # touches the top, left and right borders
    click = Clicker(gt).next_click(np.zeros_like(gt))
    assert click.row in (9, 10), f"without the border as boundary the click would hug row 0, got row {click.row}"


def test_ties_between_false_negatives_and_false_positives_go_negative():
    gt = rectangle((40, 80), (10, 30), (5, 35))
    prediction = rectangle((40, 80), (10, 30), (45, 75))  # FP region the same shape as the FN region
    click = Clicker(gt).next_click(prediction)
    assert not click.positive and 45 <= click.col < 75


def test_no_pixel_is_clicked_twice():
    gt = rectangle((30, 30), (5, 25), (5, 25))
    clicker = Clicker(gt)
    clicks = [clicker.next_click(np.zeros_like(gt)) for _ in range(50)]
    assert len({(c.row, c.col) for c in clicks}) == 50 and all(c.positive for c in clicks)


def test_no_click_when_the_prediction_is_perfect():
    gt = rectangle((30, 30), (5, 25), (5, 25))
    assert Clicker(gt).next_click(gt.copy()) is None


def test_noc_is_the_maximum_when_the_threshold_is_never_reached():
    never = [0.5, 0.6, 0.79] + [0.7] * 17
    assert number_of_clicks(never, 0.80, 20) == 20
    assert number_of_clicks([0.5, 0.81, 0.9], 0.80, 20) == 2 and number_of_clicks([0.5, 0.81, 0.9], 0.9, 20) == 3
    summary = summarise([never, [0.9] * 20], 20)
    assert summary["noc@80"] == pytest.approx((20 + 1) / 2) and summary["over_max@80"] == 1 and summary["over_max@90"] == 1
    assert iou_drops([0.5, 0.6, 0.4, 0.7, 0.7]) == 1 and summary["iou_drops"] == 1  # 0.79 -> 0.7


# --------------------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def ihc_patches(tmp_path_factory) -> Path:
    """scikit-image's real IHC image with DAB-derived objects (ground_truth.object_masks)."""
    from slidesam.lab.evaluation.ground_truth import object_masks

    folder = tmp_path_factory.mktemp("ihc")
    rgb = skimage_data.immunohistochemistry()
    for index, mask in enumerate(object_masks(rgb, "dab", max_objects=2), start=1):
        cv2.imwrite(str(folder / f"ihc-{index}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"ihc-{index}_mask.png"), mask.astype(np.uint8) * 255)
    return folder


def test_patch_folder_reads_pairs_and_refuses_missing_masks(ihc_patches, tmp_path):
    samples = list(PatchFolder(ihc_patches))
    assert [s.name for s in samples] == ["ihc-1", "ihc-2"]
    assert samples[0].image.shape == (512, 512, 3) and samples[0].gt.dtype == bool and 0.01 < samples[0].gt.mean() < 0.6
    cv2.imwrite(str(tmp_path / "lonely.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="lonely"):
        PatchFolder(tmp_path)


@pytest.fixture(scope="module")
def paip(tmp_path_factory):
    directory = tmp_path_factory.mktemp("paip")
    return directory, write_paip_dataset(directory)


@pytest.fixture(scope="module")
def camelyon(tmp_path_factory):
    directory = tmp_path_factory.mktemp("camelyon")
    return directory, write_camelyon_dataset(directory)


def _known_mask(sample, geometry) -> np.ndarray:
    transform = RegionTransform(*sample.origin, sample.downsample, sample.downsample)
    return geometry_to_mask(geometry, transform, sample.gt.shape)


def test_paip_style_patches_around_tumour_match_the_known_mask(paip):
    directory, slides = paip
    dataset = WsiDataset("paip", directory, WsiSampling(magnification=10, patch_size=512, patches_per_slide=2))
    samples = list(dataset)
    assert samples and {s.name.split("_x")[0] for s in samples} == {"case_00", "case_01"}
    for sample in samples:
        slide = slides[int(sample.name.split("_")[1])]
        assert sample.image.shape == (512, 512, 3) and sample.downsample == pytest.approx(4.0) and sample.mpp == 0.25
        known = _known_mask(sample, slide.object_geometry)
        assert (known & sample.gt).sum() / (known | sample.gt).sum() > 0.97
        assert 0.05 <= sample.gt.mean() <= 0.95


def test_wsi_sampling_is_seeded(paip):
    directory, _ = paip
    names = lambda seed: WsiDataset("paip", directory, WsiSampling(10, 256, 3, seed)).names()  # noqa: E731
    assert names(0) == names(0) and names(0) != names(5)


def test_camelyon_style_exclusions_are_cut_out_of_the_tumour(camelyon):
    directory, slides = camelyon
    dataset = WsiDataset("camelyon", directory, WsiSampling(magnification=10, patch_size=512, patches_per_slide=1))
    for sample in dataset:
        slide = slides[int(sample.name.split("_")[1])]
        expected = _known_mask(sample, slide.object_geometry.difference(exclusion_of(slide)))
        assert (expected == sample.gt).mean() > 0.999
        hole = _known_mask(sample, exclusion_of(slide).buffer(-10))
        assert hole.any() and not (sample.gt & hole).any()


# --------------------------------------------------------------------------------------- runs


def test_in_process_and_grpc_runs_give_identical_iou_sequences(model_registry, server, ihc_patches):
    in_process = EngineBackend.create(model_registry, "mobile_sam", "plain")
    over_grpc = GrpcBackend(server.address, "mobile_sam", "plain")
    for sample in PatchFolder(ihc_patches):
        local = evaluate_sample(in_process, sample, max_clicks=4)
        remote = evaluate_sample(over_grpc, sample, max_clicks=4)
        assert local["ious"] == remote["ious"] and local["clicks"] == remote["clicks"]
        assert local["ious"][-1] > 0.5, local["ious"]


def test_twenty_clicks_on_a_1024_patch_run_the_encoder_once(model_registry, paip):
    directory, _ = paip
    sample = next(iter(WsiDataset("paip", directory, WsiSampling(magnification=20, patch_size=1024, patches_per_slide=1))))
    assert sample.image.shape == (1024, 1024, 3)
    record = evaluate_sample(EngineBackend.create(model_registry, "mobile_sam", "plain"), sample, max_clicks=20)
    assert not record["open"]["cache_hit"] and record["open"]["encode_ms"] > 0
    assert len(record["ious"]) >= 2 and all(record["click_cache_hits"]), "every click must reuse the one embedding"
    assert max(record["ious"]) > 0.85, record["ious"]


def test_killed_run_resumes_and_reports(model_registry, ihc_patches, tmp_path):
    backend = EngineBackend.create(model_registry, "mobile_sam", "consistent")
    config = {"model": "mobile_sam", "model_id": "mobile_sam@x", "strategy": "consistent", "dataset": "ihc", "max_clicks": 3}
    first = next(iter(PatchFolder(ihc_patches)))
    done = evaluate_sample(backend, first, 3)
    done["marker"] = "from the killed run"
    partial = tmp_path / "results.partial.jsonl"
    from slidesam.lab.evaluation.runner import PartialResults

    PartialResults(partial, config).add(done)
    with partial.open("a") as out:
        out.write('{"config": "cut sho')  # the line a kill left half written
    results = run_evaluation(PatchFolder(ihc_patches), backend, tmp_path, config, save_masks=True)
    assert [s["name"] for s in results["samples"]] == ["ihc-1", "ihc-2"]
    assert results["samples"][0]["marker"] == "from the killed run" and "marker" not in results["samples"][1]
    assert not partial.exists() and json.loads((tmp_path / "results.json").read_text())["summary"]["samples"] == 2
    assert (tmp_path / "results.md").read_text().count("| mobile_sam (consistent)") == 2  # one row in each table
    assert (tmp_path / "iou_vs_clicks.png").stat().st_size > 1000 and (tmp_path / "noc.png").is_file()
    saved = sorted((tmp_path / "masks" / "ihc-2").glob("click_*.png"))
    assert len(saved) == len(results["samples"][1]["ious"])


def test_eval_command_and_compare(model_registry, ihc_patches, tmp_path, capsys):
    """`slidesam-server eval` in this process (the console script itself runs in tests/test_cli.py and
    test_evaluation_large.py): torch is imported once, not once per command."""
    from slidesam.server.cli import main

    env_model_dir = str(model_registry.model_dir)
    outs = []
    for strategy in ("plain", "consistent"):
        out = tmp_path / strategy
        capsys.readouterr()
        main(["eval", "--data", str(ihc_patches), "--out", str(out), "--max-clicks", "2",
              "--strategy", strategy, "--device", "cpu", "--model-dir", env_model_dir])
        printed = capsys.readouterr().out
        assert "NoC@85" in printed and f"mobile_sam ({strategy})" in printed, printed
        assert json.loads((out / "results.json").read_text())["summary"]["samples"] == 2
        outs.append(out / "results.json")
    main(["eval", "--compare", *map(str, outs), "--out", str(tmp_path / "cmp")])
    assert "wrote " in capsys.readouterr().out
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert "mobile_sam (plain)" in table and "mobile_sam (consistent)" in table
