"""Encoder and decoder cost per model architecture on one device (CPU or CUDA), measured side by side.

MobileSAM runs with its real weights; SAM ViT-B with random initialisation (the speed of an
architecture does not depend on its weights). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch

from slidesam.server.models.registry import ModelRegistry, resolve_device
from slidesam.server.models.sam import SamModel


def timed(function, repeats: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
    return times


def measure(name: str, model: SamModel, image: np.ndarray, encode_repeats: int, decode_repeats: int) -> dict:
    model.encode(image)  # warm-up (CUDA kernels, allocator)
    encode = timed(lambda: model.encode(image), encode_repeats, model.device)
    embedding = model.encode(image)
    points, labels = np.array([[500.0, 480.0], [620.0, 400.0]]), np.array([1, 0])
    first = model.decode(embedding, points[:1], labels[:1], None, None, True)
    decode = timed(lambda: model.decode(embedding, points, labels, None, first.low_res_logits, False), decode_repeats, model.device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else None
    return {"model": name, "encode_ms_p50": statistics.median(encode), "decode_ms_p50": statistics.median(decode),
            "encode_over_decode": statistics.median(encode) / statistics.median(decode), "cuda_peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--encode-repeats", type=int, default=5)
    parser.add_argument("--decode-repeats", type=int, default=30)
    parser.add_argument("--skip-vit-b", action="store_true", help="only MobileSAM (ViT-B encodes take ~11 s each on 2 CPU cores)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    image = (np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype(np.uint8)
    registry = ModelRegistry.create(device=str(device))
    registry.fetch("mobile_sam")
    rows = [measure("mobile_sam", registry.get("mobile_sam")[1], image, args.encode_repeats, args.decode_repeats)]
    if not args.skip_vit_b:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from segment_anything import sam_model_registry
        torch.manual_seed(0)
        rows.append(measure("sam_vit_b (random init)", SamModel(sam_model_registry["vit_b"](), device), image, args.encode_repeats, args.decode_repeats))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"device: {gpu or 'cpu'} ({torch.get_num_threads()} CPU threads), 1024 x 1024 input")
    print(f"{'model':<26}{'encode ms':>12}{'decode ms':>12}{'encode/decode':>15}")
    for row in rows:
        print(f"{row['model']:<26}{row['encode_ms_p50']:>12.1f}{row['decode_ms_p50']:>12.1f}{row['encode_over_decode']:>15.1f}")
    print(json.dumps({"benchmark": "bench_models", "device": str(device), "gpu": gpu, "rows": rows}))


if __name__ == "__main__":
    main()
