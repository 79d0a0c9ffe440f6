"""The models: the registry of servable checkpoints, SAM and its block-wise encoder, the enhanced decoder."""
