"""Fine-tuning SAM for pathology: the paper's three scenarios and its enhanced mask decoder."""
