"""The devices a server runs its models on: one worker (an engine and the scheduler whose thread
runs its model calls) per GPU, or one for the CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from slidesam.server.engine.engine import Engine
from slidesam.server.engine.prompts import RegionRequest
from slidesam.server.engine.scheduler import Scheduler
from slidesam.server.models.registry import ModelRegistry
from slidesam.server.uploads.store import UploadStore


@dataclass(frozen=True)
class DeviceWorker:
    """One device: its models and embedding cache (the engine) and its model thread (the scheduler)."""

    engine: Engine
    scheduler: Scheduler

    @property
    def device(self) -> str:
        return str(self.engine.models.device)


class DevicePool:
    """The server's device workers. New work goes to the device that already holds the field of view's
    embedding, else to the least busy one; an object stays on the device it was opened on."""

    def __init__(self, workers: list[DeviceWorker]):
        if not workers:
            raise ValueError("a server needs at least one device")
        self.workers = workers
        self._assigned = [0] * len(workers)  # new work sent to each: breaks ties between idle devices

    def __iter__(self) -> Iterator[DeviceWorker]:
        return iter(self.workers)

    def __len__(self) -> int:
        return len(self.workers)

    @property
    def models(self) -> ModelRegistry:
        """The models (every device has the same)."""
        return self.workers[0].engine.models

    @property
    def uploads(self) -> UploadStore:
        """The uploaded images (one store, shared by every device)."""
        return self.workers[0].engine.uploads

    def choose(self, fov: RegionRequest, model: str) -> tuple[DeviceWorker, bool]:
        """The worker for new work on fov, and whether its embedding is cached there. Blocking (it may
        open the slide); invalid input raises the error the work itself would."""
        for worker in self.workers:
            if worker.engine.is_cached(fov, model):
                return worker, True
        index = min(range(len(self.workers)), key=lambda i: (self.workers[i].scheduler.outstanding, self._assigned[i]))
        self._assigned[index] += 1
        return self.workers[index], False

    def shutdown(self) -> None:
        for worker in self.workers:
            worker.scheduler.shutdown()
