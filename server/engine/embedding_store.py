"""A disk-backed store of grid-window embeddings, with a byte budget and LRU eviction.

One file per window under root/<model>/<image>/<grid key>/c<column>_r<row>.emb, where <model> and
<image> are SHA-256 digests of (model id, checkpoint hash) and of the image's identity. A file is a
magic line, a one-line JSON header that names exactly what it holds, then the raw tensor bytes.
Its bytes depend only on its content (no timestamps), so a resumed precompute rewrites identical
files. Writes go to a temporary file in the same directory and are renamed into place, so a reader
in another process sees a whole file or none. A file that is damaged, or whose header names other
content than the key asked for, is refused with a warning, deleted and reported as absent.
Recency lives in file modification times (touched on every hit), so LRU order survives restarts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from slidesam.atomic_files import atomic_write
from slidesam.server.engine.window_grid import WindowIndex
from slidesam.server.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from slidesam.server.models.served import ImageEmbedding

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"slidesam-embedding\n"
MANIFEST = "store.json"
SUFFIX = ".emb"
_MAX_HEADER_BYTES = 64 * 1024
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_GRID_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TEMPORARY = re.compile(r"\.(?P<name>c\d+_r\d+\.emb)\.(?P<pid>\d+)\.tmp")


@dataclass(frozen=True)
class StoreKey:
    """Names one window's embedding: which weights, which pixels, which grid window, read how."""

    model_id: str
    checkpoint_sha256: str
    image_identity: str
    grid_key: str
    window: WindowIndex
    region: tuple[float, float, float, float]   # level-0 (x, y, width, height) actually read
    downsample: float                           # the grid's downsample (level-0 px per pixel)

    def header(self) -> dict:
        """The fields a file's header must repeat for the file to be served for this key."""
        return {
            "model_id": self.model_id,
            "checkpoint_sha256": self.checkpoint_sha256,
            "image_identity": self.image_identity,
            "grid_key": self.grid_key,
            "window": [self.window.column, self.window.row],
            "region": [float(value) for value in self.region],
            "downsample": float(self.downsample),
        }


@dataclass(frozen=True)
class StoreStats:
    entries: int
    bytes: int
    budget_bytes: int
    evictions: int
    refused: int


class CorruptEntry(Exception):
    """A store file that must not be served; the message says why."""


