"""Generated wire contract, version 1 (regenerate with scripts/gen_protos)."""
