"""The fine-tuning study's set: real tissue split by image region, so that train, select and test never
share tissue (lab/evaluation/region_split.py)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from shapely.geometry import box

from slidesam.lab.evaluation.datasets import PatchFolder
from slidesam.lab.evaluation.region_split import ROLES, TILE, block_roles, build_region_split
from slidesam.server.models.checkpoints import default_model_dir

REGION_KEY = {"cmu-x20": "cmu", "cmu-x10": "cmu", "cmu-x5": "cmu"}


@pytest.fixture(scope="module")
def study_set(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("study")
    return out, build_region_split(out, default_model_dir().parent / "samples", {"train": 1, "select": 1, "test": 2})


def _footprints(out: Path) -> list[tuple[str, str, object]]:
    """(role, region key, rectangle in the source's level-0 pixels) of every written sample."""
    rows = []
    for role in ROLES:
        for sidecar in sorted((out / role).glob("*.json")):
            placement = json.loads(sidecar.read_text())
            source = sidecar.stem.rsplit("-", 3)[0]
            (x, y), scale = placement["origin"], placement["downsample"]
            rows.append((role, REGION_KEY.get(source, source), box(x, y, x + TILE * scale, y + TILE * scale)))
    return rows


def test_train_select_and_test_never_share_tissue(study_set):
    out, manifest = study_set
    rows = _footprints(out)
    assert {role for role, _, _ in rows} == set(ROLES)
    for index, (role, key, rect) in enumerate(rows):
        for other_role, other_key, other in rows[index + 1 :]:
            if key == other_key and role != other_role:
                assert rect.intersection(other).area == 0, f"{role} and {other_role} tiles of {key} overlap"
    for name, roles in manifest["roles"].items():
        if len(roles) >= 3:
            assert set(roles.values()) == set(ROLES), f"{name}: every role gets tissue"
    assert manifest["roles"]["cmu-x5"] == manifest["roles"]["cmu-x10"] == manifest["roles"]["cmu-x20"], \
        "the magnifications of one slide share its blocks' roles"


def test_samples_are_real_tissue_with_objects_inside_the_tile(study_set):
    out, manifest = study_set
    for role in ROLES:
        folder = PatchFolder(out / role)
        assert len(folder.names()) == sum(manifest["counts"][role].values())
    nuclei = sorted((out / "test").glob("hgsc-nest-*_mask.png"))
    assert nuclei, "the HGSC nest gives nucleus samples"
    for path in nuclei:
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0
        assert mask.shape == (TILE, TILE) and 80 <= mask.sum() < 0.05 * mask.size
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()), "a whole nucleus, never a cut one"
    cmu = json.loads(next((out / "train").glob("cmu-x10-*.json")).read_text())
    assert cmu["downsample"] == 2.0 and cmu["mpp"] == pytest.approx(0.998)


def test_roles_are_deterministic_and_spread_by_share():
    blocks = [(row, col) for row in range(5) for col in range(4)]
    roles = block_roles("slide", blocks)
    assert roles == block_roles("slide", list(reversed(blocks))), "the order blocks come in changes nothing"
    assert [list(roles.values()).count(role) for role in ROLES] == [12, 4, 4]
    assert block_roles("slide", [(0, 0)]) == {(0, 0): "train"}
    assert sorted(block_roles("slide", [(0, 0), (0, 1)]).values()) == ["test", "train"]
    assert roles != block_roles("another slide", blocks), "each source draws its own blocks"
    assert np.unique(list(roles.values())).size == 3
