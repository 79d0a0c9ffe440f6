"""`slidesam sync --watch`: sync again after every save of the project.

Polls the modification time and size of the files a save changes (the project's `watched_files()`:
QuPath's project.qpproj and data.qpdata files, or a GeoJSON project's manifest and .geojson files)
every `interval` seconds. A change starts a sync once the files have stayed the same for one more
interval (a save in progress is waited out). slidesam's own writes do not trigger a sync.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from slidesam.qupath_bridge.safety import FileStamp


@dataclass(frozen=True)
class WatchLimits:
    interval: float = 1.0
    max_cycles: int | None = None
    """Stop after this many syncs (the first one included)."""
    timeout: float | None = None
    """Stop after this many seconds."""


def snapshot(paths: Sequence[Path]) -> dict[Path, FileStamp]:
    return {path: FileStamp.of(path) for path in paths}


def watch(
    files: Callable[[], list[Path]], run_once: Callable[[], None], limits: WatchLimits, waiting: Callable[[], None] = lambda: None
) -> int:
    """Runs run_once now and after every settled change of files(); returns the number of syncs.
    `waiting` is called each time the files' state is taken and a save is awaited."""
    deadline = None if limits.timeout is None else time.monotonic() + limits.timeout
    cycles = 0
    while True:
        run_once()
        cycles += 1
        seen = snapshot(files())
        if limits.max_cycles is not None and cycles >= limits.max_cycles:
            return cycles
        waiting()
        changed = False
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                return cycles
            time.sleep(limits.interval)
            now = snapshot(files())
            if now != seen:
                changed, seen = True, now
            elif changed:
                break
