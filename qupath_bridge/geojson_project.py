"""A project made of QuPath GeoJSON files: the backend that works without QuPath.

Layout of a GeoJSON project folder:

    slidesam-project.json     the manifest (below)
    <image>.geojson           one FeatureCollection per image, as QuPath exports it
                              (File > Export objects as GeoJSON) and imports it (File > Import objects)
    .slidesam/                backups and pre-annotation state, written by slidesam

The manifest:

    {"format": "slidesam-geojson-project", "version": 1,
     "pathClasses": [{"name": "Tumor", "color": [200, 0, 0]}],
     "images": [{"name": "case1.svs", "uri": "../slides/case1.svs",
                 "width": 4096, "height": 3072, "annotations": "case1.svs.geojson"}]}

`uri` is a path relative to the project folder, an absolute path or a `file:` URI; `width`/`height`
are level-0 pixels (read from the slide when absent); `annotations` defaults to `<name>.geojson`.
A missing annotations file is an image without annotations. Features that are not annotations
(detections, cells, tiles) are kept as they are.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Sequence

from slidesam.atomic_files import atomic_write
from slidesam.qupath_bridge.geojson import (
    annotation_to_feature,
    dumps,
    feature_collection,
    feature_to_annotation,
    is_annotation,
    parse_features,
)
from slidesam.qupath_bridge.project import Annotation, ImageEntry, PathClass, ProjectError
from slidesam.qupath_bridge.qupath_values import qupath_class_colour
from slidesam.qupath_bridge.safety import Backups, FileStamp

MANIFEST = "slidesam-project.json"
FORMAT = "slidesam-geojson-project"


@dataclass
class _ImageFile:
    """One image's annotations file as read: its features, and what it looked like on disk."""

    path: Path
    features: list[dict]
    ids: list[str | None]
    stamp: FileStamp
    original: bytes | None
    dirty: bool = False


@dataclass
class _Manifest:
    images: list[dict]
    classes: list[PathClass]
    stamp: FileStamp
    original: bytes
    dirty: bool = False
    extra: dict = field(default_factory=dict)

    def document(self) -> dict:
        return {
            "format": FORMAT,
            "version": 1,
            **self.extra,
            "pathClasses": _classes_json(self.classes),
            "images": self.images,
        }


