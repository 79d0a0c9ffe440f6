"""Small generated slides for the bridge tests: inside the test server's slide root (read by slide
id) and outside it (read here and uploaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

SIZE = (4096, 3072)
LEVELS = (1, 4)


def _slide(path: Path, center: tuple[float, float], radii: tuple[float, float], seed: int):
    from slidesam.lab.synthetic.slide_writer import write_synthetic_slide

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_synthetic_slide(path, *SIZE, levels=LEVELS, object_center=center, object_radii=radii, seed=seed)


@pytest.fixture(scope="session")
def served_slide(slide_root):
    """A slide the test server reads itself: slide id `bridge/served.svs`."""
    return _slide(slide_root / "bridge" / "served.svs", (2000.0, 1500.0), (500.0, 350.0), seed=11)


@pytest.fixture(scope="session")
def local_slide(tmp_path_factory):
    """A slide outside the server's slide root: its regions are read here and uploaded."""
    return _slide(tmp_path_factory.mktemp("local-slides") / "local.svs", (2300.0, 1400.0), (450.0, 380.0), seed=12)


@pytest.fixture(scope="session")
def batch_slides(slide_root):
    """Five slides under the slide root (`batch/`), one object each at different places."""
    centers = [(1500.0, 1200.0), (2600.0, 1800.0), (2000.0, 1000.0), (1200.0, 2000.0), (3000.0, 1500.0)]
    return [_slide(slide_root / "batch" / f"case-{i}.svs", c, (420.0 + 20 * i, 330.0), seed=20 + i) for i, c in enumerate(centers)]
