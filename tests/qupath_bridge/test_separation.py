"""The bridge side installs without torch: it must never import torch or the server package."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BRIDGE = Path(__file__).resolve().parents[2] / "qupath_bridge"
FORBIDDEN = ("torch", "server", "segment_anything", "mobile_sam")


def test_no_forbidden_import_in_the_source():
    for path in BRIDGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_importing_the_bridge_loads_no_torch():
    code = (
        "import sys, pkgutil, importlib, qupath_bridge\n"
        "for module in pkgutil.iter_modules(qupath_bridge.__path__):\n"
        "    importlib.import_module(f'qupath_bridge.{module.name}')\n"
        "bad = [m for m in ('torch', 'server', 'segment_anything') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
