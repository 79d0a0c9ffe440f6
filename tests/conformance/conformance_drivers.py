"""The conformance protocol: a driver process (Java or Node client) answers one JSON line per request,
and the Python client runs the same steps, so their answers can be compared field by field."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ServerError
from slidesam.qupath_bridge.remote_object import RemoteObject
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, SlideImage, UploadedRegion
from slidesam.qupath_bridge.wire_results import ObjectResult

Outcome = dict | tuple[str, str]
"""A step's result (the compared fields) or its error (status code name, message)."""

COMPARED = (
    "polygons", "score", "area_px", "model_id", "clicks", "step", "can_undo", "can_redo", "downsample",
    "encoder_downsample", "downsampled", "windows",
)


class Driver:
    """A client in another language, driven over its stdin and stdout."""

    def __init__(self, name: str, command: list[str], stderr_path: Path):
        self.name = name
        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True)

    def ask(self, op: str, **fields) -> dict:
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} driver exited ({self.process.poll()}): {self.stderr_path.read_text()[-3000:]}")
        reply = json.loads(line)
        if not reply["ok"] and reply["code"] == "CLIENT_ERROR":
            raise RuntimeError(f"{self.name} client failed on {op}: {reply['message']}")
        return reply

    def step(self, op: str, **fields) -> Outcome:
        reply = self.ask(op, **fields)
        if not reply["ok"]:
            return reply["code"], reply["message"]
        return {key: reply["result"][key] for key in COMPARED}

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._stderr.close()


def python_outcome(result: ObjectResult) -> dict:
    raw = result.raw
    return {
        "polygons": [{"exterior": list(p.exterior.xy), "holes": [list(h.xy) for h in p.holes]} for p in raw.polygons],
        "score": raw.score,
        "area_px": raw.area_px,
        "model_id": raw.model_id,
        "clicks": [[c.x, c.y, c.positive] for c in raw.clicks],
        "step": raw.step,
        "can_undo": raw.can_undo,
        "can_redo": raw.can_redo,
        "downsample": raw.downsample,
        "encoder_downsample": raw.resolution.encoder_downsample if raw.HasField("resolution") else None,
        "downsampled": raw.resolution.downsampled if raw.HasField("resolution") else None,
        "windows": raw.resolution.windows if raw.HasField("resolution") else None,
    }


def python_fov(fov: dict) -> FieldOfView:
    """The driver protocol's field of view as the Python client's."""
    if "slide_id" in fov:
        image = SlideImage(fov["slide_id"])
    else:
        image = UploadedRegion(Path(fov["png"]).read_bytes(), fov["origin_x"], fov["origin_y"], fov["downsample"], fov.get("mpp"))
    resolution = {k: fov[key] for k, key in (("magnification", "magnification"), ("mpp", "mpp_read"), ("downsample", "downsample_read")) if key in fov}
    return FieldOfView(image, *fov["region"], **resolution, windows=fov.get("windows", "auto"), align_to_grid=fov.get("align_to_grid", False))


class PythonSession:
    """The same protocol over the Python client (the reference)."""

    def __init__(self, client: SlidesamClient):
        self.client = client
        self.session: RemoteObject | None = None

    def step(self, op: str, **fields) -> Outcome:
        try:
            return python_outcome(self._run(op, fields))
        except ServerError as error:
            return error.code.name, error.message

    def _run(self, op: str, fields: dict) -> ObjectResult:
        if op == "open":
            self.close()
            self.session = self.client.open_object(python_fov(fields["fov"]), model=fields.get("model", ""), strategy=fields.get("strategy", ""))
            return self.session.result
        if op == "click":
            return self.session.click(fields["x"], fields["y"], fields["positive"])
        if op == "clicks":
            return self.session.add_clicks([Click(x, y, positive) for x, y, positive in fields["clicks"]])
        if op == "box":
            return self.session.box(*fields["box"])
        if op in ("undo", "redo", "reset", "finish"):
            return getattr(self.session, op)()
        raise ValueError(f"unknown op {op}")

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
