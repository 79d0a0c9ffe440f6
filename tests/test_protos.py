"""The committed generated modules are exactly what scripts/gen_protos makes from the .proto files."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("slidesam_pb2.py", "slidesam_pb2.pyi", "slidesam_pb2_grpc.py")


def test_generated_modules_are_up_to_date(tmp_path):
    subprocess.run([str(ROOT / "scripts" / "gen_protos"), str(tmp_path)], check=True, cwd=ROOT)
    for name in GENERATED:
        fresh = (tmp_path / "slidesam" / "v1" / name).read_bytes()
        committed = (ROOT / "proto" / "slidesam" / "v1" / name).read_bytes()
        assert fresh == committed, f"proto/slidesam/v1/{name} is stale: run scripts/gen_protos and commit the result"
