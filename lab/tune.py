"""`slidesam-server tune`: a QuPath project's reviewed annotations in, a served fine-tuned model out.

One run, into a new folder OUT:
1. export (the bridge's `export_training`) into OUT/data: train/ and validation/ patch folders, split by
   image, objects and negatives;
2. train the base model on OUT/data/train (`lab.training.run.train`; its own patch split gives the
   validation loss, so the held-out images never enter training) into OUT/train;
3. register: the checkpoint and its sidecar copied into the model directory the server reads, so
   `serve --model-dir` lists the tuned model by name;
4. evaluate base and tuned on OUT/data/validation (the held-out images; negatives skipped) into
   OUT/eval/<model>, in-process;
5. the side-by-side report of the two into OUT/compare.
Bad input (OUT exists, an unknown or missing base, a name taken, the export's own errors, too few
patches to train on) stops the run before anything is written.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from slidesam.lab.evaluation import report
from slidesam.lab.evaluation.datasets import PatchFolder
from slidesam.lab.evaluation.evaluate import evaluation_config, run_evaluation
from slidesam.lab.evaluation.metrics import DEFAULT_BOUNDARY_UM
from slidesam.lab.evaluation.runner import EngineBackend
from slidesam.lab.training.data import validation_names
from slidesam.lab.training.loop import TrainConfig
from slidesam.lab.training.run import train
from slidesam.qupath_bridge.project_backends import open_project
from slidesam.qupath_bridge.pixels import PixelSource
from slidesam.qupath_bridge.training_export import NEGATIVE, ExportSettings, ExportSummary, export_training
from slidesam.server.errors import ModelUnavailable
from slidesam.server.models.registry import FINETUNED_SUFFIX, ModelRegistry

log = logging.getLogger(__name__)

TRAIN_VALIDATION_FRACTION = 0.25  # training's own patch split, for the validation loss


@dataclass(frozen=True)
class TuneResult:
    name: str
    checkpoint: Path            # the registered checkpoint, in the model directory
    export: ExportSummary
    base: dict                  # results.json of the base model on the held-out images
    tuned: dict                 # ... and of the tuned model
    compare: list[Path]         # the side-by-side table and plots


def tune(
    registry: ModelRegistry, base: str, project_path: Path, settings: ExportSettings, slides: PixelSource,
    out: Path, config: TrainConfig, max_clicks: int, name: str = "",
) -> TuneResult:
    """Export, train, register, evaluate and compare (module docstring); the tuned model is registered
    in `registry.model_dir`."""
    _check_before_writing(registry, base, out, name)
    data = out / "data"
    out.mkdir(parents=True)
    try:
        project = open_project(project_path, writable=False)
        try:
            summary = export_training(project, settings, data, slides)
        finally:
            project.close()
        if not sum(n for kind, n in summary.counts["validation"].items() if kind != NEGATIVE):
            raise ValueError(f"the held-out images ({', '.join(summary.images['validation'])}) gave no object to evaluate on")
        validation_names(PatchFolder(data / "train").names(), TRAIN_VALIDATION_FRACTION, config.seed)
    except BaseException:
        shutil.rmtree(out)
        raise
    log.info("tune: exported %s", "; ".join(line.strip() for line in summary.lines()))
    trained = train(registry, base, PatchFolder(data / "train"), config, out / "train", name,
                    validation_fraction=TRAIN_VALIDATION_FRACTION)
    checkpoint = register(trained, registry.model_dir, {"project": str(project_path), "export": str(data)})
    name = checkpoint.stem
    tuned_registry = ModelRegistry.create(registry.model_dir, str(registry.device))  # finds it as `serve` does
    results = [_evaluate(r, model, data / "validation", out / "eval" / model, max_clicks)
               for r, model in ((registry, base), (tuned_registry, name))]
    compare = report.write_report(results, out / "compare")
    return TuneResult(name, checkpoint, summary, results[0], results[1], compare)


def _check_before_writing(registry: ModelRegistry, base: str, out: Path, name: str) -> None:
    """The errors found before the run writes anything: OUT exists, the base is unknown (NotFound) or
    has no checkpoint here, the name is taken in the model directory."""
    if out.exists():
        raise ValueError(f"{out} exists; give a new folder (nothing was written)")
    spec = registry.spec(base)
    if not registry.is_available(base):
        raise ModelUnavailable(f"the base model {base} has no checkpoint in {registry.model_dir}: {spec.how_to_obtain()}")
    if name and (name in registry.names() or _registered(registry.model_dir, name)):
        raise ValueError(f"a model named {name!r} exists in {registry.model_dir}; give another --name")


def _registered(model_dir: Path, name: str) -> bool:
    return (model_dir / f"{name}.pt").exists() or (model_dir / f"{name}{FINETUNED_SUFFIX}").exists()


def register(checkpoint: Path, model_dir: Path, origin: dict) -> Path:
    """Copies a fine-tuned checkpoint and its sidecar (with `origin` added: where its data came from)
    into the model directory, the sidecar last so a reader never sees it without its weights."""
    if _registered(model_dir, checkpoint.stem):
        raise ValueError(f"a model named {checkpoint.stem!r} exists in {model_dir}; the trained one stays in "
                         f"{checkpoint.parent} (run again with another --name)")
    model_dir.mkdir(parents=True, exist_ok=True)
    target = Path(shutil.copyfile(checkpoint, model_dir / checkpoint.name))
    sidecar = json.loads(checkpoint.with_name(checkpoint.stem + FINETUNED_SUFFIX).read_text())
    (model_dir / f"{checkpoint.stem}{FINETUNED_SUFFIX}").write_text(json.dumps(dict(sidecar, origin=origin), indent=1))
    log.info("tune: registered %s in %s", checkpoint.stem, model_dir)
    return target


def _evaluate(registry: ModelRegistry, model: str, data: Path, out: Path, max_clicks: int) -> dict:
    """One model on the held-out patches, in-process, by the evaluation's protocol."""
    spec = registry.spec(model)
    dataset = PatchFolder(data)
    backend = EngineBackend.create(registry, model, "plain")
    config = evaluation_config(model, spec.model_id, spec.sha256, str(registry.device), "plain", dataset, max_clicks,
                               backend, "auto", DEFAULT_BOUNDARY_UM)
    return run_evaluation(dataset, backend, out, config)
