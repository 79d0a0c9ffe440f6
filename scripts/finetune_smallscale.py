"""A small-scale fine-tuning study on CPU: zero-shot MobileSAM versus md versus the enhanced decoder.

Training tiles come from the tiatoolbox, stardist and scikit-image IHC images; evaluation patches from
CMU-1-Small-Region at x10, an image no training tile comes from (held out). Ground truth is derived by
colour deconvolution (lab/evaluation/ground_truth.py). Everything goes through the real commands:
`slidesam-server train` and `slidesam-server eval`, then `eval --compare`. It is a small run, not
the paper's: a few epochs on a few dozen tiles.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import cv2
import numpy as np
import openslide

from slidesam.lab.evaluation.ground_truth import object_masks, stain_mask
from slidesam.lab.evaluation.tissue_patches import source_images
from slidesam.lab.local_server import server_command
from slidesam.server.models.checkpoints import default_model_dir
from slidesam.server.slides.samples import fetch_cmu_small_region


def write_pair(folder: Path, name: str, rgb: np.ndarray, mask: np.ndarray) -> None:
    cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / f"{name}_mask.png"), mask.astype(np.uint8) * 255)


def training_tiles(folder: Path, cache: Path, tile: int = 256) -> int:
    """Tiles (stride tile/2) of the non-CMU images whose stain mask covers 10-90 % of the tile."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, rgb, stain in source_images(cache):
        if name.startswith("cmu"):
            continue
        mask = stain_mask(rgb, stain)
        for row in range(0, rgb.shape[0] - tile + 1, tile // 2):
            for col in range(0, rgb.shape[1] - tile + 1, tile // 2):
                part = mask[row : row + tile, col : col + tile]
                if 0.1 <= part.mean() <= 0.9:
                    write_pair(folder, f"{name}-{row}-{col}", rgb[row : row + tile, col : col + tile], part)
                    count += 1
    return count


def held_out_patches(folder: Path, cache: Path) -> int:
    """512 x 512 patches of CMU-1-Small-Region at x10 (level-0 windows of 1024), haematoxylin objects."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with openslide.OpenSlide(str(fetch_cmu_small_region(cache))) as slide:
        width, height = slide.dimensions
        for y in range(0, height - 1024 + 1, 960):
            for x in range(0, width - 1024 + 1, 598):
                rgb = cv2.resize(np.asarray(slide.read_region((x, y), 0, (1024, 1024)).convert("RGB")), (512, 512), interpolation=cv2.INTER_AREA)
                for index, mask in enumerate(object_masks(rgb, "hematoxylin", max_objects=2), start=1):
                    write_pair(folder, f"cmu-{x}-{y}-{index}", rgb, mask)
                    count += 1
    return count


def run(*args: str) -> None:
    print("$ slidesam-server " + " ".join(args), flush=True)
    subprocess.run(server_command(*args), check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("finetune-smallscale"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-clicks", type=int, default=20)
    args = parser.parse_args()
    cache = default_model_dir().parent / "samples"
    train_dir, eval_dir, models = args.work / "train", args.work / "heldout", args.work / "models"
    print(f"{training_tiles(train_dir, cache)} training tiles, {held_out_patches(eval_dir, cache)} held-out samples")
    for scenario in ("md", "enhanced"):
        run("train", "--train", scenario, "--data", str(train_dir), "--out", str(models / scenario), "--name", f"mobile_sam-{scenario}-small",
            "--epochs", str(args.epochs), "--augmentations", "2", "--device", "cpu")
    results = []
    for model, model_dir in (("mobile_sam", default_model_dir()), ("mobile_sam-md-small", models), ("mobile_sam-enhanced-small", models)):
        out = args.work / "eval" / model
        run("eval", "--model", model, "--model-dir", str(model_dir), "--data", str(eval_dir), "--out", str(out),
            "--max-clicks", str(args.max_clicks), "--device", "cpu")
        results.append(str(out / "results.json"))
    run("eval", "--compare", *results, "--out", str(args.work / "compare"))


if __name__ == "__main__":
    main()
