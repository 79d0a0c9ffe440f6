"""`slidesam preannotate --ray ADDRESS`: the Segment requests of a pre-annotation spread over a Ray cluster.

`preannotate.py` stays in charge: this process (the driver) finds the prompts, writes every result and the resume
state, image by image in project order, so a run ends with the same bytes as a serial one. Only the requests travel,
one Ray task each, at most `--workers` at once:
- to the server pool (`--server`: one server, or a balancer in front of several): a task sends the request from a Ray
  worker through the client and pixel path of a serial run (one client per worker process, reused);
- `--in-process`: to an engine actor, which holds a slidesam server inside its own process on a loopback port, on the
  GPU Ray gave it (the CPU on a cluster without GPUs). The actor imports that engine by name (`ENGINE_FACTORY`, in
  the lab) inside the Ray worker: the bridge never imports the server or torch, and the driver never loads them.

A task whose worker process dies runs again (Ray's `max_retries`); a dead actor is restarted, its engine loaded
again, and the requests it held run again (`max_restarts`, `max_task_retries`). Past `--retries` the region's image
fails (`WorkerLost`) and the others go on. Every node needs slidesam at the driver's version and the slides at the
driver's paths (or a `--slide-map` to ids the servers resolve); an engine node also needs `slidesam[server]` and
the model's checkpoint.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, replace

import grpc
import ray
from ray.exceptions import GetTimeoutError, RayError, RayTaskError

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ConnectionLost
from slidesam.qupath_bridge.fov import FovSettings
from slidesam.qupath_bridge.pixels import LocalSlides, PixelSource, SlideMap
from slidesam.qupath_bridge.preannotate import WorkerLost
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.prompts import PromptGroup
from slidesam.qupath_bridge.results import Segmentation
from slidesam.qupath_bridge.segmenter import Segmenter
from slidesam.qupath_bridge.sync import IMAGE_ERRORS
from slidesam.qupath_bridge.tls import TlsSettings
from slidesam.qupath_bridge.wire_requests import PolygonOptions

ENGINE_FACTORY = "slidesam.lab.ray_engine:start_engine"
"""module:function that an engine actor calls to start its server; returns an object with `address`."""
ENGINE_START_TIMEOUT_S = 600.0
_PASSED_ON = (*IMAGE_ERRORS, ConnectionLost)
"""A worker's errors the driver raises as a serial run would; any other fails the region's image."""


class ClusterError(Exception):
    """The Ray cluster cannot run the batch: nothing answers at the address, or the engines did not start.
    Raised before the project is written."""


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs to send a region's request as a serial run would."""

    server: str
    token: str | None
    tls: TlsSettings | None
    slide_map: SlideMap
    fov: FovSettings
    model: str
    polygon: PolygonOptions
    connect_timeout: float

    def segmenter(self) -> Segmenter:
        client = SlidesamClient(self.server, token=self.token, tls=self.tls)
        return Segmenter(client, PixelSource(self.slide_map, LocalSlides()), self.fov, self.model, self.polygon, self.connect_timeout)


@dataclass(frozen=True)
class EngineSettings:
    """--in-process: the number of engine actors (None: one per GPU of the cluster, else one), the engines' server
    settings file (TOML as `slidesam-server serve --config`, read on each node) and slide root."""

    engines: int | None = None
    config: str | None = None
    slide_root: str | None = None


_worker_segmenter: tuple[WorkerSettings, Segmenter] | None = None
_worker_lock = threading.Lock()


def _segmenter_in_worker(settings: WorkerSettings) -> Segmenter:
    """The worker process's segmenter for these settings (its client connects once, for every task it runs)."""
    global _worker_segmenter
    with _worker_lock:
        if _worker_segmenter is None or _worker_segmenter[0] != settings:
            _worker_segmenter = (settings, settings.segmenter())
        return _worker_segmenter[1]


@ray.remote
def segment_region(settings: WorkerSettings, image: ImageEntry, group: PromptGroup) -> Segmentation:
    """A Ray task: one region's Segment request to the server pool."""
    return _segmenter_in_worker(settings).run(image, group, interactive=False)


