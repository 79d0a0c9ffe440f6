"""One table of what each model costs on one device, at each encoder precision, measured side by side.

For every model x precision it measures:
- encode ms for one 1024-px window, and windows/s at the best batch size (batched encodes);
- the click: slidesam's model-side click path (decoder, strategy, upscale and threshold on the device,
  the object's box copied off it, polygons traced) against the model family's own in-process predictor
  (SamPredictor / SAM2ImagePredictor .predict with previous logits), interleaved click by click, p50/p95;
- mask agreement with float32 on the real-tissue set (`slidesam-server eval-data tissue`): three
  simulated clicks per sample, the IoU of each reduced-precision mask with the float32 mask;
- peak memory (CUDA: allocated by torch; CPU: the process's peak RSS so far).

MobileSAM runs with its real weights. SAM ViT-B and SAM 2.1 Hiera-T run with random initialisation (no
other weights are reachable here; speed does not depend on weights, agreement on real weights does, so
theirs is marked as random). A precision NAME+compile (float32+compile) adds a row with torch.compile'd
encoder blocks (server/models/compiled.py, as `precompute --compile` uses them) and states its warm-up. Ends with one JSON line. bench_click measures the click end to end over gRPC.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import openslide
import torch
from tqdm import tqdm

from slidesam.lab.evaluation.clicker import Clicker
from slidesam.lab.evaluation.datasets import PatchFolder
from slidesam.lab.evaluation.tissue_patches import build_tissue_patches
from slidesam.server.engine.geometry import PolygonLimits, RegionTransform, mask_to_geometry
from slidesam.server.models.compiled import compile_encoder
from slidesam.server.models.registry import ModelRegistry, default_model_dir, resolve_device
from slidesam.server.models.sam import SamModel
from slidesam.server.models.sam2_build import build_sam2_network
from slidesam.server.models.sam2_model import Sam2Model
from slidesam.server.slides.samples import fetch_cmu_small_region

CLICKS = (((500.0, 480.0), 1), ((620.0, 400.0), 0), ((450.0, 560.0), 1))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(function, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return (time.perf_counter() - started) * 1e3


def networks(args: argparse.Namespace, device: torch.device) -> list[tuple[str, torch.nn.Module, bool]]:
    """(name, network, real weights?) for each model benchmarked."""
    registry = ModelRegistry.create(device=str(device))
    registry.fetch("mobile_sam")
    found = [("mobile_sam", registry.load_network(registry.spec("mobile_sam")), True)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from segment_anything import sam_model_registry
    torch.manual_seed(0)
    if "sam_vit_b" in args.models:
        found.append(("sam_vit_b", sam_model_registry["vit_b"]().to(device), False))
    if "sam2.1_hiera_tiny" in args.models:
        found.append(("sam2.1_hiera_tiny", build_sam2_network("sam2.1_hiera_t").to(device), False))
    return [item for item in found if item[0] in args.models]


def adapter(network: torch.nn.Module, device: torch.device, precision: str):
    return (Sam2Model if hasattr(network, "image_encoder") and hasattr(network, "sam_mask_decoder") else SamModel)(network, device, precision)


def predictor_for(model) -> object:
    """The family's own predictor around the same network."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(model, Sam2Model):
            from sam2.sam2_image_predictor import SAM2ImagePredictor

            return SAM2ImagePredictor(model.sam2)
        if type(model.sam).__module__.startswith("mobile_sam"):
            from mobile_sam import SamPredictor
        else:
            from segment_anything import SamPredictor
        return SamPredictor(model.sam)


def slidesam_click(model, embedding, points, labels, previous) -> tuple[torch.Tensor, float, float]:
    """What the server does for a click, without transport: the kept logits, and the ms on the model's
    thread (decoder, choice, upscale and threshold, the box copied off the device) and on the polygon pool."""
    started = time.perf_counter()
    candidates = model.candidates(embedding, points, labels, None, previous)
    index = 0 if previous is not None else 1 + int(torch.argmax(candidates.scores[1:]))
    logits = candidates.logits[index].clone()
    crop = model.upscale(embedding, logits)
    traced = time.perf_counter()
    mask_to_geometry(crop.mask, RegionTransform(0, 0, 1, 1), PolygonLimits(max_vertices=4000), crop.origin)
    return logits[None, None], (traced - started) * 1e3, (time.perf_counter() - traced) * 1e3