class GeoJSONProject:
    """The `Project` interface over a folder of QuPath GeoJSON files and a manifest."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._manifest = _read_manifest(self.root / MANIFEST)
        self._files: dict[str, _ImageFile] = {}
        self._backups = Backups(self.root)

    @classmethod
    def create(cls, root: Path, images: Sequence[ImageEntry], path_classes: Sequence[PathClass] = ()) -> "GeoJSONProject":
        """Writes a new manifest listing the images (an existing one is an error)."""
        root = Path(root)
        manifest = root / MANIFEST
        if manifest.exists():
            raise ProjectError(f"{manifest} exists already")
        names = [image.name for image in images]
        if len(set(names)) != len(names):
            raise ProjectError(f"image names must be unique in a project, got {names}")
        document = {
            "format": FORMAT,
            "version": 1,
            "pathClasses": _classes_json(path_classes),
            "images": [_image_record(image, root) for image in images],
        }
        atomic_write(manifest, dumps(document))
        return cls(root)

    # -- reading ----------------------------------------------------------------------------------

    def images(self) -> list[ImageEntry]:
        return [self._entry(record) for record in self._manifest.images]

    def annotations(self, image: str) -> list[Annotation]:
        file = self._file(image)
        return [
            feature_to_annotation(feature, f"{file.path.name}, feature {index}")
            for index, feature in enumerate(file.features)
            if file.ids[index] is not None
        ]

    def path_classes(self) -> list[PathClass]:
        return list(self._manifest.classes)

    def watched_files(self) -> list[Path]:
        return [self.root / MANIFEST, *(self._annotations_path(record) for record in self._manifest.images)]

    # -- changing ---------------------------------------------------------------------------------

    def add_annotation(self, image: str, annotation: Annotation) -> None:
        file = self._file(image)
        if annotation.id in file.ids:
            raise ProjectError(f"{image} has an annotation with id {annotation.id} already")
        self._ensure_class_of(annotation)
        file.features.append(annotation_to_feature(annotation, color=self._color(annotation.path_class)))
        file.ids.append(annotation.id)
        file.dirty = True

    def update_annotation(self, image: str, annotation: Annotation) -> None:
        file = self._file(image)
        index = self._index(file, image, annotation.id)
        base = file.features[index]
        if annotation.path_class != feature_to_annotation(base, image).path_class:
            self._ensure_class_of(annotation)
        file.features[index] = annotation_to_feature(annotation, color=self._color(annotation.path_class), base=base)
        file.ids[index] = annotation.id
        file.dirty = True

    def remove_annotation(self, image: str, annotation_id: str) -> None:
        file = self._file(image)
        index = self._index(file, image, annotation_id)
        del file.features[index]
        del file.ids[index]
        file.dirty = True

    def ensure_path_class(self, path_class: PathClass) -> None:
        if any(c.name == path_class.name for c in self._manifest.classes):
            return
        color = path_class.color or qupath_class_colour(path_class.name)
        self._manifest.classes.append(PathClass(path_class.name, color))
        self._manifest.dirty = True

    def save(self) -> list[Path]:
        """Writes changed files only (byte-identical content is not rewritten), each backed up first."""
        written = []
        for file in self._files.values():
            if file.dirty and self._write(file):
                written.append(file.path)
            file.dirty = False
        if self._manifest.dirty:
            manifest = self.root / MANIFEST
            data = dumps(self._manifest.document())
            if data != self._manifest.original:
                self._replace(manifest, data, self._manifest.stamp)
                self._manifest.stamp, self._manifest.original = FileStamp.of(manifest), data
                written.append(manifest)
            self._manifest.dirty = False
        return written

    def close(self) -> None:
        self._files.clear()

    # -- internals --------------------------------------------------------------------------------

    def _write(self, file: _ImageFile) -> bool:
        data = dumps(feature_collection(file.features))
        if data == file.original:
            return False
        self._replace(file.path, data, file.stamp)
        file.stamp, file.original = FileStamp.of(file.path), data
        return True

    def _replace(self, path: Path, data: bytes, stamp: FileStamp) -> None:
        stamp.check_unchanged(path)
        self._backups.save(path)
        atomic_write(path, data)

    def _record(self, image: str) -> dict:
        for record in self._manifest.images:
            if record["name"] == image:
                return record
        raise ProjectError(f"no image named {image!r} in {self.root / MANIFEST}")

    def _annotations_path(self, record: dict) -> Path:
        return self.root / record.get("annotations", f"{record['name']}.geojson")

    def _file(self, image: str) -> _ImageFile:
        if image not in self._files:
            path = self._annotations_path(self._record(image))
            stamp = FileStamp.of(path)
            original = path.read_bytes() if stamp.size is not None else None
            features = parse_features(original, str(path)) if original is not None else []
            ids = [
                feature_to_annotation(feature, f"{path.name}, feature {index}").id if is_annotation(feature) else None
                for index, feature in enumerate(features)
            ]
            self._files[image] = _ImageFile(path, features, ids, stamp, original)
        return self._files[image]

    @staticmethod
    def _index(file: _ImageFile, image: str, annotation_id: str) -> int:
        try:
            return file.ids.index(annotation_id)
        except ValueError:
            raise ProjectError(f"{image} has no annotation with id {annotation_id}") from None

    def _ensure_class_of(self, annotation: Annotation) -> None:
        if annotation.path_class:
            self.ensure_path_class(PathClass(annotation.path_class, annotation.class_color))

    def _color(self, class_name: str | None) -> tuple[int, int, int] | None:
        """The class colour from the project's class list, when it lists the class."""
        return next((c.color for c in self._manifest.classes if c.name == class_name and c.color), None)

    def _entry(self, record: dict) -> ImageEntry:
        return ImageEntry(record["name"], record["uri"], uri_to_path(record["uri"], self.root), record.get("width"), record.get("height"))


def uri_to_path(uri: str, root: Path) -> PurePath | None:
    """The local file a project URI names: `file:` URIs, absolute paths, paths relative to `root`."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        return None  # http:, omero:, ... are not local files
    return Path(uri) if Path(uri).is_absolute() else (root / uri).resolve()


def _classes_json(classes: Sequence[PathClass]) -> list[dict]:
    return [{"name": c.name, **({"color": list(c.color)} if c.color else {})} for c in classes]


def _image_record(image: ImageEntry, root: Path) -> dict:
    uri = image.uri
    if image.path is not None and not urllib.parse.urlparse(uri).scheme:
        try:
            uri = Path(image.path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            uri = Path(image.path).resolve().as_posix()
    record = {"name": image.name, "uri": uri}
    if image.width and image.height:
        record.update(width=int(image.width), height=int(image.height))
    record["annotations"] = f"{image.name.replace('/', '_')}.geojson"
    return record


def _read_manifest(path: Path) -> _Manifest:
    try:
        original = path.read_bytes()
    except OSError as error:
        raise ProjectError(f"cannot read the project manifest {path}: {error.strerror}") from None
    try:
        document = json.loads(original)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ProjectError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ProjectError(f'{path} is not a slidesam GeoJSON project manifest (no "format": "{FORMAT}")')
    images = document.get("images")
    if not isinstance(images, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str) and isinstance(r.get("uri"), str) for r in images):
        raise ProjectError(f'{path}: "images" must be a list of objects with a "name" and a "uri"')
    names = [r["name"] for r in images]
    if len(set(names)) != len(names):
        raise ProjectError(f"{path}: image names must be unique, got {names}")
    try:
        classes = [PathClass(c["name"], tuple(c["color"]) if c.get("color") else None) for c in document.get("pathClasses", [])]
    except (KeyError, TypeError, AttributeError):
        raise ProjectError(f'{path}: "pathClasses" must be a list of {{"name", "color": [r, g, b]}}') from None
    extra = {k: v for k, v in document.items() if k not in {"format", "version", "pathClasses", "images"}}
    return _Manifest(images, classes, FileStamp.of(path), original, extra=extra)

