"""Training-time augmentations."""
