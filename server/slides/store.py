"""The slides under the server's slide root: slide ids (relative POSIX paths that may not leave the
root) resolved to files, opened on demand and kept open in a small LRU."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

import openslide

from slidesam.server.errors import InvalidArgument, NotFound, PermissionDenied
from slidesam.server.slides.openslide_source import OpenSlideSource
from slidesam.server.slides.regions import MAX_READ_PIXELS, MAX_REGION_PIXELS

SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
)
"""Extensions of the files `list_slides` offers (OpenSlide reads them typically)."""


class SlideStore:
    """Slides under one root directory, opened on demand, with an LRU of open handles.

    Evicted handles are not closed explicitly: a reader may still hold them, and OpenSlide closes
    a handle when its last reference goes.
    """

    def __init__(
        self,
        root: Path,
        max_open: int = 16,
        max_region_pixels: int = MAX_REGION_PIXELS,
        max_read_pixels: int = MAX_READ_PIXELS,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self._root = Path(root).resolve()
        self._max_open = max_open
        self._max_region_pixels = max_region_pixels
        self._max_read_pixels = max_read_pixels
        self._open: OrderedDict[Path, OpenSlideSource] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root

    def resolve(self, slide_id: str) -> Path:
        """The real path of a slide id: a relative POSIX path that must stay inside the root."""
        _check_slide_id(slide_id)
        try:
            path = (self._root / slide_id).resolve()
            if not path.is_relative_to(self._root):
                raise PermissionDenied(f"slide id {slide_id!r} leads outside the slide root")
            exists, is_file = path.exists(), path.is_file()
        except (OSError, RuntimeError) as error:  # name too long, symlink loop, ...
            reason = error.strerror if isinstance(error, OSError) else "symlink loop"
            raise InvalidArgument(f"slide id {slide_id!r} cannot be resolved: {reason}") from None
        if not exists:
            raise NotFound(
                f"no slide {slide_id!r} on this server (slide ids are paths relative to the server's slide root)"
            )
        if not is_file:
            kind = "a directory" if path.is_dir() else "a special file (FIFO, socket or device)"
            raise InvalidArgument(f"slide id {slide_id!r} names {kind}, not a slide file")
        return path

    def open(self, slide_id: str) -> OpenSlideSource:
        """The slide as an ImageSource, reusing an open handle while the file is unchanged."""
        path = self.resolve(slide_id)
        stat = path.stat()
        cache_key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
        with self._lock:
            source = self._open.get(path)
            if source is not None and source.cache_key == cache_key and not source.damaged:
                self._open.move_to_end(path)
                return source
        source = self._open_source(slide_id, path, cache_key)
        with self._lock:
            self._open[path] = source
            self._open.move_to_end(path)
            while len(self._open) > self._max_open:
                self._open.popitem(last=False)
        return source

    def list_slides(self) -> list[str]:
        """Ids of the files under the root whose extension OpenSlide typically reads, sorted."""
        ids = []
        for directory, _, files in os.walk(self._root):
            for name in files:
                path = Path(directory, name)
                if path.suffix.lower() in SLIDE_EXTENSIONS and self._leads_inside(path):
                    ids.append(path.relative_to(self._root).as_posix())
        return sorted(ids)

    def _leads_inside(self, path: Path) -> bool:
        try:
            return path.resolve().is_relative_to(self._root) and path.is_file()
        except (OSError, RuntimeError):
            return False

    def _open_source(self, slide_id: str, path: Path, cache_key: str) -> OpenSlideSource:
        try:
            slide = openslide.OpenSlide(path)
        except openslide.OpenSlideError as error:
            raise InvalidArgument(f"not a slide OpenSlide can read: {slide_id!r} ({error})") from None
        return OpenSlideSource(slide, cache_key, self._max_region_pixels, self._max_read_pixels)


def _check_slide_id(slide_id: str) -> None:
    if not isinstance(slide_id, str) or not slide_id:
        raise InvalidArgument("slide id is empty; give a path relative to the server's slide root")
    if "\\" in slide_id or "\0" in slide_id:
        raise InvalidArgument(
            f"slide id {slide_id!r} contains a backslash or NUL; use '/' to separate directories"
        )
    path = PurePosixPath(slide_id)
    if path.is_absolute():
        raise InvalidArgument(
            f"slide id {slide_id!r} is absolute; give a path relative to the server's slide root"
        )
    if ".." in path.parts:
        raise InvalidArgument(f"slide id {slide_id!r} contains '..'; ids may not leave the slide root")
