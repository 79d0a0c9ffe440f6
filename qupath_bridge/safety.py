"""Safe writes to a project: timestamped backups and detection of concurrent saves (atomic replacement is
`slidesam.atomic_files`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from slidesam.qupath_bridge.project import ProjectChanged

STATE_DIR = ".slidesam"


@dataclass(frozen=True)
class FileStamp:
    """What a file looked like when it was read: modification time and size (None: it did not exist)."""

    mtime_ns: int | None
    size: int | None

    @classmethod
    def of(cls, path: Path) -> "FileStamp":
        try:
            stat = path.stat()
        except FileNotFoundError:
            return cls(None, None)
        return cls(stat.st_mtime_ns, stat.st_size)

    def check_unchanged(self, path: Path) -> None:
        """ProjectChanged when the file on disk is no longer the one that was read."""
        if FileStamp.of(path) != self:
            raise ProjectChanged(
                f"{path} changed on disk since slidesam read it (saved from QuPath or another tool?); "
                "it was left as it is: run the command again to work on the new version"
            )


class Backups:
    """Copies files into `<root>/.slidesam/backups/<UTC time>/<path relative to root>` before they change.

    One folder per Backups object (one per command run), made on the first backup; each file is
    copied once, so the folder holds the state before this run's first write.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.folder: Path | None = None
        self._done: set[Path] = set()

    def save(self, path: Path) -> None:
        path = Path(path)
        if path in self._done or not path.exists():
            return
        if self.folder is None:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            self.folder = self.root / STATE_DIR / "backups" / stamp
        try:
            relative = path.resolve().relative_to(self.root.resolve())
        except ValueError:
            relative = Path("_outside") / path.name
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        self._done.add(path)