def click_costs(model, predictor, image: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """ms per click of slidesam's path (whole, model thread, polygons) and of the predictor, interleaved
    object by object."""
    embedding = model.encode(image)
    predictor.set_image(image)
    costs: dict[str, list[float]] = {"ours": [], "model_thread": [], "polygons": [], "predictor": []}
    for round_ in range(rounds + 1):  # round 0 warms up
        previous, their_logits, costs_now = None, None, {key: [] for key in costs}
        for count in range(1, len(CLICKS) + 1):
            points = np.array([c[0] for c in CLICKS[:count]])
            labels = np.array([c[1] for c in CLICKS[:count]])
            previous, on_model, on_pool = slidesam_click(model, embedding, points, labels, previous)
            costs_now["ours"].append(on_model + on_pool)
            costs_now["model_thread"].append(on_model)
            costs_now["polygons"].append(on_pool)
            started = time.perf_counter()
            _, scores, low_res = predictor.predict(points, labels, mask_input=their_logits, multimask_output=their_logits is None)
            synchronize(model.device)
            costs_now["predictor"].append((time.perf_counter() - started) * 1e3)
            best = int(np.argmax(scores))
            their_logits = low_res[best : best + 1]
        if round_:
            for key in costs:
                costs[key] += costs_now[key]
    return costs


def agreement(model, reference, samples: list, clicks: int = 3) -> list[float]:
    """IoU of model's mask with reference's (float32) over simulated clicks chosen from the reference's masks."""
    ious = []
    for sample in samples:
        ours, theirs = model.encode(sample.image), reference.encode(sample.image)
        clicker, points, labels = Clicker(sample.gt), [], []
        mask, our_logits, their_logits = np.zeros(sample.gt.shape, bool), None, None
        for _ in range(clicks):
            click = clicker.next_click(mask)
            if click is None:
                break
            points.append((click.col, click.row))
            labels.append(1 if click.positive else 0)
            masks = []
            for candidate, embedding, previous in ((model, ours, our_logits), (reference, theirs, their_logits)):
                decoded = candidate.candidates(embedding, np.array(points, float), np.array(labels), None, previous)
                index = 0 if previous is not None else 1 + int(torch.argmax(decoded.scores[1:]))
                logits = decoded.logits[index][None, None]
                masks.append((candidate.upscale(embedding, decoded.logits[index]).full(), logits))
            (ours_mask, our_logits), (mask, their_logits) = masks
            union = (ours_mask | mask).sum()
            ious.append(float((ours_mask & mask).sum() / union) if union else 1.0)
    return ious


def measure(name: str, model, precision: str, real: bool, args, image, samples, reference) -> dict:
    device = model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warm_up = compile_encoder(model) if precision.endswith("+compile") else None
    model.encode(image)
    encode = [timed_ms(lambda: model.encode(image), device) for _ in range(args.encode_repeats)]
    throughput = {}
    for batch in args.batch_sizes:
        model.encode_many([image] * batch)  # warm-up at this batch size (a compiled encoder recompiles for it)
        per_batch = min(timed_ms(lambda: model.encode_many([image] * batch), device) for _ in range(args.batch_repeats))
        throughput[batch] = batch / (per_batch / 1e3)
    best = max(throughput, key=throughput.get)
    clicks = click_costs(model, predictor_for(model), image, args.click_rounds)
    ours, theirs = clicks["ours"], clicks["predictor"]
    ious = agreement(model, reference, samples) if reference is not None and samples else []
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": name, "weights": "real" if real else "random", "precision": precision, "encode_ms_p50": statistics.median(encode),
        "windows_per_s": throughput, "best_batch": best, "best_windows_per_s": throughput[best],
        "click_p50_ms": statistics.median(ours), "click_p95_ms": float(np.percentile(ours, 95)),
        "predictor_p50_ms": statistics.median(theirs), "click_over_predictor": statistics.median(ours) / statistics.median(theirs),
        "model_thread_p50_ms": statistics.median(clicks["model_thread"]), "polygons_p50_ms": statistics.median(clicks["polygons"]),
        "model_thread_over_predictor": statistics.median(clicks["model_thread"]) / statistics.median(theirs),
        "iou_vs_float32_mean": float(np.mean(ious)) if ious else None, "iou_vs_float32_min": float(np.min(ious)) if ious else None,
        "peak_mib": peak, "peak_kind": "cuda allocated" if device.type == "cuda" else "process RSS", "compile_warmup_s": warm_up,
    }