class EmbeddingStore:
    """Embeddings of grid windows on disk under `root`, at most `budget_bytes` of window files in all.

    Thread-safe. Several processes may share a root (a precompute writing while a server reads):
    files appear and vanish atomically, and each process evicts only the files it knows of (those
    present when it started and those it has read or written since).
    """

    def __init__(self, root: Path, budget_bytes: int) -> None:
        if not isinstance(budget_bytes, int) or budget_bytes <= 0:
            raise InvalidArgument(f"the embedding store budget must be a positive number of bytes, got {budget_bytes!r}")
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        _open_root(self.root)
        self._lock = threading.Lock()
        self._entries: OrderedDict[Path, int] = OrderedDict()  # file -> size, least recently used first
        self._bytes = 0
        self._evictions = self._refused = 0
        self._clock = 0
        self._scan()

    def path(self, key: StoreKey) -> Path:
        """Where the key's file lives."""
        if not _GRID_KEY.fullmatch(key.grid_key):
            raise InvalidArgument(f"grid key {key.grid_key!r} is not a plain name (letters, digits, '.', '_', '-')")
        model = _digest(f"{key.model_id}\0{key.checkpoint_sha256}")
        return self.root / model / _digest(key.image_identity) / key.grid_key / f"c{key.window.column}_r{key.window.row}{SUFFIX}"

    def get(self, key: StoreKey) -> ImageEmbedding | None:
        """The stored embedding (features on the CPU, in the stored dtype), marked most recently used;
        None when absent or refused."""
        path = self.path(key)
        embedding = self._load(path, key)
        if embedding is not None:
            with self._lock:
                self._touch(path)
        return embedding

    def has_file(self, key: StoreKey) -> bool:
        """Whether a file for the key is there, without reading it (a cheap check before planning work)."""
        return self.path(key).is_file()

    def __contains__(self, key: StoreKey) -> bool:
        """Whether a valid file for the key is there (reads and checks it; recency is unchanged)."""
        return self._load(self.path(key), key) is not None

    def put(self, key: StoreKey, embedding: ImageEmbedding) -> None:
        """Writes the embedding atomically, evicting least recently used files to stay within budget;
        one larger than the whole budget is not stored."""
        path = self.path(key)
        data = encode_entry(key, embedding)
        with self._lock:
            self._forget(path, delete=True)
            if len(data) > self.budget_bytes:
                log.warning("not storing %s: %d bytes exceed the whole store budget (%d)", path.name, len(data), self.budget_bytes)
                return
            while self._bytes + len(data) > self.budget_bytes:
                oldest = next(iter(self._entries))
                self._forget(oldest, delete=True)
                self._evictions += 1
            # not atomic_write: a temporary named by its writer's pid lets _scan delete those of dead writers,
            # and a window lost in a crash is only encoded again (no fsync per window)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(temporary, "wb") as file:
                    file.write(data)
                os.replace(temporary, path)
            except BaseException as error:
                temporary.unlink(missing_ok=True)
                if isinstance(error, OSError):
                    raise ResourceExhausted(f"cannot write embedding store file {path}: {error.strerror or error}") from None
                raise
            self._entries[path] = len(data)
            self._bytes += len(data)
            self._touch(path)

    def stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(len(self._entries), self._bytes, self.budget_bytes, self._evictions, self._refused)

    def _load(self, path: Path, key: StoreKey) -> ImageEmbedding | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self._lock:
                self._forget(path, delete=False)
            return None
        try:
            embedding = decode_entry(data, key)
        except CorruptEntry as error:
            log.warning("refusing embedding store file %s: %s; deleted, the window will be encoded again", path, error)
            with self._lock:
                self._refused += 1
                self._forget(path, delete=True)
            return None
        with self._lock:
            if path not in self._entries:  # written by another process since we scanned
                self._entries[path] = len(data)
                self._bytes += len(data)
        return embedding

    def _touch(self, path: Path) -> None:
        """Marks a file most recently used, in memory and in its modification time (lock held)."""
        self._entries.move_to_end(path)
        self._clock = max(time.time_ns(), self._clock + 1)
        try:
            os.utime(path, ns=(self._clock, self._clock))
        except FileNotFoundError:
            self._forget(path, delete=False)
        except PermissionError:  # a store this process may only read: recency stays in memory
            pass

    def _forget(self, path: Path, delete: bool) -> None:
        """Drops a file from the index (lock held), deleting it when asked; it may already be gone."""
        size = self._entries.pop(path, None)
        if size is not None:
            self._bytes -= size
        if delete:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                log.warning("cannot delete embedding store file %s: %s", path, error.strerror)

    def _scan(self) -> None:
        """Indexes the window files under the root, oldest first; removes temporaries of dead writers."""
        found = []
        for path in self.root.glob("*/*/*/*"):
            temporary = _TEMPORARY.fullmatch(path.name)
            if temporary and not _alive(int(temporary["pid"])):
                path.unlink(missing_ok=True)
                continue
            if path.suffix != SUFFIX:
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((stat.st_mtime_ns, str(path), stat.st_size))
        for _, path, size in sorted(found):
            self._entries[Path(path)] = size
            self._bytes += size
        if self._bytes > self.budget_bytes:
            log.info("embedding store %s holds %d bytes, over its budget of %d: evicting the oldest", self.root, self._bytes, self.budget_bytes)
        while self._bytes > self.budget_bytes:
            self._forget(next(iter(self._entries)), delete=True)
            self._evictions += 1


