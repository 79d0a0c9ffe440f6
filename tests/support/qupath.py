"""QuPath for the tests: the installation paquo and `qupath-groovy` use, and running Groovy on it.

The installation is `$PAQUO_QUPATH_DIR` (`.ci/run` sets it from `../shared/qupath/setup`; a user points it
at their own QuPath). Without one, tests that need QuPath skip with the reason, and fail under CI (CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

QUPATH_ENV = "PAQUO_QUPATH_DIR"
READER = Path(__file__).with_name("read_with_qupath.groovy")
CLASSPATH_CONFIG = Path(__file__).with_name("groovy_classpath.groovy")
SETUP_HINT = f"export {QUPATH_ENV}=\"$(../shared/qupath/setup | tail -n 1)\" (or point it at your QuPath 0.6 installation)"


def find_qupath() -> tuple[Path | None, str]:
    """The QuPath installation, or None and why there is none."""
    configured = os.environ.get(QUPATH_ENV)
    if not configured:
        return None, f"no QuPath installation: {QUPATH_ENV} is not set; {SETUP_HINT}"
    folder = Path(configured)
    if not (folder / "lib" / "app").is_dir():
        return None, f"{QUPATH_ENV}={configured} is not a QuPath installation (no lib/app); {SETUP_HINT}"
    return folder, ""


def require_qupath() -> Path:
    """The QuPath installation; skips the test without one (fails it under CI)."""
    folder, reason = find_qupath()
    if folder is None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


def groovy_environment() -> dict[str, str]:
    """The environment qupath-groovy runs in: JAVA_TOOL_OPTIONS carries the JVM options the bridge gives paquo
    (`paquo_project.JVM_OPTIONS`, without which the headless QuPath's OpenSlide server cannot open a slide)."""
    from slidesam.qupath_bridge.paquo_project import JVM_OPTIONS

    options = " ".join([os.environ.get("JAVA_TOOL_OPTIONS", ""), *JVM_OPTIONS]).strip()
    return {**os.environ, "JAVA_TOOL_OPTIONS": options}


def run_groovy(qupath_dir: Path, script: Path | str, *args: str | Path, timeout: float = 300, check: bool = True,
               cwd: Path | None = None, classpath: Path | None = None) -> subprocess.CompletedProcess:
    """`$PAQUO_QUPATH_DIR/bin/qupath-groovy SCRIPT ARGS...` (Groovy on QuPath's classes, plus `classpath`,
    e.g. the client jar; in `groovy_environment`); with `check`, a non-zero exit fails the test showing the script's stdout and stderr."""
    extra = [f"-Dslidesam.groovy.classpath={classpath}", "--configscript", str(CLASSPATH_CONFIG)] if classpath else []
    command = [str(qupath_dir / "bin" / "qupath-groovy"), *extra, str(script), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=groovy_environment(), check=False)
    if check and done.returncode != 0:
        pytest.fail(f"qupath-groovy {Path(script).name} exited with {done.returncode}\n"
                    f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-8000:]}", pytrace=False)
    return done


def read_with_qupath(qupath_dir: Path, *files: Path | str, open_images: bool = False) -> dict[str, dict]:
    """What QuPath reads from each file (by str(file)), in one JVM (`read_with_qupath.groovy`): GeoJSON through
    `PathIO.readObjects` ({"objects": [...]}), projects through `ProjectIO.loadProject` ({"pathClasses",
    "images": [{"name", "uris", "objects", "server"?}]}), or {"error": ...} for a file QuPath rejects.
    Each object: type, id, name, pathClass, classColor, color, locked, description, metadata,
    measurements, roi, wkt, points (a points ROI's own list, in order), parts, holes, children. A "class:NAME" argument gives {"color": [r, g, b]}, the
    colour QuPath creates the class NAME with."""
    done = run_groovy(qupath_dir, READER, *(["--open-images"] if open_images else []), *files)
    last = done.stdout.strip().splitlines()[-1]
    return json.loads(last)
