"""The Java and Node clients send the affinity key a load balancer routes by (metadata `slidesam-affinity`),
computed as the Python client computes it: SHA-256 of 'slide:' + slide id for a slide, the pixels' own
SHA-256 for an upload, on the Interact stream and on the upload. A real gRPC server on loopback records
what each call carries and refuses it (the balancer's routing itself is tested in test_balancer.py)."""

from __future__ import annotations

import hashlib
import threading
from concurrent import futures

import cv2
import grpc
import numpy as np

from slidesam.v1.conventions import AFFINITY_METADATA, affinity_key
from slidesam.lab.local_server import LOOPBACK, free_port

SERVICE = "slidesam.v1.Segmentation"


class RecordingServer:
    """Answers UploadImage and Interact with an error after noting each call's affinity metadata; an
    Interact that opens an uploaded image is answered NOT_FOUND first, so the client uploads."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        port = free_port()
        self.address = f"{LOOPBACK}:{port}"
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "UploadImage": grpc.unary_unary_rpc_method_handler(self._upload),
            "Interact": grpc.stream_stream_rpc_method_handler(self._interact),
        }
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
        self._server.add_insecure_port(self.address)
        self._server.start()

    def _note(self, method: str, context: grpc.ServicerContext) -> None:
        keys = [value for key, value in context.invocation_metadata() if key == AFFINITY_METADATA]
        with self._lock:
            self.seen.append((method, keys[0] if len(keys) == 1 else None))

    def _upload(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._note("UploadImage", context)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "recorded")

    def _interact(self, requests, context: grpc.ServicerContext):
        self._note("Interact", context)
        next(requests, None)
        uploaded = sum(method == "UploadImage" for method, _ in self.seen)
        context.abort(grpc.StatusCode.NOT_FOUND if not uploaded else grpc.StatusCode.FAILED_PRECONDITION, "recorded")
        yield b""

    def stop(self) -> None:
        self._server.stop(0)


def test_the_java_and_node_clients_send_the_image_s_affinity_key(driver, tmp_path):
    server = RecordingServer()
    try:
        driver.ask("connect", address=server.address)
        slide_id = "cases/a b/tumour.svs"
        driver.ask("open", fov={"slide_id": slide_id, "region": [0.0, 0.0, 512.0, 512.0], "magnification": 5}, model="")
        assert server.seen == [("Interact", affinity_key(slide_id=slide_id))], server.seen

        png = tmp_path / "region.png"
        cv2.imwrite(str(png), np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        digest = hashlib.sha256(png.read_bytes()).hexdigest()
        server.seen.clear()
        driver.ask("open", fov={"png": str(png), "origin_x": 0.0, "origin_y": 0.0, "downsample": 1.0,
                                "region": [0.0, 0.0, 64.0, 64.0], "downsample_read": 1.0}, model="")
        assert ("Interact", digest) in server.seen and ("UploadImage", digest) in server.seen, server.seen
        assert all(key == digest for _, key in server.seen)
    finally:
        server.stop()
