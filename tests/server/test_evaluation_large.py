"""Evaluation on objects larger than one encoder window: NoC@95, IoU at k clicks, the boundary F-score,
the large-object dataset built from the whole CMU-1-Small-Region slide, and runs in both window modes."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slidesam.lab.evaluation.datasets import PatchFolder
from slidesam.lab.evaluation.metrics import boundary, boundary_f_score, boundary_summary, summarise
from slidesam.lab.evaluation.report import seconds_per_click
from slidesam.lab.evaluation.runner import EngineBackend, GrpcBackend, evaluate_sample

# --------------------------------------------------------------------------------------- boundary F


def disc(shape, centre, radius) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def shifted_disc_f(radius: float, shift: float, tolerance: float) -> float:
    """Boundary F of a disc against the same disc shifted along x, from the geometry alone.

    A point at angle t on the shifted circle lies |sqrt(R² + 2Rs cos t + s²) - R| from the other circle
    (and symmetrically), so P = R = F = the share of the circle where that is <= tolerance. A digital
    (8-connected) boundary has max(|cos t|, |sin t|) pixels per unit of length, which weights the share.
    """
    angles = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    distance = np.abs(np.sqrt(radius**2 + 2 * radius * shift * np.cos(angles) + shift**2) - radius)
    pixels_per_length = np.maximum(np.abs(np.cos(angles)), np.abs(np.sin(angles)))
    return float((pixels_per_length * (distance <= tolerance)).sum() / pixels_per_length.sum())


@pytest.mark.parametrize("shift, tolerance", [(6, 4), (10, 4), (12, 8), (30, 10)])
def test_boundary_f_of_a_disc_against_a_shifted_disc_matches_the_geometry(shift, tolerance):
    gt = disc((400, 400), (200, 200), 100)
    prediction = disc((400, 400), (200, 200 + shift), 100)
    score = boundary_f_score(prediction, gt, tolerance)
    expected = shifted_disc_f(100, shift, tolerance)
    assert 0.1 < expected < 0.9
    assert score.precision == pytest.approx(score.recall, abs=0.01)
    assert score.f == pytest.approx(expected, abs=0.03), (score, expected)


def test_boundary_f_is_one_within_tolerance_and_zero_far_outside_it():
    gt = disc((400, 400), (200, 200), 100)
    assert boundary_f_score(disc((400, 400), (200, 203), 100), gt, tolerance_px=4.0).f == 1.0
    assert boundary_f_score(gt, gt, tolerance_px=0.0).f == 1.0
    far = disc((400, 400), (200, 200), 60)  # concentric, 40 px inside: no boundary pixel within 4 px
    assert boundary_f_score(far, gt, tolerance_px=4.0).f == 0.0
    assert boundary_f_score(far, gt, tolerance_px=41.0).f == 1.0


def test_boundary_precision_and_recall_differ_when_the_prediction_adds_an_outline():
    gt = disc((400, 400), (200, 150), 100)
    extra = disc((400, 400), (200, 330), 20)  # a false part far from the object: its outline is all wrong
    score = boundary_f_score(gt | extra, gt, tolerance_px=3.0)
    assert score.recall == 1.0
    assert score.precision == pytest.approx(boundary(gt).sum() / (boundary(gt).sum() + boundary(extra).sum()), abs=1e-9)
    assert score.precision == pytest.approx(100 / 120, abs=0.02)  # perimeters 2π·100 and 2π·20


def test_empty_masks_and_the_image_edge():
    gt = disc((100, 100), (50, 50), 30)
    empty = np.zeros_like(gt)
    assert boundary_f_score(empty, gt, 2.0).as_dict() == {"precision": 1.0, "recall": 0.0, "f": 0.0}
    assert boundary_f_score(gt, empty, 2.0).as_dict() == {"precision": 0.0, "recall": 1.0, "f": 0.0}
    assert boundary_f_score(empty, empty, 2.0).f == 1.0
    left_half = np.zeros((100, 100), bool)
    left_half[:, :50] = True  # touches three image edges: only the cut at column 49 is its boundary
    assert np.array_equal(np.argwhere(boundary(left_half))[:, 1], np.full(100, 49))


def test_boundary_f_refuses_mismatched_shapes_and_bad_tolerances():
    with pytest.raises(ValueError, match="shape"):
        boundary_f_score(np.zeros((4, 4), bool), np.zeros((4, 5), bool), 1.0)
    for tolerance in (-1.0, math.nan):
        with pytest.raises(ValueError, match="tolerance"):
            boundary_f_score(np.zeros((4, 4), bool), np.zeros((4, 4), bool), tolerance)


# --------------------------------------------------------------------------------------- NoC and IoU at k


def test_noc_at_95_and_the_samples_that_never_reach_it():
    reaches_95_at_4 = [0.5, 0.8, 0.9, 0.95] + [0.96] * 16
    plateaus_at_94 = [0.6, 0.85, 0.91] + [0.94] * 17   # a single-window plateau: never 0.95
    summary = summarise([reaches_95_at_4, plateaus_at_94], 20)
    assert summary["noc@95"] == pytest.approx((4 + 20) / 2)
    assert summary["over_max@95"] == 1 and summary["over_max@90"] == 0
    assert summary["noc@90"] == pytest.approx((3 + 3) / 2) and summary["noc@80"] == pytest.approx((2 + 2) / 2)


def test_iou_at_k_is_the_iou_after_that_click_not_the_best_so_far():
    falls = [0.9, 0.2, 0.3, 0.3, 0.4] + [0.5] * 15     # the best IoU came first: it must not hide the fall
    steady = [0.5, 0.6, 0.7, 0.8, 0.9] + [0.95] * 15
    summary = summarise([falls, steady], 20)
    assert summary["iou@1"] == pytest.approx((0.9 + 0.5) / 2)
    assert summary["iou@3"] == pytest.approx((0.3 + 0.7) / 2)
    assert summary["iou@5"] == pytest.approx((0.4 + 0.9) / 2)
    assert summary["iou@10"] == pytest.approx((0.5 + 0.95) / 2) and summary["iou@20"] == pytest.approx((0.5 + 0.95) / 2)


def test_iou_at_k_keeps_a_finished_mask_but_invents_no_clicks():
    perfect_at_2 = [0.7, 1.0]           # the clicker had no error left to click: the mask is final
    summary = summarise([perfect_at_2, [0.5, 0.6, 0.7, 0.8, 0.9]], 5, finished=[True, False])
    assert summary["iou@5"] == pytest.approx((1.0 + 0.9) / 2)
    short = summarise([[0.5, 0.6]], 2)
    assert "iou@5" not in short and "iou@3" not in short and short["iou@1"] == 0.5


def test_boundary_summary_and_seconds_per_click_with_a_precomputed_store():
    def record(sha, open_encode, click_ms, click_encode, from_store, f_final):
        return {"image_sha256": sha, "open": {"encode_ms": open_encode, "windows_encoded": 1, "windows_from_store": from_store},
                "click_ms": click_ms, "decode_ms": [60.0] * len(click_ms), "click_encode_ms": click_encode,
                "click_windows_encoded": [1 if ms else 0 for ms in click_encode], "click_windows_from_store": [0] * len(click_ms),
                "boundary": {"5": {"f": f_final / 2, "precision": 0.5, "recall": 0.5}, "final": {"f": f_final, "precision": 1.0, "recall": 1.0}}}

    stored = record("a", 0.0, [100.0, 100.0], [0.0, 0.0], 3, 0.8)
    encoded = record("b", 1000.0, [1600.0, 200.0], [1500.0, 0.0], 0, 0.6)
    unscored = {**record("c", 0.0, [100.0], [0.0], 0, 0.0), "boundary": None}
    timing = seconds_per_click([stored, encoded, unscored])
    assert timing["spc_s"] == pytest.approx((100 + 100 + 100 + 200 + 100) / 5 / 1e3), "click-time encodes are not decode time"
    assert timing["spc_with_encoder_s"] == pytest.approx((2100 + 1000) / 5 / 1e3)
    assert timing["spc_with_encoder_store_s"] == pytest.approx(200 / 2 / 1e3)
    assert timing["spc_with_encoder_no_store_s"] == pytest.approx((1800 + 1000 + 100) / 3 / 1e3)
    assert timing["samples_with_store"] == 1 and timing["windows_from_store"] == 3 and timing["windows_encoded"] == 4
    summary = boundary_summary([stored, encoded, unscored])
    assert summary["boundary_samples"] == 2 and summary["bf@final"] == pytest.approx(0.7) and summary["bf@5"] == pytest.approx(0.35)


# --------------------------------------------------------------------------------------- the large-object set


@pytest.fixture(scope="module")
def large_set(tmp_path_factory) -> Path:
    from slidesam.lab.evaluation.large_patches import build_large_patches
    from slidesam.server.models.checkpoints import default_model_dir

    out = tmp_path_factory.mktemp("large")
    build_large_patches(out, default_model_dir().parent / "samples")
    return out


def test_the_large_set_holds_real_objects_larger_than_one_window(large_set):
    samples = list(PatchFolder(large_set))
    assert 6 <= len(samples) <= 10, [s.name for s in samples]
    assert {s.name.split("-")[1] for s in samples} == {"x20", "x10"}
    assert {"cmu-x20-tissue", "cmu-x10-tissue"} <= {s.name for s in samples}
    for sample in samples:
        meta = json.loads((large_set / f"{sample.name}.json").read_text())
        height, width = sample.gt.shape
        assert max(height, width) > 1024, f"{sample.name} fits one encoder window"
        assert sample.image.shape == (height, width, 3) and [width, height] == meta["size"]
        assert sample.downsample == {"x20": 1.0, "x10": 2.0}[sample.name.split("-")[1]]
        assert sample.mpp == pytest.approx(0.499) and meta["um_per_px"] == pytest.approx(0.499 * sample.downsample)
        assert sample.slide == "CMU-1-Small-Region.svs" and (large_set / sample.slide).is_file()
        assert 0.05 < sample.gt.mean() < 0.6 and sample.gt.mean() == pytest.approx(meta["object_fraction"])
        x, y = sample.origin
        assert 0 <= x and 0 <= y and x + width * sample.downsample <= 2220 and y + height * sample.downsample <= 2967
    x20 = next(s for s in samples if s.name == "cmu-x20-tissue")
    assert x20.gt.shape == (2967, 2220), "the whole section at x20 spans the whole slide"


def test_large_patches_are_the_slides_own_pixels(large_set):
    """A patch is the slide read at its placement: what the server reads when the patch is opened on the slide."""
    import openslide

    sample = next(s for s in PatchFolder(large_set) if s.name.startswith("cmu-x20-hematoxylin"))
    with openslide.OpenSlide(str(large_set / sample.slide)) as slide:
        height, width = sample.gt.shape
        read = np.asarray(slide.read_region(tuple(int(v) for v in sample.origin), 0, (width, height)).convert("RGB"))
    assert np.array_equal(read, sample.image)


def test_a_bad_placement_file_is_refused(large_set, tmp_path):
    for suffix in (".png", "_mask.png"):
        shutil.copy(large_set / f"cmu-x10-tissue{suffix}", tmp_path / f"cmu-x10-tissue{suffix}")
    (tmp_path / "cmu-x10-tissue.json").write_text('{"origin": [0, 0], "downsample": -2}')
    with pytest.raises(ValueError, match="cmu-x10-tissue.json"):
        list(PatchFolder(tmp_path))


# --------------------------------------------------------------------------------------- runs in both modes


SMALLEST = "cmu-x10-hematoxylin-1"


@pytest.fixture(scope="module")
def one_large_sample(large_set, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("one-large")
    for suffix in (".png", "_mask.png", ".json"):
        shutil.copy(large_set / f"{SMALLEST}{suffix}", folder / f"{SMALLEST}{suffix}")
    return folder


def test_eval_of_a_large_sample_in_both_window_modes_and_compare(model_registry, one_large_sample, tmp_path):
    command = [str(Path(sys.executable).parent / "slidesam-server"), "eval"]
    common = ["--data", str(one_large_sample), "--max-clicks", "2", "--device", "cpu", "--model-dir", str(model_registry.model_dir)]
    outs = {}
    for mode, flags in (("auto", []), ("single", ["--single-window"])):
        outs[mode] = tmp_path / mode
        completed = subprocess.run([*command, *common, *flags, "--out", str(outs[mode])], capture_output=True, text=True, timeout=600)
        assert completed.returncode == 0, completed.stderr[-3000:]
        assert "NoC@95" in completed.stdout and "BF@final" in completed.stdout
    results = {mode: json.loads((out / "results.json").read_text()) for mode, out in outs.items()}
    for mode, result in results.items():
        assert result["config"]["windows"] == mode and result["config"]["boundary_um"] == 2.0
        summary, sample = result["summary"], result["samples"][0]
        for key in ("noc@80", "noc@85", "noc@90", "noc@95", "over_max@95", "iou@1", "bf@final", "spc_s", "spc_with_encoder_s"):
            assert summary[key] is not None, key
        assert "iou@3" not in summary and summary["bf@5"] is None, "2 clicks give no IoU@3 and no BF@5"
        assert sample["shape"][0] > 1024 and len(sample["ious"]) == 2
        assert sample["boundary_tolerance_px"] == pytest.approx(2.0 / 0.998)
        assert 0.0 <= sample["boundary"]["final"]["f"] <= 1.0
    single, multi = results["single"]["samples"][0], results["auto"]["samples"][0]
    # the baseline: one window over the whole patch, coarser than asked for, and the result says so
    assert single["resolution"]["windows"] == 1 and single["resolution"]["downsampled"]
    assert single["resolution"]["encoder_downsample"] == pytest.approx(single["shape"][0] * 2.0 / 1024, rel=0.01)
    # the default for a patch larger than a window: coarse to fine, at the resolution asked for
    assert multi["resolution"]["windows"] > 1 and not multi["resolution"]["downsampled"]
    assert multi["resolution"]["encoder_downsample"] == pytest.approx(2.0)
    assert results["auto"]["summary"]["samples_downsampled"] == 0 and results["single"]["summary"]["samples_downsampled"] == 1

    compared = subprocess.run([*command, "--compare", str(outs["auto"] / "results.json"), str(outs["single"] / "results.json"),
                               "--out", str(tmp_path / "cmp")], capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr[-2000:]
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert "mobile_sam (plain) auto windows" in table and "mobile_sam (plain) single window" in table
    assert "NoC@95" in table and "IoU@1" in table and "BF@final (2 µm)" in table
    assert "Paired, per sample: A = mobile_sam (plain) auto windows, B = mobile_sam (plain) single window (1 shared samples)" in table
    assert all((tmp_path / "cmp" / name).stat().st_size > 1000 for name in ("iou_vs_clicks.png", "noc.png", "quality.png"))


def test_the_window_mode_travels_over_grpc(model_registry, server, one_large_sample):
    sample = next(iter(PatchFolder(one_large_sample)))
    single = evaluate_sample(GrpcBackend(server.address, "mobile_sam", "plain", windows="single"), sample, max_clicks=1)
    local = evaluate_sample(EngineBackend.create(model_registry, "mobile_sam", "plain", windows="single"), sample, max_clicks=1)
    assert single["resolution"]["windows"] == 1 and single["resolution"]["downsampled"]
    assert single["ious"] == local["ious"], "the gRPC run and the in-process run see the same pixels and the same code"
    multi = evaluate_sample(GrpcBackend(server.address, "mobile_sam", "plain"), sample, max_clicks=1)
    assert multi["resolution"]["windows"] > 1 and not multi["resolution"]["downsampled"]
    assert sum(multi["click_windows_encoded"]) + multi["open"]["windows_encoded"] > 1


def test_patches_opened_on_their_slide_give_the_same_ious_as_uploaded_ones(model_registry, large_set, one_large_sample):
    sample = next(iter(PatchFolder(one_large_sample)))
    uploaded = evaluate_sample(EngineBackend.create(model_registry, "mobile_sam", "plain", windows="single"), sample, 2)
    on_slide = evaluate_sample(
        EngineBackend.create(model_registry, "mobile_sam", "plain", windows="single", slide_root=large_set), sample, 2
    )
    assert on_slide["slide"] == "CMU-1-Small-Region.svs" and uploaded["slide"] is None
    assert on_slide["ious"] == pytest.approx(uploaded["ious"], abs=0.01)


def test_a_precomputed_slide_serves_the_fine_windows_and_the_report_says_so(model_registry, large_set, one_large_sample, tmp_path):
    from slidesam.server.engine.embedding_store import EmbeddingStore
    from slidesam.lab.evaluation.report import build_results

    store = tmp_path / "store"
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "slidesam-server"), "precompute", "CMU-1-Small-Region.svs", "--slide-root", str(large_set),
         "--magnification", "10", "--store", str(store), "--device", "cpu", "--model-dir", str(model_registry.model_dir)],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    sample = next(iter(PatchFolder(one_large_sample)))
    backend = EngineBackend.create(model_registry, "mobile_sam", "plain", slide_root=large_set, store=EmbeddingStore(store, 2**30))
    record = evaluate_sample(backend, sample, max_clicks=2)
    from_store = record["open"]["windows_from_store"] + sum(record["click_windows_from_store"])
    encoded = record["open"]["windows_encoded"] + sum(record["click_windows_encoded"])
    assert from_store >= 2 and encoded == 1, "only the coarse window is encoded; the fine windows come from the store"
    summary = build_results({"max_clicks": 2, "windows": "auto"}, [record])["summary"]
    assert summary["samples_with_store"] == 1 and summary["spc_with_encoder_store_s"] is not None
    assert summary["spc_with_encoder_no_store_s"] is None
