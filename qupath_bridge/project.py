"""The one small interface every project backend implements, and the objects that cross it.

Two backends: `GeoJSONProject` (a folder of QuPath GeoJSON files plus a manifest) and
`PaquoProject` (a QuPath `.qpproj` project through paquo); `project_backends.open_project` picks one
for a path. Both import this module, which imports neither. Everything above this interface
(prompt groups, sync, pre-annotation, export/import) only sees `Project`, `ImageEntry`,
`Annotation` and `PathClass`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Mapping, Protocol, Sequence

import shapely


class ProjectError(Exception):
    """A project that cannot be opened, read or written as asked; the message says what to do."""


class ProjectChanged(ProjectError):
    """A file changed on disk between our read and our write (QuPath or another tool saved it)."""


@dataclass(frozen=True)
class PathClass:
    """A QuPath classification: its name and display colour (r, g, b)."""

    name: str
    color: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Annotation:
    """One QuPath annotation, backend-neutral. Coordinates are level-0 pixels, origin top-left.

    Read back from either backend, an annotation is what QuPath keeps of the one written (`qupath_values`):
    geometry on QuPath's 0.01-px grid with float32 coordinates (ring starts and orientations may differ:
    compare with `qupath_values.same_geometry`; points keep their order), float32 measurements, and `class_color` the colour of its class in the project's class list, where
    writing it put the class (with the annotation's `class_color`, or the colour QuPath gives that class).
    """

    id: str
    """QuPath's object UUID (string)."""
    geometry: shapely.Geometry
    path_class: str | None = None
    name: str | None = None
    description: str | None = None
    measurements: Mapping[str, float] = field(default_factory=dict)
    locked: bool = False
    class_color: tuple[int, int, int] | None = None
    """The colour its file gave the class, where the project's class list does not decide it."""


@dataclass(frozen=True)
class ImageEntry:
    """An image of a project: its name (unique in the project), where the slide is, and its size."""

    name: str
    uri: str
    """As the project stores it (a path or a file: URI)."""
    path: PurePath | None
    """The local slide file the URI names, when it names one."""
    width: int | None = None
    height: int | None = None


class Project(Protocol):
    """What sync, pre-annotation and export/import need from a project.

    Changes are held in memory until `save()`, which backs up every file it will change
    (under `<root>/.slidesam/backups/<UTC time>/`), refuses to overwrite a file that changed on
    disk since it was read (`ProjectChanged`), and writes nothing when nothing changed.
    """

    root: Path
    """The project folder (where `.slidesam/` lives)."""

    def images(self) -> Sequence[ImageEntry]: ...

    def annotations(self, image: str) -> list[Annotation]:
        """The image's annotations in file / hierarchy order (detections and other objects are left out)."""
        ...

    def add_annotation(self, image: str, annotation: Annotation) -> None:
        """Adds the annotation, and its class to the class list (`ensure_path_class`, with its `class_color`)."""
        ...

    def update_annotation(self, image: str, annotation: Annotation) -> None:
        """Replaces the annotation with the same id, keeping its place; a class it changes to joins the class list."""
        ...

    def remove_annotation(self, image: str, annotation_id: str) -> None: ...

    def path_classes(self) -> list[PathClass]: ...

    def ensure_path_class(self, path_class: PathClass) -> None:
        """Adds the class to the project's class list unless a class of that name is there."""
        ...

    def watched_files(self) -> list[Path]:
        """The files a save from QuPath (or an editor) changes: what `sync --watch` polls."""
        ...

    def save(self) -> list[Path]:
        """Writes the pending changes; returns the files written."""
        ...

    def close(self) -> None: ...

