"""The training scenarios: which parts of SAM (or SAM 2) learn, and the model each one starts from."""

from __future__ import annotations

from segment_anything.modeling import Sam
from torch import nn

from slidesam.lab.training.model_parts import is_sam2_network, module_names
from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig, EnhancedMaskDecoder, load_pretrained_decoder

SCENARIOS = {
    "md": "mask decoder only (the paper's MD)",
    "ie_md": "image encoder + mask decoder (the paper's IE_MD); the prompt encoder stays frozen",
    "whole": "the whole model",
    "enhanced": "the enhanced mask decoder only (global context + deeper transformer), the rest frozen",
}
_TRAINED_PARTS = {"md": ("mask_decoder",), "ie_md": ("image_encoder", "mask_decoder"), "enhanced": ("mask_decoder",)}


def encoder_frozen(scenario: str) -> bool:
    """Frozen encoders let training compute each image embedding once and reuse it."""
    return scenario in ("md", "enhanced")


def with_enhanced_decoder(sam: Sam, config: EnhancedDecoderConfig) -> tuple[list[str], list[str]]:
    """Replaces SAM's decoder by the enhanced one, loading SAM's decoder weights where shapes match."""
    if is_sam2_network(sam):
        raise ValueError("the enhanced decoder extends SAM's mask decoder, not SAM 2's: train SAM 2 with md, ie_md or whole")
    decoder = EnhancedMaskDecoder(config).to(next(sam.parameters()).device)
    loaded, new = load_pretrained_decoder(decoder, sam.mask_decoder.state_dict())
    sam.mask_decoder = decoder
    return loaded, new


def set_trainable(sam: nn.Module, scenario: str) -> int:
    """Freezes everything the scenario does not train; returns the number of trainable parameters."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    names = module_names(sam)
    parts = _TRAINED_PARTS.get(scenario)
    trained = None if parts is None else {names[part] for part in parts}
    for name, parameter in sam.named_parameters():
        parameter.requires_grad = trained is None or name.split(".")[0] in trained
    return sum(p.numel() for p in sam.parameters() if p.requires_grad)
