"""QuPath projects (`.qpproj`) through paquo 0.9: the `Project` interface over QuPath's own code.

paquo needs a QuPath installation (found through `PAQUO_QUPATH_DIR` or `.paquo.toml`); without one,
importing `paquo.projects` raises and opening a project raises `ProjectError` saying so.

paquo calls used, each checked against paquo 0.9.0's source:
- `paquo.projects.QuPathProject(path, mode)`: mode "r+" (read/write, must exist) or "r";
  `.images` (entries, stable objects); `.path_classes` (getter; the setter replaces the whole list,
  and QuPath's `DefaultProject.setPathClasses` writes `classifiers/classes.json` at once);
  `.save()` (saves every entry whose image data changed, then `syncChanges()` writes project.qpproj).
- `paquo.images.QuPathProjectImageEntry`: `.image_name`, `.uri`, `.width`, `.height`, `.entry_path`
  (`data/<id>/`), `.hierarchy`, `.is_readable()`. `entry.save()` silently skips an image whose URI is
  unreachable, so slidesam refuses to change such an image instead of losing the change.
- `paquo.images.ImageProvider.path_from_uri(uri)` (static): the local path of a `file:` URI.
- `paquo.hierarchy.QuPathPathObjectHierarchy.annotations`: set-like proxy in hierarchy order, `.add(obj)`,
  `.discard(obj)`.
- `paquo.pathobjects.QuPathPathAnnotationObject`: `.to_geojson()` and the classmethod `.from_geojson()`
  (QuPath's Gson adapters: the object's UUID `id` is kept, QuPath >= 0.4), `.update_roi(geometry)`,
  `.name`, `.description`, `.locked` (setters), `.update_path_class(cls)`, `.measurements` (a mutable
  mapping name -> float).
- `paquo.classes.QuPathPathClass(name, color=None, parent=None)`, `.id` (QuPath's "A: B" string), `.color`
  (getter `.to_rgb()`, setter).
- `paquo.settings.java_opts` (dynaconf; read when paquo starts its JVM), see `configure_paquo`.
- On the Java object: `PathObject.getROI().getAllPoints()` (qupath-core `ROI`), the points in their order;
  `PathAnnotationObject.setDescription(null)` (removes the description; paquo's setter takes strings only).

Is the project open in QuPath? QuPath writes no lock file (qupath-core `DefaultProject`:
`writeProject` renames project.qpproj to project.qpproj.backup and writes a new one;
`saveImageData` moves data.qpdata to data.qpdata.bkp while it writes and deletes it afterwards).
So an open QuPath cannot be seen on disk. What slidesam checks: a leftover data.qpdata.bkp (a save in
progress, or one that crashed) and a data.qpdata that changed since slidesam read it both stop the
write for that image. An image open in QuPath keeps its own copy: reload it after a sync
(File > Reload data), or QuPath's next save of that image overwrites slidesam's annotations.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from pathlib import Path, PurePath

import shapely

from slidesam.qupath_bridge.geojson import annotation_to_feature, feature_to_annotation
from slidesam.qupath_bridge.project import Annotation, ImageEntry, PathClass, ProjectChanged, ProjectError
from slidesam.qupath_bridge.qupath_values import qupath_class_colour, qupath_geometry, qupath_measurement
from slidesam.qupath_bridge.safety import Backups, FileStamp

log = logging.getLogger(__name__)


JVM_OPTIONS = ("-Djna.nosys=false",)
"""Added to paquo's `java_opts` before its JVM starts. QuPath's OpenSlide server reaches libopenslide through
JNA; a QuPath whose JNA jar carries no native dispatch library (a JNA packaged by a Linux distribution, as in
the headless QuPath the tests use) finds it beside its jars only when JNA may load it from the library path.
QuPath's own JNA finds none there and unpacks the one it carries, as without the option."""


def configure_paquo() -> None:
    """Adds `JVM_OPTIONS` to paquo's `java_opts` (in effect when paquo starts its JVM, at the first import of
    `paquo.java`); whoever imports paquo's QuPath modules itself calls this first."""
    import paquo

    configured = paquo.settings.java_opts
    options = shlex.split(configured) if isinstance(configured, str) else list(configured)
    paquo.settings.set("java_opts", [*options, *(o for o in JVM_OPTIONS if o not in options)])


