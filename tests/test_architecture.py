"""The walls of the architecture, read from the source's import graph (every import statement,
including those inside functions and under TYPE_CHECKING) and checked at run time:

- no module imports itself through a circle;
- the serving path (slidesam.server, except its command line, which assembles the lab's commands)
  never imports the QuPath side (slidesam.qupath_bridge) or the lab (slidesam.lab);
- the bridge never imports the server, the lab or torch;
- inside the server, no arrow runs back up: models, slides and uploads never import the engine or
  the edge, and the engine never imports the edge;
- no module (scripts included) is longer than about 400 lines, except those listed with the reason
  their one concern needs it;
- the wheel installs one top-level package, `slidesam`, with every package of the tree;
- the README's layout names only files that exist and every package.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"slidesam.server": ROOT / "server", "slidesam.lab": ROOT / "lab",
            "slidesam.qupath_bridge": ROOT / "qupath_bridge", "slidesam": ROOT / "proto" / "slidesam"}
SERVING_PATH_EXCEPTIONS = {"slidesam.server.cli"}  # the composition root of `slidesam-server`
BRIDGE_FORBIDDEN_LIBRARIES = ("torch", "torchvision", "segment_anything", "mobile_sam")
LOWER_SERVER_LAYERS = ("slidesam.server.models", "slidesam.server.slides", "slidesam.server.uploads")
MAX_LINES = 400
LONG_MODULES: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            modules.setdefault(name, path)
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an imported name refers to (a module, or the module holding a name)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> tuple[set[str], set[str]]:
    """(project modules imported, top-level names of other libraries imported) by one module."""
    project, libraries = set(), set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module and not (target == "slidesam" and name != "slidesam"):
                project.add(target)
            elif target is None:
                libraries.add(name.split(".")[0])
    return project, libraries


GRAPH: dict[str, set[str]] = {}
LIBRARIES: dict[str, set[str]] = {}
for _name, _path in MODULES.items():
    GRAPH[_name], LIBRARIES[_name] = _imports(_name, _path)


def _reachable(start: str) -> dict[str, str]:
    """Every module `start` imports directly or indirectly, each with the module that imports it."""
    seen: dict[str, str] = {}
    stack = [start]
    while stack:
        current = stack.pop()
        for target in GRAPH[current]:
            if target not in seen:
                seen[target] = current
                stack.append(target)
    return seen


def _chain(start: str, target: str, parents: dict[str, str]) -> str:
    chain = [target]
    while chain[-1] != start:
        chain.append(parents[chain[-1]])
    return " -> ".join(reversed(chain))


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_is_read():
    assert "slidesam.server.edge.service" in GRAPH and "slidesam.qupath_bridge.cli" in GRAPH
    assert "slidesam.server.engine.engine" in GRAPH["slidesam.server.edge.service"]


def test_no_module_imports_itself_through_a_circle():
    circles = []
    for module in GRAPH:
        parents = _reachable(module)
        if module in parents:
            circles.append(f"{_chain(module, parents[module], parents)} -> {module}" if parents[module] != module else module)
    assert not circles, "import circles:\n" + "\n".join(sorted(circles))


@pytest.mark.parametrize("forbidden", ["slidesam.qupath_bridge", "slidesam.lab"])
def test_the_serving_path_never_imports_the_bridge_or_the_lab(forbidden):
    offences = []
    for module in GRAPH:
        if not _within(module, "slidesam.server") or module in SERVING_PATH_EXCEPTIONS:
            continue
        parents = _reachable(module)
        offences += [_chain(module, target, parents) for target in parents if _within(target, forbidden)]
    assert not offences, "\n".join(sorted(offences)[:20])


def test_the_bridge_never_imports_the_server_the_lab_or_torch():
    offences = []
    for module in GRAPH:
        if not _within(module, "slidesam.qupath_bridge"):
            continue
        parents = _reachable(module)
        offences += [_chain(module, target, parents) for target in parents
                     if _within(target, "slidesam.server") or _within(target, "slidesam.lab")]
        for reached in [module, *parents]:
            offences += [f"{reached} imports {library}" for library in LIBRARIES[reached] & set(BRIDGE_FORBIDDEN_LIBRARIES)]
    assert not offences, "\n".join(sorted(set(offences)))


def test_no_arrow_runs_back_up_inside_the_server():
    offences = []
    for module, targets in GRAPH.items():
        upper: tuple[str, ...] = ()
        if any(_within(module, layer) for layer in LOWER_SERVER_LAYERS):
            upper = ("slidesam.server.engine", "slidesam.server.edge", "slidesam.server.cli")
        elif _within(module, "slidesam.server.engine"):
            upper = ("slidesam.server.edge", "slidesam.server.cli")
        offences += [f"{module} -> {target}" for target in targets if any(_within(target, layer) for layer in upper)]
    assert not offences, "\n".join(sorted(offences))


def test_modules_stay_small_unless_their_one_concern_needs_it():
    files = {name: path for name, path in MODULES.items() if not path.name.endswith(("_pb2.py", "_pb2_grpc.py"))}
    files |= {f"scripts/{path.name}": path for path in (ROOT / "scripts").glob("*.py")}
    long = {name: len(path.read_text().splitlines()) for name, path in files.items()}
    too_long = {name: lines for name, lines in long.items() if lines > MAX_LINES and name not in LONG_MODULES}
    assert not too_long, f"modules over {MAX_LINES} lines without a stated reason: {too_long}"
    stale = [name for name in LONG_MODULES if long.get(name, 0) <= MAX_LINES]
    assert not stale, f"listed as long but no longer are: {stale}"


def _loaded_after_importing(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    import json

    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/").stdout
    return set(json.loads(output))


def test_importing_the_bridge_loads_no_torch_server_or_lab():
    bridge = [name for name in MODULES if _within(name, "slidesam.qupath_bridge")]
    loaded = _loaded_after_importing(bridge)
    bad = {name for name in loaded if name.split(".")[0] in BRIDGE_FORBIDDEN_LIBRARIES
           or _within(name, "slidesam.server") or _within(name, "slidesam.lab")}
    assert not bad, sorted(bad)


def test_importing_the_serving_path_loads_no_bridge_or_lab():
    serving = [name for name in MODULES if _within(name, "slidesam.server") and name not in SERVING_PATH_EXCEPTIONS]
    loaded = _loaded_after_importing(serving)
    bad = {name for name in loaded if _within(name, "slidesam.qupath_bridge") or _within(name, "slidesam.lab")}
    assert not bad, sorted(bad)


def test_no_generic_top_level_name_is_importable_from_outside_the_repository():
    code = "import importlib.util as u; print([n for n in ('server', 'qupath_bridge', 'lab') if u.find_spec(n)])"
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/").stdout
    assert output.strip() == "[]"


def test_the_wheel_installs_one_top_level_package(tmp_path):
    """`pip install .` puts only `slidesam` (and its metadata) into site-packages, every package listed."""
    import shutil
    import zipfile

    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for folder in ("proto", "server", "lab", "qupath_bridge"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = tmp_path.glob("slidesam-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"slidesam"}
    packaged = {name.rpartition("/")[0].replace("/", ".") for name in names if name.endswith("/__init__.py")}
    in_tree = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert packaged == in_tree, f"packages missing from pyproject.toml: {in_tree - packaged}"


def test_the_readme_layout_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("Model weights:")]
    named = set(re.findall(r"([a-z_0-9]+\.py)\b", layout))
    existing = {path.name for folder in ("scripts", "tests") for path in (ROOT / folder).glob("*.py")}
    existing |= {path.name for path in MODULES.values()}
    assert not named - existing, f"the README's layout names files that do not exist: {sorted(named - existing)}"
    packages = {path.parent.relative_to(ROOT).as_posix() for name, path in MODULES.items() if path.name == "__init__.py"}
    unnamed = [package for package in packages if package.rsplit("/", 1)[-1] + "/" not in layout]
    assert not unnamed, f"packages the README's layout does not name: {unnamed}"
