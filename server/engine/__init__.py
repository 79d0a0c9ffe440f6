"""The engine: prompts in, masks and polygons out; one object's history, the embedding cache, the model scheduler, and objects larger than one encoder window."""
