"""Every bridge command explains itself."""

from __future__ import annotations

import pytest
from bridge_helpers import run_cli


@pytest.mark.parametrize("command, mentions", [
    ("init", "slidesam-project.json"),
    ("sync", "--watch"),
    ("preannotate", "tissue-boxes | grid | geojson FILE"),
    ("export", "--geojson"),
    ("import", "--replace"),
    ("refine", "--again"),
    ("export-training", "--accepted-class"),
])
def test_help(command, mentions, capsys):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0 and out.startswith("usage: slidesam") and mentions in out
