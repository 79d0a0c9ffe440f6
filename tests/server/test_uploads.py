"""The content-addressed store of uploaded images."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from slidesam.server.errors import InvalidArgument, NotFound, ResourceExhausted
from slidesam.server.uploads.decoding import read_header
from slidesam.lab.synthetic.hostile_images import many_scan_jpeg
from slidesam.server.uploads.store import MAX_JPEG_SCANS, UploadStore


def _rgb(rows: int = 40, columns: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(rows, columns, 3), dtype=np.uint8)


def _encode(pixels: np.ndarray, extension: str = ".png", *params: int) -> bytes:
    """Encode pixels given as RGB(A) or grey, the way a client would."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(extension, pixels, list(params))
    assert ok
    return encoded.tobytes()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_png_round_trip() -> None:
    store, pixels = UploadStore(), _rgb()
    data = _encode(pixels)
    image = store.put(data, _sha(data))
    assert image.sha256 == _sha(data) and image.encoded_bytes == len(data)
    np.testing.assert_array_equal(image.pixels, pixels)
    assert not image.pixels.flags.writeable
    assert store.get(_sha(data)) is image and _sha(data) in store
    assert store.total_bytes == pixels.nbytes


def test_jpeg_round_trip_without_a_given_sha() -> None:
    pixels = np.full((64, 64, 3), (200, 120, 180), np.uint8)
    data = _encode(pixels, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95)
    image = UploadStore().put(data, None)
    assert image.pixels.shape == (64, 64, 3)
    assert np.abs(image.pixels.astype(int) - pixels).max() <= 3


def test_a_known_image_is_returned_without_decoding_again(monkeypatch: pytest.MonkeyPatch) -> None:
    store = UploadStore()
    data = _encode(_rgb())
    first = store.put(data, None)
    monkeypatch.setattr(cv2, "imdecode", lambda *_: pytest.fail("decoded again"))
    assert store.put(data, _sha(data).upper()) is first
    assert len(store) == 1


def test_sha_mismatch_is_refused() -> None:
    data = _encode(_rgb())
    with pytest.raises(InvalidArgument, match=f"sha256 mismatch: .* computed {_sha(data)}"):
        UploadStore().put(data, _sha(b"other bytes"))


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "0" * 63, "0" * 65, " " + "0" * 63])
def test_malformed_sha_is_refused(sha: str) -> None:
    store = UploadStore()
    with pytest.raises(InvalidArgument, match="malformed sha256"):
        store.put(_encode(_rgb()), sha)
    with pytest.raises(InvalidArgument, match="malformed sha256"):
        store.get(sha)


@pytest.mark.parametrize(
    "data",
    [
        b"not an image at all",
        _encode(_rgb())[:60],  # a truncated PNG
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        b"\xff\xd8\xff" + b"\x00" * 100,
        b"GIF89a" + b"\x00" * 100,
    ],
)
def test_undecodable_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match=r"could not decode the uploaded image \(PNG or JPEG expected\)"):
        UploadStore().put(data, None)


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="empty"):
        UploadStore().put(b"", None)


def test_grey_becomes_rgb() -> None:
    grey = np.arange(48 * 32, dtype=np.uint16).reshape(48, 32) % 256
    image = UploadStore().put(_encode(grey.astype(np.uint8)), None)
    assert image.pixels.shape == (48, 32, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image.pixels[..., channel], grey)


def test_sixteen_bit_is_reduced_to_eight() -> None:
    grey16 = np.full((8, 8), 0xABCD, np.uint16)
    image = UploadStore().put(_encode(grey16), None)
    assert image.pixels.dtype == np.uint8 and (image.pixels == 0xAB).all()


def test_rgba_is_composited_over_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (100, 50, 0)
    rgba[0, :, 3] = 255  # opaque row
    rgba[1, :, 3] = 0  # transparent row
    rgba[2:, :, 3] = 128
    pixels = UploadStore().put(_encode(rgba), None).pixels
    assert (pixels[0] == (100, 50, 0)).all()
    assert (pixels[1] == 255).all()
    np.testing.assert_allclose(pixels[2].astype(int), [[177, 152, 127]] * 4, atol=1)


def test_tiff_is_accepted() -> None:
    pixels = _rgb(16, 16)
    np.testing.assert_array_equal(UploadStore().put(_encode(pixels, ".tiff"), None).pixels, pixels)