def _import_paquo():
    """paquo's modules; ProjectError when paquo finds no QuPath."""
    try:
        configure_paquo()
        from paquo.classes import QuPathPathClass
        from paquo.images import ImageProvider
        from paquo.pathobjects import QuPathPathAnnotationObject
        from paquo.projects import QuPathProject
    except (ImportError, ValueError, RuntimeError, OSError) as error:
        raise ProjectError(
            f"paquo cannot use QuPath here ({error}); install QuPath and point PAQUO_QUPATH_DIR at it, "
            "or work on a GeoJSON project (`slidesam export` writes one from a QuPath project elsewhere)"
        ) from None
    return QuPathProject, QuPathPathClass, QuPathPathAnnotationObject, ImageProvider


class PaquoProject:
    """The `Project` interface over a QuPath project opened with paquo."""

    def __init__(self, path: Path, *, writable: bool = True):
        QuPathProject, self._PathClass, self._Annotation, self._ImageProvider = _import_paquo()
        path = Path(path)
        self._file = path if path.suffix == ".qpproj" else path / "project.qpproj"
        self.root = self._file.parent
        try:
            self._project = QuPathProject(self._file, mode="r+" if writable else "r")
        except (FileNotFoundError, OSError, ValueError, RuntimeError) as error:
            raise ProjectError(f"paquo cannot open {self._file}: {error}") from None
        self._entries = {entry.image_name: entry for entry in self._project.images}
        saving = sorted(self.root.glob("data/*/data.qpdata.bkp"))
        if saving:
            log.warning("%s: QuPath is saving this project now, or a save crashed (%s); those images will not be written",
                        self._file, ", ".join(str(p) for p in saving))
        self._objects: dict[str, dict[str, object]] = {}
        self._stamps: dict[str, FileStamp] = {}
        self._dirty: set[str] = set()
        self._backups = Backups(self.root)

    # -- reading ----------------------------------------------------------------------------------

    def images(self) -> list[ImageEntry]:
        return [self._image_entry(entry) for entry in self._entries.values()]

    def annotations(self, image: str) -> list[Annotation]:
        result = []
        for annotation_id, obj in self._read(image).items():
            annotation = feature_to_annotation(obj.to_geojson(), f"{image}, annotation {annotation_id}")
            if isinstance(annotation.geometry, shapely.MultiPoint):
                # QuPath's GeoJSON sorts the points (normalized geometry); its PointsROI keeps the click order
                points = obj.java_object.getROI().getAllPoints()
                in_order = shapely.MultiPoint([(float(q.getX()), float(q.getY())) for q in points])
                annotation = dataclasses.replace(annotation, geometry=qupath_geometry(in_order))  # float32 to 2 decimals
            listed = self._class_color(annotation.path_class)
            result.append(dataclasses.replace(annotation, id=annotation_id, class_color=listed or annotation.class_color))
        return result

    def path_classes(self) -> list[PathClass]:
        return [PathClass(pc.id, pc.color.to_rgb() if pc.color else None) for pc in self._project.path_classes]

    def watched_files(self) -> list[Path]:
        return [self._file, *(Path(entry.entry_path) / "data.qpdata" for entry in self._entries.values())]

    # -- changing ---------------------------------------------------------------------------------

    def add_annotation(self, image: str, annotation: Annotation) -> None:
        objects = self._read(image)
        if annotation.id in objects:
            raise ProjectError(f"{image} has an annotation with id {annotation.id} already")
        self._ensure_class_of(annotation)
        obj = self._Annotation.from_geojson(annotation_to_feature(annotation, color=self._class_color(annotation.path_class)))
        self._entries[image].hierarchy.annotations.add(obj)
        objects[annotation.id] = obj
        self._dirty.add(image)

    def update_annotation(self, image: str, annotation: Annotation) -> None:
        obj = self._object(image, annotation.id)
        if annotation.path_class != (obj.path_class.id if obj.path_class else None):
            self._ensure_class_of(annotation)
        obj.update_roi(qupath_geometry(annotation.geometry))
        obj.name = annotation.name
        obj.update_path_class(self._path_class(annotation.path_class) if annotation.path_class else None)
        obj.measurements.clear()
        obj.measurements.update({k: qupath_measurement(v) for k, v in annotation.measurements.items()})
        obj.java_object.setDescription(annotation.description or None)  # paquo's setter takes no None; "" would be kept
        obj.locked = annotation.locked
        self._dirty.add(image)

    def remove_annotation(self, image: str, annotation_id: str) -> None:
        obj = self._object(image, annotation_id)
        self._entries[image].hierarchy.annotations.discard(obj)
        del self._objects[image][annotation_id]
        self._dirty.add(image)

    def ensure_path_class(self, path_class: PathClass) -> None:
        """Adds the class with its colour, or QuPath's colour for it (`PathClass` is a singleton per JVM that keeps
        the colour it was first made with: set it, as QuPath's `DefaultProject.loadPathClasses` does)."""
        existing = list(self._project.path_classes)
        if any(pc.id == path_class.name for pc in existing):
            return
        classes_json = self.root / "classifiers" / "classes.json"
        self._backups.save(classes_json)
        added = self._path_class(path_class.name)
        added.color = path_class.color or qupath_class_colour(path_class.name)
        self._project.path_classes = [*existing, added]

    def save(self) -> list[Path]:
        if not self._dirty:
            return []
        written = []
        for image in sorted(self._dirty):
            entry = self._entries[image]
            data = Path(entry.entry_path) / "data.qpdata"
            if not entry.is_readable():
                raise ProjectError(
                    f"{image}: its slide ({entry.uri}) is not reachable from here, and paquo saves an image's "
                    "data only when it is; nothing was written for it"
                )
            if data.with_name("data.qpdata.bkp").exists():
                raise ProjectChanged(f"{image}: QuPath is saving this image (or a save crashed: {data}.bkp exists); try again")
            self._stamps[image].check_unchanged(data)
            self._backups.save(data)
            written.append(data)
        self._backups.save(self._file)
        self._project.save()
        for image in self._dirty:
            self._stamps[image] = FileStamp.of(Path(self._entries[image].entry_path) / "data.qpdata")
        self._dirty.clear()
        return [*written, self._file]

    def close(self) -> None:
        self._objects.clear()

    # -- internals --------------------------------------------------------------------------------

    def _entry(self, image: str):
        try:
            return self._entries[image]
        except KeyError:
            raise ProjectError(f"no image named {image!r} in {self._file}") from None

    def _read(self, image: str) -> dict[str, object]:
        """The image's annotation objects by UUID, read once (the data.qpdata stamp is taken first)."""
        if image not in self._objects:
            entry = self._entry(image)
            self._stamps[image] = FileStamp.of(Path(entry.entry_path) / "data.qpdata")
            objects = {}
            for index, obj in enumerate(entry.hierarchy.annotations):
                feature = obj.to_geojson()
                objects[feature.get("id") or feature_to_annotation(feature, f"{image}, annotation {index}").id] = obj
            self._objects[image] = objects
        return self._objects[image]

    def _object(self, image: str, annotation_id: str):
        try:
            return self._read(image)[annotation_id]
        except KeyError:
            raise ProjectError(f"{image} has no annotation with id {annotation_id}") from None

    def _path_class(self, name: str):
        """QuPath's singleton class of that name; 'A: B' is the class B derived from A."""
        path_class = None
        for part in name.split(": "):
            path_class = self._PathClass(part, parent=path_class)
        return path_class

    def _ensure_class_of(self, annotation: Annotation) -> None:
        if annotation.path_class:
            self.ensure_path_class(PathClass(annotation.path_class, annotation.class_color))

    def _class_color(self, name: str | None) -> tuple[int, int, int] | None:
        return next((c.color for c in self.path_classes() if c.name == name and c.color), None)

    def _image_entry(self, entry) -> ImageEntry:
        uri = entry.uri
        path: PurePath | None = None
        if uri.startswith("file:"):
            path = self._ImageProvider.path_from_uri(uri)
        try:
            width, height = int(entry.width), int(entry.height)
        except Exception as error:  # noqa: BLE001 - paquo raises Java and Python errors for unreadable images
            log.warning("%s: size unknown (%s)", entry.image_name, error)
            width = height = None
        return ImageEntry(entry.image_name, uri, path, width, height)
