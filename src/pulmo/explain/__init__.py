"""Explanations: Grad-CAM heatmaps for the CNNs in the model registry."""
