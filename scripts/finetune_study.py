"""Fine-tuning study on real tissue split by image region: zero-shot MobileSAM versus md versus enhanced.

1. Builds the study set (lab/evaluation/region_split.py): train, select and test tiles from disjoint
   blocks of the same images (CMU-1-Small-Region at x5/x10/x20, tiatoolbox, stardist, the IHC glands,
   histolytics' HGSC nest), so the held-out tissue is of the same kind but never seen in training.
2. Sweeps the learning rate and the number of epochs: `train` runs given as LR:EPOCHS per scenario
   (md, enhanced), with the validation loss and IoU measured on the select blocks after every epoch.
   The (learning rate, epochs) with the highest select IoU is chosen; training is deterministic and the
   learning rate constant, so the first E epochs of a longer run are the E-epoch run, which is trained
   again (continuing the shorter run) where E is shorter. The test blocks play no part in any choice.
3. Evaluates zero-shot, the chosen md and the chosen enhanced model once on the test blocks
   (`eval`, 20 simulated clicks) and writes the side-by-side report (`eval --compare`), a per-source
   table, the sweep table and the sweep's validation curves into --docs.
Everything goes through the real commands; the frozen encoder's outputs are shared between the runs
through `train --embedding-cache`. A finished step is not run again (delete its folder to redo it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from slidesam.lab.evaluation.metrics import number_of_clicks  # noqa: E402
from slidesam.lab.evaluation.region_split import build_region_split  # noqa: E402
from slidesam.lab.local_server import server_command  # noqa: E402
from slidesam.server.models.checkpoints import default_model_dir  # noqa: E402

BASE = "mobile_sam"
SOURCES = ("cmu-x20", "cmu-x10", "cmu-x5", "tia-tumour-tile", "stardist-histo", "skimage-ihc", "hgsc-nest")


def run(*args: str) -> None:
    print("$ slidesam-server " + " ".join(args), flush=True)
    subprocess.run(server_command(*args), check=True)


def train_run(work: Path, data: Path, scenario: str, lr: float, epochs: int, augmentations: int) -> dict:
    """One training run (skipped when its checkpoint exists) and its select-block loss after each epoch."""
    name = f"{BASE}-{scenario}-lr{lr:g}-e{epochs}"
    out = work / "models" / name
    if not (out / f"{name}.pt").is_file():
        resume = _continue_shorter_run(work, scenario, lr, epochs, out)
        run("train", "--train", scenario, "--data", str(data / "train"), "--validation-data", str(data / "select"),
            "--embedding-cache", str(work / "embeddings"), "--out", str(out), "--name", name, "--lr", f"{lr:g}",
            "--epochs", str(epochs), "--augmentations", str(augmentations), "--device", "cpu", *resume)
    history = json.loads((out / "metrics.json").read_text())
    return {"name": name, "scenario": scenario, "lr": lr, "epochs": epochs, "dir": out, "history": history}


def _continue_shorter_run(work: Path, scenario: str, lr: float, epochs: int, out: Path) -> list[str]:
    """Where a shorter run of the same scenario and learning rate exists, copies it to `out` (without its
    final checkpoint) and returns ["--resume"]: training continues from its last epoch exactly as the
    longer run would have gone (deterministic, constant learning rate)."""
    if out.exists():
        return ["--resume"] if (out / "last.pt").is_file() else []
    shorter = [(int(d.name.rsplit("-e", 1)[1]), d) for d in (work / "models").glob(f"{BASE}-{scenario}-lr{lr:g}-e*")
               if (d / "last.pt").is_file() and int(d.name.rsplit("-e", 1)[1]) < epochs]
    if not shorter:
        return []
    _, source = max(shorter)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(f"{source.name}.pt", f"{source.name}.slidesam.json"))
    return ["--resume"]


def best_point(runs: list[dict]) -> tuple[dict, int]:
    """(run, epoch) with the highest select IoU (the last mask of the 3 simulated prompt rounds) over every
    trained epoch of every run; the earlier epoch, then the smaller learning rate, on a tie (IoU rounded to
    3 decimals). IoU, not the loss: the loss also counts the IoU head, which can improve while masks get worse."""
    points = [(-round(h["val_iou"], 3), h["epoch"], r["lr"], index) for index, r in enumerate(runs) for h in r["history"] if h["epoch"] > 0]
    _, epoch, _, index = min(points)
    return runs[index], epoch


def chosen_model(work: Path, data: Path, runs: list[dict], augmentations: int) -> dict:
    """The checkpoint of the best (learning rate, epochs): the sweep run itself, or a shorter run again."""
    run_, epoch = best_point(runs)
    if epoch == run_["epochs"]:
        return run_
    return train_run(work, data, run_["scenario"], run_["lr"], epoch, augmentations)


def evaluate(work: Path, data: Path, model: str, model_dir: Path, max_clicks: int) -> Path:
    out = work / "eval" / model
    if not (out / "results.json").is_file():
        run("eval", "--model", model, "--model-dir", str(model_dir), "--data", str(data / "test"), "--out", str(out),
            "--max-clicks", str(max_clicks), "--device", "cpu")
    return out / "results.json"


def sweep_table(runs: list[dict], picks: list[dict]) -> str:
    epochs = max(r["epochs"] for r in runs)
    lines = ["| scenario | learning rate | " + " | ".join(f"epoch {e}" for e in range(epochs + 1)) + " |",
             "|---|---|" + "---|" * (epochs + 1)]
    chosen = {(p["scenario"], p["lr"], p["epochs"]) for p in picks}
    for r in runs:
        cells = []
        for h in r["history"]:
            mark = (r["scenario"], r["lr"], h["epoch"]) in chosen
            cells.append(f"{'**' if mark else ''}{h['val_loss']:.4f} ({h['val_iou']:.3f}){'**' if mark else ''}")
        cells += ["–"] * (epochs + 1 - len(cells))
        lines.append(f"| {r['scenario']} | {r['lr']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + ("\n\nSelect-block loss (IoU of the last of 3 simulated prompt rounds) after each epoch; "
                                "epoch 0 is the base model. Bold: the point chosen for the test evaluation (highest IoU).")


def per_source_table(results: list[Path], max_clicks: int) -> str:
    """NoC@85 and IoU after 5 clicks per source image, per model (from each results.json's samples)."""
    loaded = [json.loads(path.read_text()) for path in results]
    header = "| source | samples | " + " | ".join(f"{r['config']['model']} NoC@85 / IoU@5" for r in loaded) + " |"
    lines = [header, "|---|---|" + "---|" * len(loaded)]
    for source in SOURCES:
        cells, count = [], 0
        for result in loaded:
            samples = [s for s in result["samples"] if s["name"].startswith(source + "-")]
            count = len(samples)
            if samples:
                noc = sum(number_of_clicks(s["ious"], 0.85, max_clicks) for s in samples) / len(samples)
                iou5 = sum(s["ious"][min(4, len(s["ious"]) - 1)] for s in samples) / len(samples)
                cells.append(f"{noc:.2f} / {iou5:.3f}")
        if count:
            lines.append(f"| {source} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sample_metrics(sample: dict, max_clicks: int) -> dict[str, float]:
    ious = sample["ious"]
    return {"NoC@85": number_of_clicks(ious, 0.85, max_clicks), "NoC@90": number_of_clicks(ious, 0.90, max_clicks),
            "IoU@1": ious[0], "IoU@5": ious[min(4, len(ious) - 1)]}


def paired_table(results: list[Path], max_clicks: int, resamples: int = 10_000) -> str:
    """Each tuned model minus zero-shot, per test sample (the same samples), with a seeded 95 % bootstrap
    interval of the mean difference: a difference whose interval holds 0 is not shown by this set."""
    base, *tuned = [json.loads(path.read_text()) for path in results]
    names = [s["name"] for s in base["samples"]]
    rng = np.random.default_rng(0)
    picks = rng.integers(len(names), size=(resamples, len(names)))
    lines = ["| model − zero-shot | " + " | ".join(_sample_metrics(base["samples"][0], max_clicks)) + " |", "|---|---|---|---|---|"]
    for result in tuned:
        by_name = {s["name"]: s for s in result["samples"]}
        cells = []
        for metric in _sample_metrics(base["samples"][0], max_clicks):
            diff = np.array([_sample_metrics(by_name[n], max_clicks)[metric] - _sample_metrics(b, max_clicks)[metric]
                             for n, b in zip(names, base["samples"])])
            low, high = np.percentile(diff[picks].mean(axis=1), [2.5, 97.5])
            cells.append(f"{diff.mean():+.2f} [{low:+.2f}, {high:+.2f}]" if metric.startswith("NoC") else
                         f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append(f"| {result['config']['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\nMean per-sample difference over the {len(names)} test samples, with its 95 % bootstrap "
                                "interval (10,000 resamples, seed 0). NoC: fewer is better; IoU: more is better.")


def plot_sweep(runs: list[dict], path: Path) -> None:
    """Select-block IoU (the choice) and loss per epoch, one column per scenario."""
    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
    for column, scenario in enumerate(("md", "enhanced")):
        for key, row, label in (("val_iou", 0, "IoU of the last prompt round"), ("val_loss", 1, "loss")):
            ax = axes[row, column]
            for r in (r for r in runs if r["scenario"] == scenario):
                ax.plot([h["epoch"] for h in r["history"]], [h[key] for h in r["history"]], marker="o", label=f"lr {r['lr']:g}")
            ax.set(title=f"{scenario}: {label} on the select blocks", xlabel="epoch" if row else "", ylabel=label)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def runs_spec(text: str) -> list[tuple[float, int]]:
    """"1e-5:4,1e-4:8" -> [(1e-05, 4), (0.0001, 8)]."""
    try:
        return [(float(lr), int(epochs)) for lr, epochs in (item.split(":") for item in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LR:EPOCHS[,LR:EPOCHS...], got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("finetune-study"), help="working folder (data, models, evaluations)")
    parser.add_argument("--docs", type=Path, default=Path("docs/finetune-study"), help="where the tables and plots go")
    parser.add_argument("--md-runs", type=runs_spec, default=runs_spec("1e-5:4,1e-4:8"),
                        help="md runs as LR:EPOCHS,... (every shorter epoch count of a run is swept too; default "
                             "1e-5:4,1e-4:8: at 1e-5 the select IoU fell every epoch, at 1e-4 it still rose at 4)")
    parser.add_argument("--enhanced-runs", type=runs_spec, default=runs_spec("1e-4:4"),
                        help="enhanced-decoder runs, the same way (a step costs about 2.5x md's; default 1e-4:4)")
    parser.add_argument("--augmentations", type=int, default=2, help="fixed augmentations per training patch")
    parser.add_argument("--max-clicks", type=int, default=20)
    args = parser.parse_args()
    data = args.work / "data"
    if not (data / "manifest.json").is_file():
        manifest = build_region_split(data, default_model_dir().parent / "samples", {"train": 1, "select": 2, "test": 3})
        print("study set:", {role: sum(counts.values()) for role, counts in manifest["counts"].items()})
    md_runs = [train_run(args.work, data, "md", lr, epochs, args.augmentations) for lr, epochs in args.md_runs]
    enhanced_runs = [train_run(args.work, data, "enhanced", lr, epochs, args.augmentations) for lr, epochs in args.enhanced_runs]
    best_md, best_enhanced = (chosen_model(args.work, data, runs, args.augmentations) for runs in (md_runs, enhanced_runs))
    results = [evaluate(args.work, data, BASE, default_model_dir(), args.max_clicks)]
    results += [evaluate(args.work, data, r["name"], r["dir"], args.max_clicks) for r in (best_md, best_enhanced)]
    run("eval", "--compare", *map(str, results), "--out", str(args.docs))
    runs = md_runs + enhanced_runs
    (args.docs / "sweep.md").write_text(sweep_table(runs, [best_md, best_enhanced]) + "\n")
    (args.docs / "per_source.md").write_text(per_source_table(results, args.max_clicks) + "\n")
    (args.docs / "paired.md").write_text(paired_table(results, args.max_clicks) + "\n")
    plot_sweep(runs, args.docs / "sweep.png")
    shutil.copy(data / "manifest.json", args.docs / "manifest.json")
    for path in results:
        shutil.copy(path, args.docs / f"{json.loads(path.read_text())['config']['model']}.json")
    print((args.docs / "sweep.md").read_text())
    print((args.docs / "per_source.md").read_text())
    print((args.docs / "paired.md").read_text())
    print(f"wrote {args.docs}")


if __name__ == "__main__":
    main()