@ray.remote
class EngineActor:
    """A Ray actor holding an engine (`ENGINE_FACTORY`) and a segmenter talking to it over loopback."""

    def __init__(self, factory: str, engine: EngineSettings, settings: WorkerSettings):
        module, _, name = factory.partition(":")
        self._engine = getattr(importlib.import_module(module), name)(engine.config, engine.slide_root)
        self._segmenter = replace(settings, server=self._engine.address, token=None, tls=None).segmenter()

    def address(self) -> str:
        return self._engine.address

    def segment(self, image: ImageEntry, group: PromptGroup) -> Segmentation:
        return self._segmenter.run(image, group, interactive=False)


def connect(address: str, timeout: float) -> None:
    """Joins the running cluster at address (HOST:PORT of its head, ray://HOST:PORT, or auto) as a driver.
    ClusterError when nothing answers there within timeout seconds (ray.init alone would wait for minutes)."""
    if address != "auto":
        probe = grpc.insecure_channel(address.removeprefix("ray://"))
        try:
            grpc.channel_ready_future(probe).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise ClusterError(f"no Ray cluster answers at {address} (waited {timeout:g} s): start one there with "
                               "`ray start --head`, or give the address its head printed") from None
        finally:
            probe.close()
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError) as error:
        raise ClusterError(f"cannot join the Ray cluster at {address}: {error}") from None


class RayRegions:
    """The driver's side, a `preannotate.RegionRunner`: each call sends one region's request to the cluster and
    waits for its answer (preannotate's threads make the calls, so at most `workers` are in flight)."""

    def __init__(self, address: str, settings: WorkerSettings, *, engines: EngineSettings | None = None,
                 retries: int = 3, workers: int = 4, timeout: float = 10.0):
        connect(address, timeout)
        self.settings = settings
        self.retries = retries
        self._actors: list[ray.actor.ActorHandle] = []
        self._busy: list[int] = []
        self._lock = threading.Lock()
        try:
            if engines is not None:
                self._start_engines(engines, workers)
        except BaseException:
            self.close()
            raise

    def _start_engines(self, engines: EngineSettings, workers: int) -> None:
        """One actor per engine, each with a GPU where the cluster has them; returns once every engine serves."""
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = engines.engines or max(1, gpus)
        if gpus and count > gpus:
            raise ClusterError(f"{count} engines need {count} GPUs; the cluster has {gpus}")
        options = {"num_cpus": 1, "num_gpus": 1 if gpus else 0, "max_restarts": self.retries,
                   "max_task_retries": self.retries, "max_concurrency": workers}
        self._actors = [EngineActor.options(**options).remote(ENGINE_FACTORY, engines, self.settings) for _ in range(count)]
        self._busy = [0] * count
        try:
            ray.get([actor.address.remote() for actor in self._actors], timeout=ENGINE_START_TIMEOUT_S)
        except (RayError, GetTimeoutError) as error:
            raise ClusterError(f"the engines did not start on the Ray cluster: {error}") from None

    def __call__(self, image: ImageEntry, group: PromptGroup) -> Segmentation:
        if not self._actors:
            task = segment_region.options(max_retries=self.retries, retry_exceptions=False)
            return self._answer(task.remote(self.settings, image, group), image, group)
        with self._lock:  # the engine with the fewest requests in flight
            index = min(range(len(self._actors)), key=self._busy.__getitem__)
            self._busy[index] += 1
        try:
            return self._answer(self._actors[index].segment.remote(image, group), image, group)
        finally:
            with self._lock:
                self._busy[index] -= 1

    def _answer(self, reference: ray.ObjectRef, image: ImageEntry, group: PromptGroup) -> Segmentation:
        """The task's answer; the error a serial run would raise; or WorkerLost for a worker that kept dying."""
        try:
            return ray.get(reference)
        except RayTaskError as error:
            if isinstance(error.cause, _PASSED_ON):
                raise error.cause from None
            raise WorkerLost(f"{image.name}, {group.result_name}: the Ray worker failed: {error}") from None
        except RayError as error:
            raise WorkerLost(f"{image.name}, {group.result_name}: its Ray worker died {self.retries + 1} time(s) "
                             f"({type(error).__name__}: {error})") from None

    def close(self) -> None:
        """Ends the engines and leaves the cluster (which keeps running)."""
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        ray.shutdown()