def print_table(rows: list[dict], gpu: str | None) -> None:
    print(f"\ndevice: {gpu or 'cpu'} ({torch.get_num_threads()} CPU threads); 1024 x 1024 windows")
    header = (f"{'model':<20}{'precision':<18}{'encode ms':>10}{'win/s (batch)':>15}{'click p50':>10}{'p95':>8}{'model thr.':>11}"
              f"{'polygons':>9}{'predictor':>10}{'ratio':>7}{'thr. ratio':>11}{'IoU vs fp32':>13}{'peak MiB':>10}")
    print(header)
    for row in rows:
        iou = "-" if row["iou_vs_float32_mean"] is None else f"{row['iou_vs_float32_mean']:.4f}"
        print(f"{row['model']:<20}{row['precision']:<18}{row['encode_ms_p50']:>10.1f}"
              f"{row['best_windows_per_s']:>10.2f} ({row['best_batch']})".ljust(15) +
              f"{row['click_p50_ms']:>10.1f}{row['click_p95_ms']:>8.1f}{row['model_thread_p50_ms']:>11.1f}{row['polygons_p50_ms']:>9.1f}"
              f"{row['predictor_p50_ms']:>10.1f}{row['click_over_predictor']:>7.2f}{row['model_thread_over_predictor']:>11.2f}{iou:>13}"
              f"{row['peak_mib']:>10.0f}")
    print("click: slidesam's whole click (model thread + polygons, no transport; bench_click measures gRPC); "
          "ratio and thr. ratio: over the predictor's predict")
    if any(row["weights"] == "random" for row in rows):
        print("random weights give noise masks: their polygons cost far more than a real object's (compare the model thread)")
    for row in rows:
        if row["compile_warmup_s"] is not None:
            print(f"{row['model']} {row['precision']}: torch.compile warm-up {row['compile_warmup_s']:.1f} s before the first encode")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--models", default="mobile_sam,sam_vit_b,sam2.1_hiera_tiny", help="comma-separated")
    parser.add_argument("--precisions", default=None, help="comma-separated (default: float32,bfloat16 on the CPU; "
                        "float32,bfloat16,float16 on CUDA); add NAME+compile for a compiled encoder, e.g. float32+compile")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 1,2 on the CPU; 1,4,8,16,32 on CUDA)")
    parser.add_argument("--encode-repeats", type=int, default=3)
    parser.add_argument("--batch-repeats", type=int, default=1)
    parser.add_argument("--click-rounds", type=int, default=10, help=f"objects of {len(CLICKS)} clicks per method")
    parser.add_argument("--tissue", type=Path, default=Path("demo-output/tissue"),
                        help="the real-tissue set (built there when missing) for mask agreement")
    parser.add_argument("--agreement-samples", type=int, default=12, help="tissue samples compared per reduced precision")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    args.models = args.models.split(",")
    precisions = (args.precisions or ("float32,bfloat16,float16" if cuda else "float32,bfloat16")).split(",")
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4,8,16,32" if cuda else "1,2")).split(",")]
    sample_dir = default_model_dir().parent / "samples"  # where `models fetch` and eval-data keep real images
    if not (args.tissue / "images").is_dir():
        build_tissue_patches(args.tissue, sample_dir)
    samples = list(PatchFolder(args.tissue))[: args.agreement_samples]
    with openslide.OpenSlide(str(fetch_cmu_small_region(sample_dir))) as slide:
        image = np.asarray(slide.read_region((600, 800), 0, (1024, 1024)).convert("RGB"))  # a real 1024-px window
    rows = []
    for name, network, real in networks(args, device):
        reference = adapter(network, device, "float32")
        for precision in tqdm(precisions, desc=name, unit="precision"):
            compiled = precision.endswith("+compile")  # compiles in place: on a copy, so the float32 reference stays eager
            model = adapter(copy.deepcopy(network) if compiled else network, device, precision.removesuffix("+compile"))
            needs_reference = precision != "float32"
            rows.append(measure(name, model, precision, real, args, image, samples if needs_reference else [], reference if needs_reference else None))
        del reference, network
    gpu = torch.cuda.get_device_name(device) if cuda else None
    print_table(rows, gpu)
    print(json.dumps({"benchmark": "bench_models", "device": str(device), "gpu": gpu, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
