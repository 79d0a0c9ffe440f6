"""Builds the Java and Node clients once per session and starts their conformance drivers.

Where the JDK, Debian's Java packages or Node are missing, the tests skip with the reason locally and
fail under CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conformance_drivers import Driver

ROOT = Path(__file__).resolve().parents[2]
JAVA_BUILD = ROOT / "clients" / "java" / "build"
JAVA_TEST_SOURCES = ROOT / "clients" / "java" / "src" / "test" / "java"
NODE_DIR = ROOT / "clients" / "node"
GSON = Path("/usr/share/java/gson.jar")  # Debian's libgoogle-gson-java; the drivers' JSON


def require(available: bool, what: str) -> None:
    if available:
        return
    message = f"{what}; .ci/run installs it (see README, 'QuPath live client')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def client_jar() -> Path:
    """The jar QuPath loads, built by scripts/build_java_client when stale (it needs the JDK, Debian's Java
    packages and a QuPath installation in PAQUO_QUPATH_DIR, whose qupath-core the QuPath part compiles against)."""
    require(shutil.which("javac") is not None and shutil.which("java") is not None, "the JDK (javac, java) is missing")
    build = subprocess.run([str(ROOT / "scripts" / "build_java_client")], capture_output=True, text=True, check=False)
    require(build.returncode != 2, build.stderr.strip())
    assert build.returncode == 0, f"scripts/build_java_client failed:\n{build.stdout}\n{build.stderr}"
    return next(JAVA_BUILD.glob("slidesam-qupath-client-*.jar"))


@pytest.fixture(scope="session")
def qupath_typecheck(qupath_dir) -> Path:
    """`qupath-typecheck`: type-checks a script against QuPath 0.6.0's GUI API (the headless QuPath of ../shared/qupath)."""
    command = qupath_dir / "bin" / "qupath-typecheck"
    require(command.is_file(), f"{command} is missing (the headless QuPath of ../shared/qupath has it)")
    return command


@pytest.fixture(scope="session")
def java_command(client_jar) -> list[str]:
    """`java ... ConformanceDriver` over the jar QuPath loads."""
    require(GSON.is_file(), f"{GSON} (Debian package libgoogle-gson-java) is missing")
    jar = client_jar
    classes = JAVA_BUILD / "test-classes"
    shutil.rmtree(classes, ignore_errors=True)
    sources = [str(p) for p in JAVA_TEST_SOURCES.rglob("*.java")]
    subprocess.run(["javac", "--release", "17", "-encoding", "UTF-8", "-cp", f"{jar}:{GSON}", "-d", str(classes), *sources], check=True)
    return ["java", "-cp", f"{jar}:{GSON}:{classes}", "org.slidesam.conformance.ConformanceDriver"]


@pytest.fixture(scope="session")
def node_command() -> list[str]:
    """`node conformance_driver.js`, with clients/node's packages installed by `npm ci` when stale."""
    require(shutil.which("node") is not None and shutil.which("npm") is not None, "Node.js (node, npm) is missing")
    lock, installed = NODE_DIR / "package-lock.json", NODE_DIR / "node_modules" / ".package-lock.json"
    if not installed.is_file() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR, check=True)
    return ["node", str(NODE_DIR / "conformance_driver.js")]


@pytest.fixture(params=["java", "node"])
def driver(request, tmp_path):
    """A connected-to-nothing driver of the Java or the Node client."""
    command = request.getfixturevalue(f"{request.param}_command")
    started = Driver(request.param, command, tmp_path / f"{request.param}.stderr")
    yield started
    started.close()
