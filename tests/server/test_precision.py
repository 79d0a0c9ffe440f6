"""Encoder precision: bf16/fp16 autocast is named in the model id and really wraps the encoder.

Mask agreement with float32 is measured by scripts/bench_models (a bf16 encode takes about a minute on
these CPUs, which have no bf16 units), not here."""

import numpy as np
import pytest
import torch

from slidesam.server.models.registry import ModelRegistry
from slidesam.server.models.sam import SamModel


class _Stop(Exception):
    pass


def test_a_reduced_precision_is_named_in_the_model_id_so_caches_and_stores_never_mix(model_registry):
    half = ModelRegistry.create(model_registry.model_dir, "cpu", encoder_precision="bfloat16")
    full_id, half_id = model_registry.spec("mobile_sam").model_id, half.spec("mobile_sam").model_id
    assert half_id == full_id + "+bf16" and half.spec("sam_vit_b").model_id.endswith("+bf16")
    assert ModelRegistry.create(model_registry.model_dir, "cpu", encoder_precision="float16").spec("mobile_sam").model_id == full_id + "+fp16"
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        ModelRegistry.create(model_registry.model_dir, "cpu", encoder_precision="int8")


@pytest.mark.parametrize("precision, dtype", [("bfloat16", torch.bfloat16), ("float16", torch.float16), ("float32", None)])
def test_the_encoder_runs_under_autocast_at_the_precision_asked_for(model_registry, precision, dtype):
    """The first encoder stage sees autocast on (and its dtype) exactly when a reduced precision is asked for;
    the encode stops there (a whole bf16 encode is slow on these CPUs)."""
    _, served = model_registry.get("mobile_sam")
    model = SamModel(served.sam, served.device, precision)
    seen = {}

    def look(module, inputs, output):
        device = output.device.type
        seen.update(enabled=torch.is_autocast_enabled(device), dtype=torch.get_autocast_dtype(device), output=output.dtype)
        raise _Stop

    hook = served.sam.image_encoder.patch_embed.register_forward_hook(look)
    try:
        with pytest.raises(_Stop):
            model.encode(np.zeros((64, 64, 3), np.uint8))
    finally:
        hook.remove()
    assert seen["enabled"] == (dtype is not None)
    if dtype is not None:
        assert seen["dtype"] == dtype and seen["output"] == dtype
    else:
        assert seen["output"] == torch.float32