def encode_entry(key: StoreKey, embedding: ImageEmbedding) -> bytes:
    """The exact bytes of a store file: magic line, JSON header line, raw tensor bytes (the features, then
    SAM 2's high-resolution maps, whose shapes the header lists under high_res_shapes)."""
    tensors = [tensor.detach().to("cpu").contiguous() for tensor in embedding.tensors]
    dtype = str(tensors[0].dtype).removeprefix("torch.")
    if dtype not in _DTYPES or any(tensor.dtype != tensors[0].dtype for tensor in tensors):
        raise InvalidArgument(f"the embedding store keeps float32, float16 or bfloat16 features of one dtype, not {dtype}")
    payload = b"".join(tensor.view(torch.uint8).numpy().tobytes() for tensor in tensors)
    header = key.header() | {
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "shape": list(tensors[0].shape),
        "input_size": list(embedding.input_size),
        "original_size": list(embedding.original_size),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    if embedding.high_res:
        header["high_res_shapes"] = [list(tensor.shape) for tensor in tensors[1:]]
    line = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode() + b"\n"
    return MAGIC + line + payload


def decode_entry(data: bytes, key: StoreKey) -> ImageEmbedding:
    """The embedding in a store file's bytes, checked against the key; CorruptEntry says why not."""
    if not data.startswith(MAGIC):
        raise CorruptEntry("it does not start with the store's magic line (not an embedding store file, or damaged)")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER_BYTES)
    if end < 0:
        raise CorruptEntry("its header line is missing or cut off")
    try:
        header = json.loads(data[len(MAGIC):end])
        version = header["format_version"]
        dtype = _DTYPES[header["dtype"]]
        shapes = [[int(n) for n in shape] for shape in [header["shape"], *header.get("high_res_shapes", [])]]
        input_size = tuple(int(n) for n in header["input_size"])
        original_size = tuple(int(n) for n in header["original_size"])
        digest = header["payload_sha256"]
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise CorruptEntry(f"its header is not valid ({type(error).__name__}: {error})") from None
    if any(not shape or min(shape) <= 0 for shape in shapes):
        raise CorruptEntry(f"its header gives an empty shape among {shapes}")
    if version != FORMAT_VERSION:
        raise CorruptEntry(f"it has format version {version!r}, this server reads version {FORMAT_VERSION}")
    wanted = key.header()
    for field, value in wanted.items():
        if header.get(field) != value:
            raise CorruptEntry(f"it holds {field} {header.get(field)!r}, not the {value!r} asked for (a foreign file)")
    payload = data[end + 1:]
    sizes = [math.prod(shape) * dtype.itemsize for shape in shapes]
    expected = sum(sizes)
    if len(payload) != expected:
        raise CorruptEntry(f"its payload is {len(payload)} bytes, its header says {expected} (truncated or padded)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptEntry("its payload does not match the SHA-256 in its header (damaged)")
    raw = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
    tensors = [part.view(dtype).reshape(shape) for part, shape in zip(raw.split(sizes), shapes)]
    return ImageEmbedding(tensors[0], input_size, original_size, tuple(tensors[1:]))


def _open_root(root: Path) -> None:
    """Creates the store at root, or checks that root is a store of this format version."""
    if root.exists() and not root.is_dir():
        raise InvalidArgument(f"embedding store {root} is a file, not a directory")
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            content = json.loads(manifest.read_text())
            version = content["format_version"]
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise FailedPrecondition(f"embedding store {root}: {MANIFEST} cannot be read ({error}); point --store at another directory") from None
        if version != FORMAT_VERSION:
            raise FailedPrecondition(
                f"embedding store {root} has format version {version!r}; this slidesam writes version {FORMAT_VERSION}: "
                "point --store at another directory (or delete that one to rebuild it)"
            )
        return
    if root.is_dir() and any(root.iterdir()):
        raise FailedPrecondition(
            f"{root} is not empty and not an embedding store (no {MANIFEST}); give an empty or new directory"
        )
    try:
        atomic_write(manifest, (json.dumps({"format": "slidesam-embedding-store", "format_version": FORMAT_VERSION}) + "\n").encode())
    except OSError as error:
        raise InvalidArgument(f"cannot create embedding store {root}: {error.strerror or error}") from None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
