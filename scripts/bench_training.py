"""Training cost per scenario, side by side in one run: trainable parameters, seconds and peak memory per step.

One step = one 1024 x 1024 patch, a first prompt plus two corrective clicks (three decoder passes),
backward and optimizer update, as `slidesam-server train` does. Frozen-encoder scenarios (md, enhanced)
read a cached embedding, as the trainer does; ie_md and whole run the encoder forward and backward.
MobileSAM uses its real weights; SAM ViT-B is randomly initialised (cost does not depend on weights).
Peak memory: CUDA's max_memory_allocated on a GPU; on the CPU the growth of the process's peak RSS,
so each configuration runs in its own subprocess. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

SCENARIOS = ("md", "enhanced", "ie_md", "whole")


def measure(architecture: str, scenario: str, device_name: str, steps: int) -> dict:
    """Runs in a fresh process: builds the model, times `steps` training steps after one warm-up."""
    import numpy as np
    import torch

    from slidesam.server.models.registry import ModelRegistry, resolve_device
    from slidesam.lab.training.data import Patch
    from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig
    from slidesam.lab.training.loop import Trainer, TrainConfig
    from slidesam.lab.training.scenarios import set_trainable, with_enhanced_decoder

    device = resolve_device(device_name)
    registry = ModelRegistry.create(device=str(device))
    if architecture == "mobile_sam":
        registry.fetch("mobile_sam")
        sam = registry.load_network(registry.spec("mobile_sam"))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from segment_anything import sam_model_registry
        torch.manual_seed(0)
        sam = sam_model_registry[architecture]().to(device)
    if scenario == "enhanced":
        with_enhanced_decoder(sam, EnhancedDecoderConfig())
    trainable = set_trainable(sam, scenario)
    rng = np.random.default_rng(0)
    image = (rng.random((1024, 1024, 3)) * 255).astype(np.uint8)
    mask = np.zeros((1024, 1024), bool)
    mask[300:700, 250:800] = True
    patch = Patch("bench", image, mask)
    trainer = Trainer(sam, TrainConfig(scenario, rounds=3, box_probability=0.0, augmentations_per_patch=1), [patch], [patch], None, {})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for step in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
            if step == 1:
                torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        trainer.optimizer.zero_grad(set_to_none=True)
        step_rng = np.random.default_rng([0, step])
        embedding, target = trainer._example(patch, step_rng, training=True)
        loss, _ = trainer.example_loss(embedding, target, step_rng)
        loss.backward()
        trainer.optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step warms up (and, frozen encoders, computes the one cached embedding)
            times.append(time.perf_counter() - started)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {"architecture": architecture, "scenario": scenario, "device": str(device),
            "trainable_parameters": trainable, "total_parameters": sum(p.numel() for p in sam.parameters()),
            "seconds_per_step": statistics.median(times), "peak_memory_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--architectures", default="mobile_sam,vit_b", help="comma-separated: mobile_sam, vit_b, vit_l, vit_h")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--one", nargs=2, metavar=("ARCH", "SCENARIO"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.device, args.steps)))
        return
    rows = []
    for architecture in args.architectures.split(","):
        for scenario in args.scenarios.split(","):
            completed = subprocess.run(
                [sys.executable, __file__, "--one", architecture, scenario, "--device", args.device, "--steps", str(args.steps)],
                capture_output=True, text=True,
            )
            if completed.returncode:
                print(f"{architecture} {scenario}: failed\n{completed.stderr[-1500:]}", file=sys.stderr)
                continue
            rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            print(f"measured {architecture} {scenario}: {rows[-1]['seconds_per_step']:.2f} s/step", file=sys.stderr, flush=True)
    print(f"{'architecture':<14}{'scenario':<10}{'trainable':>14}{'s/step':>10}{'peak MiB':>11}{'vs whole (time)':>17}")
    for row in rows:
        whole = next((r for r in rows if r["architecture"] == row["architecture"] and r["scenario"] == "whole"), None)
        ratio = f"{whole['seconds_per_step'] / row['seconds_per_step']:.1f}x cheaper" if whole and row is not whole else "-"
        print(f"{row['architecture']:<14}{row['scenario']:<10}{row['trainable_parameters']:>14,}{row['seconds_per_step']:>10.3f}"
              f"{row['peak_memory_mib']:>11.0f}{ratio:>17}")
    print(json.dumps({"benchmark": "bench_training", "rows": rows}))


if __name__ == "__main__":
    main()