def test_least_recently_used_images_are_evicted_within_max_bytes() -> None:
    size = 40 * 60 * 3
    store = UploadStore(max_bytes=2 * size + size // 2)
    first, second, third = (_encode(_rgb(seed=seed)) for seed in range(3))
    store.put(first, None)
    store.put(second, None)
    store.get(_sha(first))  # first is now the most recent
    store.put(third, None)
    assert _sha(first) in store and _sha(third) in store and _sha(second) not in store
    assert store.total_bytes == 2 * size


def test_an_image_larger_than_the_store_is_refused() -> None:
    with pytest.raises(ResourceExhausted, match="more than this server keeps for uploads"):
        UploadStore(max_bytes=1000).put(_encode(_rgb()), None)


def test_unknown_image_is_not_found() -> None:
    sha = "ab" * 32
    with pytest.raises(NotFound, match=f"image sha256:{sha} is not on this server; upload it first"):
        UploadStore().get(sha)


@pytest.mark.parametrize("extension", [".png", ".jpg"])
def test_too_many_pixels_are_refused_before_decoding(
    extension: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _encode(np.zeros((100, 120, 3), np.uint8), extension)
    monkeypatch.setattr(cv2, "imdecode", lambda *_: pytest.fail("decoded a too large image"))
    with pytest.raises(ResourceExhausted, match="120 x 100 pixels"):
        UploadStore(max_image_pixels=100 * 119).put(data, None)


def test_concurrent_puts_of_one_image_store_it_once() -> None:
    store, data = UploadStore(), _encode(_rgb(200, 200))
    with ThreadPoolExecutor(4) as pool:
        images = list(pool.map(lambda _: store.put(data, None), range(8)))
    assert all(image is images[0] for image in images)
    assert len(store) == 1 and store.total_bytes == 200 * 200 * 3


def test_the_memory_of_a_decode_is_known_from_the_header_and_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = np.full((512, 512, 4), 40000, np.uint16)  # 16-bit RGBA: the decoder holds 2 MiB twice
    data = _encode(deep)
    assert read_header(data).peak_bytes == 2 * 512 * 512 * 8
    monkeypatch.setattr(cv2, "imdecode", lambda *_: pytest.fail("decoded an image over the budget"))
    with pytest.raises(ResourceExhausted, match=r"16 bits per pixel\) needs 4.0 MiB, more than this server decodes at once"):
        UploadStore(decode_budget_bytes=3 * 2**20).put(data, None)


def test_a_jpeg_of_many_scans_is_refused_from_its_header(monkeypatch: pytest.MonkeyPatch) -> None:
    data = many_scan_jpeg(side=256, extra_scans=100)
    assert read_header(data).scans > MAX_JPEG_SCANS
    monkeypatch.setattr(cv2, "imdecode", lambda *_: pytest.fail("decoded a JPEG of too many scans"))
    with pytest.raises(InvalidArgument, match="progressive scans"):
        UploadStore().put(data, None)


def test_an_ordinary_progressive_jpeg_is_accepted() -> None:
    pixels = np.full((64, 64, 3), (200, 120, 180), np.uint8)
    data = _encode(pixels, ".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert 1 < read_header(data).scans <= MAX_JPEG_SCANS
    assert np.abs(UploadStore().put(data, None).pixels.astype(int) - pixels).max() <= 3


def test_decodes_running_at_once_stay_within_the_budget() -> None:
    store = UploadStore(decode_budget_bytes=10 * 2**20)
    with store.decoding.reserve(9 * 2**20):
        with pytest.raises(ResourceExhausted, match="retry in a moment") as refused:
            store.put(_encode(_rgb(600, 600)), None)  # needs 2 x 1 MiB
        assert refused.value.retry_after_s
    assert store.decoding.in_use == 0
    assert store.put(_encode(_rgb(600, 600)), None).pixels.shape == (600, 600, 3)


def test_one_users_uploads_do_not_evict_anothers() -> None:
    size = 40 * 60 * 3
    store = UploadStore(max_bytes=4 * size)
    victim = _encode(_rgb(seed=99))
    store.put(victim, None, user="bob")
    for seed in range(8):
        store.put(_encode(_rgb(seed=seed)), None, user="mallory")
    assert _sha(victim) in store and store.held_by() == {"bob": size, "mallory": 3 * size}


def test_a_header_that_lies_about_the_size_is_refused() -> None:
    data = bytearray(_encode(_rgb(16, 16)))
    data[16:24] = (32).to_bytes(4, "big") + (32).to_bytes(4, "big")  # IHDR now claims 32 x 32 (its CRC breaks)
    with pytest.raises(InvalidArgument):
        UploadStore().put(bytes(data), None)
